"""Does a generated emoji look like the emoji it was asked for? A nearest-neighbour recognition check.

Each generated picture comes with the emoji name it was drawn from and, usually, a style ("cat face, twemoji
style" → name "cat face", style "twemoji"). Every real picture of that style in an emoji dataset (written by
``pixlm data emoji``; by default all three splits, so *all* emoji of the style are candidates) is ranked by its
distance to the generated picture on a simple image feature. The picture is **recognised at k** when a real
picture whose name is exactly the prompt's name is among the k nearest (skin-tone variants have names of their
own: "thumbs up, dark skin tone"). A prompt without a style word is ranked against the pictures of every style,
since such a prompt may draw any of them.

The feature (:func:`image_feature`) is a blurred thumbnail: the picture laid on white, brought to 64×64, blurred
with a Gaussian of radius 2 px, box-averaged down to 16×16 RGB and scaled to [0, 1] (768 numbers); distance is
Euclidean. The blur and the averaging make it indifferent to transparency (the same picture with alpha or already
on white), to the size it is given at (a 128-px copy of a 64-px picture) and to one-pixel shifts and single-pixel
noise, while colour and the rough layout of shapes decide. It knows nothing of what the picture shows, so two
emoji that are drawn alike (the clock faces, the flags, the skin tones of one gesture) are hard to tell apart: a
hit at 5 is a fair bar, a hit at 1 a strict one.

Functions here need no model: :func:`load_reference` reads the real pictures, :func:`score` ranks pictures,
:func:`summarize` counts hits, :func:`sample_prompts` draws seeded (name, style) prompts from a split and
:func:`write_nearest_report` writes ``report.json``, ``report.md`` and ``sheet.png``. ``run_nearest_eval`` (behind
``pixlm eval --emoji-data``) generates with a pipeline or loads an image folder and does all of it.
"""

from __future__ import annotations

import json
import random
import re
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pixlm.data.batch import flatten_alpha
from pixlm.data.emoji import SPLITS
from pixlm.data.emoji_styles import STYLES
from pixlm.data.folder import METADATA, ImageFolder
from pixlm.eval.report import label_font, load_image_folder
from pixlm.eval.score import category_scores, wilson_interval

CANVAS = 64  # pictures are brought to this size before blurring, so the blur is the same fraction of any picture
BLUR_RADIUS = 2.0  # Gaussian radius in pixels at CANVAS size
THUMB = 16  # feature side: THUMB × THUMB × 3 numbers
FEATURE = (f"picture on white at {CANVAS}x{CANVAS}, Gaussian blur radius {BLUR_RADIUS:g} px, box-averaged to "
           f"{THUMB}x{THUMB} RGB in [0, 1] ({THUMB * THUMB * 3} numbers); Euclidean distance")
TOP_K = (1, 5)
_STYLE_SUFFIX = re.compile(r"^(?P<name>.*),\s*(?P<style>[a-z]+) style$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- feature
def image_feature(img: Image.Image) -> np.ndarray:
    """The blurred-thumbnail feature of one picture (see the module docstring): float32 (THUMB·THUMB·3,)."""
    rgb = flatten_alpha(img)
    if rgb.size != (CANVAS, CANVAS):
        rgb = rgb.resize((CANVAS, CANVAS), Image.BICUBIC)
    small = rgb.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)).resize((THUMB, THUMB), Image.BOX)
    return (np.asarray(small, dtype=np.float32) / 255.0).reshape(-1)


def image_features(images: Sequence[Image.Image]) -> np.ndarray:
    """Features of several pictures: float32 (N, THUMB·THUMB·3)."""
    if not images:
        return np.zeros((0, THUMB * THUMB * 3), np.float32)
    return np.stack([image_feature(im) for im in images])


