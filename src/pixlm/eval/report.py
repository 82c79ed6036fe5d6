"""``pixlm eval``: generate (or load) images for prompt specs, judge them, score them, write a report.

Outputs in ``out``:

* ``report.json`` — ``{"overall", "overall_ci95", "categories": {name: {"accuracy", "ci95", "n"}}, "fid",
  "distribution": {...}, "judge": {...}, "images": [{"file_name", "ok", "found", "prompt", "category"}], ...}``
* ``report.md`` — the same numbers as tables;
* ``failures.png`` — failed images, each with its prompt (black) and what the judge found (red) under it;
* ``images/`` (generation mode) — the generated PNGs plus ``metadata.jsonl``, re-scorable with ``--images``.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixlm.data.batch import flatten_alpha
from pixlm.data.jsonl import read_objects
from pixlm.data.specs import SpecError, load_specs, validate_spec
from pixlm.eval.fid import distribution_metrics, reference_images
from pixlm.eval.judge import DEFAULT_JUDGE_DIR, Judge
from pixlm.eval.score import summarize, verdicts, wilson_interval

METADATA = "metadata.jsonl"
MAX_FAILURES_SHOWN = 48


# ---------------------------------------------------------------------------------------------- inputs
def load_prompt_rows(prompts: str | Path | None) -> list[dict]:
    """Spec rows from one JSONL file, or several joined by commas ("dev.jsonl,paraphrase.jsonl").

    ``None`` means the shipped dev set.
    """
    if prompts is None:
        return load_specs(None)
    rows: list[dict] = []
    for part in str(prompts).split(","):
        if part.strip():
            rows.extend(load_specs(part.strip()))
    if not rows:
        raise ValueError(f"prompts={prompts!r} names no spec file")
    return rows


def load_image_folder(images_dir: str | Path, specs: bool = True) -> tuple[list[dict], list[Image.Image]]:
    """Rows and images of a folder whose ``metadata.jsonl`` rows are prompt-spec rows plus ``file_name``.

    A row's prompt may be given as ``prompt`` or ``text``; a missing ``category`` becomes "uncategorized".
    With ``specs=False`` rows need only ``file_name`` and the prompt, and come back as ``{"file_name", "prompt"}``.
    Errors name the file and line.
    """
    root = Path(images_dir)
    meta = root / METADATA
    if not root.is_dir():
        raise ValueError(f"images folder {root} does not exist or is not a directory")
    if not meta.is_file():
        raise ValueError(f"images folder {root} has no {METADATA} (rows: prompt-spec rows plus 'file_name')")
    rows, images = [], []
    for _, where, rec in read_objects(meta):
        name = rec.get("file_name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: missing 'file_name' (got {name!r})")
        prompt = rec.get("prompt", rec.get("text"))
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: missing prompt: 'prompt' (or 'text') must be a string, got {prompt!r}")
        if specs and "spec" not in rec:
            raise ValueError(f"{where}: missing 'spec' (what the image must show; see pixlm.data.specs)")
        try:
            spec = validate_spec(rec["spec"]) if specs else None
        except SpecError as e:
            raise ValueError(f"{where}: {e}") from None
        path = root / name
        if not path.is_file():
            raise ValueError(f"{where}: image file {path} does not exist")
        try:
            with Image.open(path) as im:
                images.append(flatten_alpha(im))  # transparent pixels on white, as in training folders
        except OSError as e:
            raise ValueError(f"{where}: cannot read image {path}: {e}") from None
        row = {"file_name": name, "prompt": prompt}
        if specs:
            row.update(category=str(rec.get("category") or "uncategorized"), spec=spec)
        rows.append(row)
    if not rows:
        raise ValueError(f"{meta} lists no images")
    return rows, images


def generate_images(pipeline: Any, rows: Sequence[dict], images_per_prompt: int, seed: int,
                    steps: int | None, guidance: float | None, out: Path, batch_prompts: int = 16,
                    ) -> tuple[list[dict], list[Image.Image], dict]:
    """Generate ``images_per_prompt`` images per row with ``pipeline`` and save them under ``out/images``.

    Batch ``b`` uses seed ``seed + b``, so a run is reproducible. Returns per-image rows, images and timings.
    """
    kwargs: dict[str, Any] = {"num_images_per_prompt": images_per_prompt}
    if steps is not None:
        kwargs["num_inference_steps"] = steps
    if guidance is not None:
        kwargs["guidance_scale"] = guidance
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    image_rows: list[dict] = []
    images: list[Image.Image] = []
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, len(rows), batch_prompts)):
        chunk = rows[start:start + batch_prompts]
        got = pipeline([r["prompt"] for r in chunk], seed=seed + b, **kwargs)
        if len(got) != len(chunk) * images_per_prompt:
            raise RuntimeError(f"pipeline returned {len(got)} images for {len(chunk)} prompts × {images_per_prompt}")
        for k, im in enumerate(got):
            r = chunk[k // images_per_prompt]
            name = f"{len(images):05d}.png"
            im.convert("RGB").save(img_dir / name)
            image_rows.append({"file_name": name, "prompt": r["prompt"], "category": r["category"], "spec": r["spec"]})
            images.append(im.convert("RGB"))
    secs = time.perf_counter() - t0
    with open(img_dir / METADATA, "w", encoding="utf-8") as f:
        for r in image_rows:  # "text" too, so the folder is also a plain captioned imagefolder
            f.write(json.dumps({**r, "text": r["prompt"]}) + "\n")
    return image_rows, images, {"generate_s": secs, "images_per_s": len(images) / max(secs, 1e-9)}


def decoder_ceiling(pipeline: Any, references: Sequence[Image.Image], specs: Sequence[dict],
                    judge: Judge) -> dict | None:
    """Score true renders after a round trip through the pipeline's image tokenizer (``pipeline.vq``).

    A generator that wrote perfect tokens would score about this: what is left is lost by the tokenizer or
    misread by the judge. None when the pipeline has no ``vq`` with ``encode``/``decode``.
    """
    vq = getattr(pipeline, "vq", None)
    if vq is None or not (hasattr(vq, "encode") and hasattr(vq, "decode")):
        return None
    import torch

    from pixlm.eval.judge import images_to_batch

    recon: list[Image.Image] = []
    with torch.no_grad():
        for i in range(0, len(references), 64):
            x = images_to_batch(references[i:i + 64]).to(getattr(pipeline, "device", "cpu"))  # vq may be a runtime session
            y = ((vq.decode(vq.encode(x)).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu()
            recon.extend(Image.fromarray(a) for a in y.numpy())
    oks = verdicts([r.objects for r in judge.read_many(recon)], specs)
    k = sum(oks)
    return {"accuracy": k / len(oks), "ci95": list(wilson_interval(k, len(oks))), "n": len(oks)}


# ---------------------------------------------------------------------------------------------- outputs
def describe(objects: Sequence[dict]) -> str:
    """Short text for found objects: "large red circle (0,1), small blue square (2,2)"."""
    if not objects:
        return "nothing"
    return ", ".join(f"{o['size']} {o['color']} {o['shape']} ({o['row']},{o['col']})" for o in objects)


def label_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def failure_grid(images: Sequence[Image.Image], prompts: Sequence[str], found: Sequence[str], path: Path,
                 cols: int = 6, scale: int = 2) -> Path:
    """Save failed images in a grid, each with its prompt and the judge's reading written under it."""
    tile, text_h, pad = 64 * scale, 100, 6
    font = label_font(11)
    if not images:
        canvas = Image.new("RGB", (360, 60), "white")
        ImageDraw.Draw(canvas).text((10, 20), "no failures: every image satisfied its prompt", fill="black", font=font)
        canvas.save(path)
        return path
    cols = min(cols, len(images))
    rows = (len(images) + cols - 1) // cols
    w = tile + 2 * pad + 40
    canvas = Image.new("RGB", (cols * w, rows * (tile + text_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (im, prompt, got) in enumerate(zip(images, prompts, found)):
        r, c = divmod(i, cols)
        x, y = c * w + pad, r * (tile + text_h + pad) + pad
        canvas.paste(im.convert("RGB").resize((tile, tile), Image.NEAREST), (x + 20, y))
        draw.rectangle([x + 19, y - 1, x + 20 + tile, y + tile], outline=(180, 180, 180))
        ty = y + tile + 3
        for line in textwrap.wrap(prompt, 27)[:3]:
            draw.text((x, ty), line, fill=(0, 0, 0), font=font)
            ty += 13
        for line in textwrap.wrap("found: " + got, 30)[:4]:
            draw.text((x, ty), line, fill=(200, 0, 0), font=font)
            ty += 13
    canvas.save(path)
    return path


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def write_markdown(report: dict, path: Path) -> Path:
    """Human-readable ``report.md`` from the report dict."""
    lines = ["# pixlm eval report", ""]
    src = report.get("images_dir") or f"model `{report.get('model') or 'bundled'}`"
    lines += [f"Images: {report['n_images']} from {src}; prompts: `{report.get('prompts')}`; "
              f"judge: {report['judge']['mode']} (geometric + learned).", ""]
    overall = (f"**Overall: {_pct(report['overall'])}** (95% CI {_pct(report['overall_ci95'][0])}–"
               f"{_pct(report['overall_ci95'][1])}, over all images)")
    if "overall_macro" in report:
        lo, hi = report["overall_macro_ci95"]
        overall += f"; mean over categories {_pct(report['overall_macro'])} ({_pct(lo)}–{_pct(hi)})"
    lines.append(overall + ".")
    lines += ["", "| category | accuracy | 95% CI (Wilson) | n |", "|---|---|---|---|"]
    for name, c in report["categories"].items():
        lines.append(f"| {name} | {_pct(c['accuracy'])} | {_pct(c['ci95'][0])}–{_pct(c['ci95'][1])} | {c['n']} |")
    ceil = report.get("decoder_ceiling")
    if ceil:
        lines += ["", f"Decoder ceiling: true renders passed through this model's tokenizer score "
                      f"{_pct(ceil['accuracy'])} ({_pct(ceil['ci95'][0])}–{_pct(ceil['ci95'][1])}, n = {ceil['n']}); "
                      "a generator that wrote perfect tokens would score about this."]
    d = report.get("distribution") or {}
    lines += ["", "## Distribution distance", ""]
    if report.get("fid") is None:
        lines.append(f"Not computed: {d.get('skipped', 'fewer than 2 images')}.")
    else:
        lines.append(f"- FID (shapes features): **{report['fid']:.3f}**; floor from two independent real sets of the "
                     f"same prompts: {d.get('fid_floor', float('nan')):.3f} (n = {d['n']}, {d['feature_dim']}-d)")
        if "precision" in d:
            lines.append(f"- k-NN (k = {d['k']}): precision {d['precision']:.3f}, recall {d['recall']:.3f}, "
                         f"density {d['density']:.3f}, coverage {d['coverage']:.3f}")
        lines.append(f"- Features: {d['feature']}. {d['note']}")
    j = report["judge"]
    lines += ["", "## Judge", "",
              f"- geometric and learned readers agree on {_pct(j['agreement'])} of these images; "
              f"{_pct(j['low_confidence'])} have a cell read with probability < 0.5."]
    held = j.get("heldout")
    if held:
        parts = [f"{name} {_pct(held[name]['combined'])}" for name in ("clean", "degraded", "degraded_strong")
                 if name in held]
        lines.append(f"- held-out exact-scene accuracy of the judge (n = {held['n']} renders each): "
                     + ", ".join(parts) + ".")
    t = report.get("timings", {})
    if t:
        lines += ["", "## Timings", ""] + [f"- {k}: {v:.3f}" for k, v in t.items()]
    lines += ["", f"Failures: {report['n_failures']} (first {MAX_FAILURES_SHOWN} in `failures.png`).", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- main entry
def run_eval(model: str | None, prompts: str | None, images_per_prompt: int, out: str,
             images_dir: str | None = None, seed: int = 0, steps: int | None = None, guidance: float | None = None,
             judge_path: str | None = None, pipeline: Any = None) -> dict:
    """Judge images for prompt specs and write ``report.json``, ``report.md`` and ``failures.png`` to ``out``.

    With ``images_dir`` the images (and their specs) come from that folder's ``metadata.jsonl`` and no model
    runs; otherwise ``images_per_prompt`` images per row of ``prompts`` are generated by the pipeline at
    ``model`` (None: the bundled model), or by ``pipeline`` when one is passed in. ``prompts`` may name
    several spec files joined by commas; None means the shipped dev set.
    """
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt={images_per_prompt} must be >= 1")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if images_dir is not None:
        rows, images = load_image_folder(images_dir)
    else:
        spec_rows = load_prompt_rows(prompts)
        if pipeline is None:
            from pixlm.pipelines.text_to_image import load_pipeline

            pipeline = load_pipeline(model)
        rows, images, timings = generate_images(pipeline, spec_rows, images_per_prompt, seed, steps, guidance,
                                                out_dir)
    judge = Judge.load(judge_path)
    t0 = time.perf_counter()
    readings = judge.read_many(images)
    timings["judge_ms_per_image"] = 1000 * (time.perf_counter() - t0) / len(images)
    found = [r.objects for r in readings]
    oks = verdicts(found, [r["spec"] for r in rows])
    summary = summarize(oks, [r["category"] for r in rows])

    t0 = time.perf_counter()
    specs = [r["spec"] for r in rows]
    refs = reference_images(specs, seed=seed + 1_000_003)
    if len(images) >= 2:
        gen_f = judge.embed(images)
        ref_f = judge.embed(refs)
        ref2_f = judge.embed(reference_images(specs, seed=seed + 2_000_006))
        dist = distribution_metrics(gen_f, ref_f, ref2_f)
    else:
        dist = {"skipped": f"{len(images)} image(s); a Fréchet distance needs at least 2"}
    timings["distribution_s"] = time.perf_counter() - t0
    ceiling = decoder_ceiling(pipeline, refs, specs, judge) if images_dir is None else None

    judge_dir = Path(judge_path) if judge_path else DEFAULT_JUDGE_DIR
    metrics_file = judge_dir / "metrics.json"
    heldout = json.loads(metrics_file.read_text()).get("heldout") if metrics_file.is_file() else None
    report: dict = {
        **summary,
        "fid": dist.get("fid"),
        "distribution": dist,
        "decoder_ceiling": ceiling,
        "judge": {
            "mode": judge.mode, "weights": str(judge_dir),
            "agreement": float(np.mean([r.agree for r in readings])),
            "low_confidence": float(np.mean([r.confidence < 0.5 for r in readings])),
            "heldout": heldout,
        },
        "model": None if images_dir is not None else (model or "bundled"),
        "images_dir": str(images_dir) if images_dir is not None else None,
        "prompts": None if images_dir is not None else (prompts or "dev set"),
        "images_per_prompt": None if images_dir is not None else images_per_prompt,
        "seed": seed, "steps": steps, "guidance": guidance,
        "n_images": len(images),
        "n_failures": int(sum(not ok for ok in oks)),
        "timings": timings,
        "images": [
            {"file_name": r["file_name"], "ok": ok, "found": f, "prompt": r["prompt"], "category": r["category"],
             "judges_agree": rd.agree}
            for r, ok, f, rd in zip(rows, oks, found, readings)
        ],
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, out_dir / "report.md")
    fails = [i for i, ok in enumerate(oks) if not ok][:MAX_FAILURES_SHOWN]
    failure_grid([images[i] for i in fails], [rows[i]["prompt"] for i in fails], [describe(found[i]) for i in fails],
                 out_dir / "failures.png")
    return report