# ---------------------------------------------------------------------------------------------- prompts
def parse_prompt(prompt: str) -> tuple[str, str | None]:
    """``"cat face, twemoji style"`` → ``("cat face", "twemoji")``; a prompt without a style word → (prompt, None).

    The style is the last clause, ", WORD style", as in the training captions; WORD must be one of the emoji styles
    (``pixlm.data.emoji_styles.STYLES``): "NAME, blue style" is an error naming it, since it would otherwise be
    scored as part of the name. Spaces are collapsed; case is kept in the name ("keycap: A").
    """
    text = " ".join(prompt.split())
    if not text:
        raise ValueError(f"prompt={prompt!r} is empty: expected 'NAME' or 'NAME, STYLE style'")
    m = _STYLE_SUFFIX.match(text)
    if m is None:
        return text, None
    style = m.group("style").lower()
    if style not in STYLES:
        raise ValueError(f"prompt={prompt!r} names style {style!r}; styles are {tuple(STYLES)}")
    name = m.group("name").strip()
    if not name:
        raise ValueError(f"prompt={prompt!r} has a style but no emoji name")
    return name, style


def make_prompt(name: str, style: str | None) -> str:
    """The prompt for an emoji name in a style, as in the training captions: "cat face, noto style"."""
    return f"{name}, {style} style" if style else name


# ---------------------------------------------------------------------------------------------- reference
@dataclass
class Reference:
    """The real pictures to rank against: one row per picture, in dataset order."""

    features: np.ndarray  # (N, D) float32
    names: list[str]  # the picture's name: its first caption
    styles: list[str]
    splits: list[str]
    paths: list[Path]
    root: Path

    def __len__(self) -> int:
        return len(self.names)

    def style_counts(self) -> dict[str, int]:
        return {s: self.styles.count(s) for s in STYLES if s in self.styles}

    def image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as im:
            return flatten_alpha(im)


def _check_style_list(styles: Sequence[str] | None, known: Sequence[str], what: str) -> list[str] | None:
    if styles is None:
        return None
    bad = [s for s in styles if s not in known]
    if bad or not styles:
        raise ValueError(f"{what}={list(styles)!r}: each must be one of {list(known)} (at least one)")
    return list(dict.fromkeys(styles))


def load_reference(data: str | Path, splits: Sequence[str] | None = None,
                   styles: Sequence[str] | None = None) -> Reference:
    """Every distinct picture of ``splits`` of the emoji dataset at ``data`` (of ``styles``; None: all).

    ``splits=None`` takes every split the dataset has pictures in (a small build may have no ``test_variant``).
    A picture's name is its first caption row; its style is the folder it lies in (``SPLIT/STYLE/HEXCODE.png``,
    the layout ``pixlm data emoji`` writes).
    """
    root = Path(data)
    if not root.is_dir():
        raise ValueError(f"emoji data folder {root} does not exist (build one with `pixlm data emoji`)")
    if splits is None:
        splits = [s for s in SPLITS if (root / s / METADATA).is_file() and (root / s / METADATA).stat().st_size]
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"splits={list(splits)!r}: each must be one of {list(SPLITS)} (at least one)")
    keep = _check_style_list(styles, list(STYLES), "styles")
    feats: list[np.ndarray] = []
    names, kinds, where, paths = [], [], [], []
    for split in dict.fromkeys(splits):
        folder = ImageFolder(root / split)
        for group in folder.pictures():
            row = folder.rows[group[0]]
            style = Path(row.file_name).parts[0]
            if style not in STYLES:
                raise ValueError(f"{folder.root / METADATA}:{row.line}: file_name {row.file_name!r} is not in a "
                                 f"style folder (STYLE/FILE.png, STYLE one of {tuple(STYLES)})")
            if keep is not None and style not in keep:
                continue
            feats.append(image_feature(folder.load_image(group[0])))
            names.append(row.text)
            kinds.append(style)
            where.append(split)
            paths.append(row.path)
    if not names:
        raise ValueError(f"emoji data {root} has no pictures of styles {keep} in splits {list(splits)}")
    return Reference(np.stack(feats), names, kinds, where, paths, root)


# ---------------------------------------------------------------------------------------------- scoring
def rank_one(ref: Reference, feature: np.ndarray, name: str, style: str | None, keep: int = 5) -> dict:
    """Rank ``ref``'s pictures of ``style`` (None: all styles) by distance to ``feature``.

    Returns ``{"rank": 1-based rank of the nearest picture named ``name`` (None when the style has none),
    "candidates": pictures ranked, "nearest": the ``keep`` nearest as reference indices}``.
    """
    if style is not None and style not in ref.styles:
        raise ValueError(f"style={style!r} has no pictures in the reference; it has {list(ref.style_counts())}")
    idx = np.arange(len(ref)) if style is None else np.flatnonzero(np.asarray(ref.styles) == style)
    dist = ((ref.features[idx] - feature[None, :]) ** 2).sum(1)
    order = idx[np.argsort(dist, kind="stable")]
    hits = [r for r, i in enumerate(order) if ref.names[i] == name]
    return {"rank": hits[0] + 1 if hits else None, "candidates": len(order),
            "nearest": [int(i) for i in order[:keep]], "right": int(order[hits[0]]) if hits else None}


def score(ref: Reference, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[dict]:
    """Per picture: its prompt, name, style, the rank of its emoji among the real pictures, and the nearest names."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    out = []
    for img, prompt in zip(images, prompts):
        name, style = parse_prompt(prompt)
        r = rank_one(ref, image_feature(img), name, style)
        out.append({"prompt": prompt, "name": name, "style": style, **r,
                    "nearest_names": [ref.names[i] for i in r["nearest"]]})
    return out


def summarize(items: Sequence[dict], ks: Sequence[int] = TOP_K) -> dict:
    """``{"n", "top1", "top1_ci95", "top5", ..., "unknown_names", "per_style": {style: {...}}}`` from ranked items.

    A picture whose name is not in the reference counts as a miss; ``unknown_names`` says how many there were.
    Prompts without a style are grouped as "any". Intervals are 95% Wilson intervals.
    """
    if not items:
        raise ValueError("no pictures to summarize")
    groups = [it["style"] or "any" for it in items]
    out: dict[str, Any] = {"n": len(items), "unknown_names": sum(it["rank"] is None for it in items)}
    per_style: dict[str, dict] = {g: {} for g in sorted(set(groups))}
    for k in ks:
        oks = [it["rank"] is not None and it["rank"] <= k for it in items]
        hits = sum(oks)
        out[f"top{k}"] = hits / len(items)
        out[f"top{k}_ci95"] = list(wilson_interval(hits, len(items)))
        for g, c in category_scores(oks, groups).items():
            per_style[g].update({"n": c["n"], f"top{k}": c["accuracy"], f"top{k}_ci95": c["ci95"]})
    ranks = [it["rank"] for it in items if it["rank"] is not None]
    out["median_rank"] = float(np.median(ranks)) if ranks else None
    out["per_style"] = per_style
    return out


def sample_prompts(ref: Reference, split: str, n: int, styles: Sequence[str] | None, seed: int) -> list[str]:
    """``n`` prompts "NAME, STYLE style" drawn without replacement (seeded) from the pictures of ``split`` in
    ``styles`` (None: every style of the reference); fewer when the split has fewer pictures."""
    if n < 1:
        raise ValueError(f"n={n} prompts must be at least 1")
    if split not in ref.splits:
        raise ValueError(f"split={split!r} is not in the reference (it holds {sorted(set(ref.splits))})")
    keep = _check_style_list(styles, list(ref.style_counts()), "styles")
    pool = sorted({(ref.names[i], ref.styles[i]) for i in range(len(ref))
                   if ref.splits[i] == split and (keep is None or ref.styles[i] in keep)})
    if not pool:
        raise ValueError(f"split {split!r} has no pictures of styles {keep}")
    picked = random.Random(seed).sample(pool, min(n, len(pool)))
    return [make_prompt(name, style) for name, style in picked]


# ---------------------------------------------------------------------------------------------- outputs
def contact_sheet(ref: Reference, images: Sequence[Image.Image], items: Sequence[dict], path: Path,
                  per_kind: int = 6, scale: int = 2) -> Path:
    """Hits then misses at 5, one row each: the picture, its 3 nearest real pictures, and the right one on a miss."""
    hits = [i for i, it in enumerate(items) if it["rank"] is not None and it["rank"] <= 5][:per_kind]
    misses = [i for i, it in enumerate(items) if it["rank"] is None or it["rank"] > 5][:per_kind]
    tile, label_w, pad = CANVAS * scale, 230, 4
    rows = hits + misses
    font = label_font(11)
    canvas = Image.new("RGB", (label_w + 5 * (tile + pad), max(1, len(rows)) * (tile + pad) + 20), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w, 4), "generated | 3 nearest real pictures | the right emoji (on a miss)", fill="black", font=font)
    for r, i in enumerate(rows):
        it, y = items[i], 20 + r * (tile + pad)
        shown = [images[i]] + [ref.image(j) for j in it["nearest"][:3]]
        if it["right"] is not None and it["rank"] > 5:
            shown.append(ref.image(it["right"]))
        for c, im in enumerate(shown):
            canvas.paste(im.convert("RGB").resize((tile, tile), Image.NEAREST), (label_w + c * (tile + pad), y))
        verdict = ("HIT", (0, 120, 0)) if i in hits else ("MISS", (200, 0, 0))
        text = [(f"{verdict[0]} rank {it['rank'] or 'n/a'}/{it['candidates']}", verdict[1])]
        text += [(line, (0, 0, 0)) for line in textwrap.wrap(it["prompt"], 34)[:3]]
        text += [(line, (90, 90, 90)) for line in textwrap.wrap("nearest: " + "; ".join(it["nearest_names"][:3]),
                                                                 36)[:3]]
        for k, (line, colour) in enumerate(text):
            draw.text((4, y + 2 + 13 * k), line, fill=colour, font=font)
    canvas.save(path)
    return path


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def write_nearest_markdown(report: dict, path: Path) -> Path:
    """``report.md``: top-1/top-5 overall and per style, with the reference and the feature."""
    s = report["summary"]
    src = report.get("images_dir") or f"model `{report['model']}` (seed {report['seed']})"
    ref = report["reference"]
    lines = ["# pixlm eval: nearest-neighbour recognition of emoji", "",
             f"{s['n']} pictures from {src}, ranked against {sum(ref['pictures'].values())} real pictures of "
             f"`{ref['data']}` (splits {', '.join(ref['splits'])}; "
             + ", ".join(f"{k} {v}" for k, v in ref["pictures"].items()) + ").", "",
             f"Feature: {ref['feature']}. A hit at k: a real picture with exactly the prompt's name, in the prompt's "
             "style (every style when the prompt names none), is among the k nearest.", "",
             "| style | n | top-1 (95% CI) | top-5 (95% CI) |", "|---|---:|---:|---:|"]
    for name, c in [("all", s), *s["per_style"].items()]:
        lines.append(f"| {name} | {c['n']} | {_pct(c['top1'])} ({_pct(c['top1_ci95'][0])}–{_pct(c['top1_ci95'][1])}) "
                     f"| {_pct(c['top5'])} ({_pct(c['top5_ci95'][0])}–{_pct(c['top5_ci95'][1])}) |")
    if s["unknown_names"]:
        lines += ["", f"{s['unknown_names']} pictures have a name that no reference picture of their style has "
                      "(counted as misses)."]
    if report.get("sampling"):
        lines += ["", f"Prompts: {report['sampling']}."]
    lines += ["", "`sheet.png`: hits and misses with their nearest real pictures.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_nearest_report(report: dict, ref: Reference, images: Sequence[Image.Image], items: Sequence[dict],
                         out: Path) -> dict:
    """Write ``report.json`` (``report`` plus one row per picture), ``report.md`` and ``sheet.png`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in it.items() if k not in ("nearest", "right")}
            | {"nearest_files": [str(ref.paths[j].relative_to(ref.root)) for j in it["nearest"]]} for it in items]
    report = {**report, "images": rows}
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_nearest_markdown(report, out / "report.md")
    contact_sheet(ref, images, items, out / "sheet.png")
    return report


# ---------------------------------------------------------------------------------------------- main entry
def generate_pictures(pipeline: Any, prompts: Sequence[str], seed: int, options: dict, out: Path,
                      batch: int = 32) -> list[Image.Image]:
    """One picture per prompt, prompt ``i`` with seed ``seed + i`` (whatever the batch size); saved to
    ``out/images`` with a ``metadata.jsonl`` that ``--images`` can score again."""
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch):
        images += [im.convert("RGB") for im in pipeline(list(prompts[start:start + batch]), seed=seed + start,
                                                          **options)]
    with open(img_dir / METADATA, "w", encoding="utf-8") as f:
        for i, (im, prompt) in enumerate(zip(images, prompts)):
            im.save(img_dir / f"{i:05d}.png")
            f.write(json.dumps({"file_name": f"{i:05d}.png", "text": prompt, "prompt": prompt},
                               ensure_ascii=False) + "\n")
    return images


def run_nearest_eval(data: str | Path, out: str | Path, pipeline: Any = None, model: str | None = None,
                     images_dir: str | Path | None = None, n: int = 200, split: str = "train",
                     styles: Sequence[str] | None = None, reference_splits: Sequence[str] | None = None,
                     seed: int = 0,
                     options: dict | None = None) -> dict:
    """Recognition of emoji pictures by nearest neighbour; writes the report to ``out`` and returns it.

    With ``images_dir`` the pictures and their prompts come from that folder (``metadata.jsonl`` rows with
    ``file_name`` and ``prompt`` or ``text``); otherwise ``n`` prompts are sampled from ``split`` (seeded) in
    ``styles`` and ``pipeline`` draws one picture each; without a ``pipeline`` the one at ``model`` (a folder or
    a bundled name; None: ``emoji``) is loaded once the data and the prompts have been checked.
    """
    t0 = time.perf_counter()
    ref = load_reference(data, reference_splits, styles if images_dir is None else None)
    timings = {"reference_s": time.perf_counter() - t0}
    out_dir = Path(out)
    sampling = None
    if images_dir is not None:
        rows, images = load_image_folder(images_dir, specs=False)
        prompts = [r["prompt"] for r in rows]
        files = [r["file_name"] for r in rows]
    else:
        prompts = sample_prompts(ref, split, n, styles, seed)
        if pipeline is None:
            from pixlm.pipelines.text_to_image import load_pipeline

            pipeline = load_pipeline(model or "emoji")
        sampling = (f"{len(prompts)} (name, style) pairs drawn at random (seed {seed}) from the {split} pictures of "
                    f"{'styles ' + ', '.join(styles) if styles else 'every style'}; picture i drawn with seed {seed} + i")
        t0 = time.perf_counter()
        images = generate_pictures(pipeline, prompts, seed, options or {}, out_dir)
        timings["generate_s"] = time.perf_counter() - t0
        files = [f"{i:05d}.png" for i in range(len(images))]
    t0 = time.perf_counter()
    items = score(ref, images, prompts)
    timings["score_s"] = time.perf_counter() - t0
    report = {"mode": "emoji-nearest", "summary": summarize(items),
              "reference": {"data": str(ref.root), "splits": sorted(set(ref.splits), key=SPLITS.index),
                            "pictures": ref.style_counts(), "feature": FEATURE},
              "model": None if images_dir is not None else (model or "emoji"),
              "images_dir": str(images_dir) if images_dir is not None else None,
              "seed": seed, "options": options or {}, "sampling": sampling, "timings": timings}
    items = [{"file_name": f, **it} for f, it in zip(files, items)]
    return write_nearest_report(report, ref, images, items, out_dir)
