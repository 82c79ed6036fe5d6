"""Accuracy cost of ``pixlm.inference.optimize`` precisions: the judge's score on the dev prompts, per precision.

    python benchmarks/fast_accuracy.py --variant reference     # one precision per call (each a few minutes)
    python benchmarks/fast_accuracy.py --variant auto          # what load_pipeline() / pixlm generate run
    python benchmarks/fast_accuracy.py --summarize             # <out>.{json,md} from what has run

Every precision generates the same prompts with the same seeds (``pixlm.eval.report.run_eval`` on the bundled
model) through the same MaskGIT loop, so the images pair up: the summary gives each precision's accuracy with
its 95% interval and the paired difference against ``reference`` (plain float32: mean of ok_precision −
ok_reference over the same image slots, ±1.96 standard errors), plus the share of image tokens identical to
the reference's at the same seed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

REFERENCE = "reference"
VARIANTS = ("reference", "auto", "fp32", "bf16", "int8")  # pixlm.inference.PRECISIONS, the reference first


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def run_variant(name: str, out: Path, images_per_prompt: int, threads: int, seed: int,
                model: str | None = None) -> dict:
    """Evaluate one setting; writes ``out/<slug>/report.json`` and the tokens of a fixed probe batch."""
    from pixlm.eval.report import run_eval
    from pixlm.pipelines.text_to_image import load_pipeline

    torch.set_num_threads(threads)
    pipe = load_pipeline(model, precision=name)
    report = run_eval(model=model, prompts=None, images_per_prompt=images_per_prompt, out=str(out / slug(name)),
                      pipeline=pipe, seed=seed)
    probe = [r["prompt"] for r in report["images"][:: images_per_prompt]][:32]
    tokens = pipe.generate(probe, seed=seed).tokens
    torch.save(tokens, out / slug(name) / "probe_tokens.pt")
    (out / slug(name) / "precision.json").write_text(json.dumps(pipe.inference_settings) + "\n")
    return report


def summarize(out: Path) -> dict:
    """Combine the per-precision reports into ``<out>.json`` / ``.md`` with paired differences vs the reference."""
    rows: dict[str, dict] = {}
    ref = out / slug(REFERENCE) / "report.json"
    if not ref.is_file():
        raise SystemExit(f"{ref} is missing: run --variant {REFERENCE} first")
    ref_oks = [im["ok"] for im in json.loads(ref.read_text())["images"]]
    ref_tokens = torch.load(out / slug(REFERENCE) / "probe_tokens.pt")
    for name in VARIANTS:
        path = out / slug(name) / "report.json"
        if not path.is_file():
            continue
        rep = json.loads(path.read_text())
        oks = [im["ok"] for im in rep["images"]]
        if len(oks) != len(ref_oks):
            raise SystemExit(f"{name}: {len(oks)} images vs the reference's {len(ref_oks)}; rerun with the same settings")
        d = [float(a) - float(b) for a, b in zip(oks, ref_oks)]
        mean = sum(d) / len(d)
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1))
        tokens = torch.load(out / slug(name) / "probe_tokens.pt")
        settings = out / slug(name) / "precision.json"
        rows[name] = {"precision": json.loads(settings.read_text())["precision"] if settings.is_file() else name,
                      "accuracy": rep["overall"], "ci95": rep["overall_ci95"], "n_images": rep["n_images"],
                      "fid": rep.get("fid"), "paired_diff_vs_reference": mean,
                      "paired_diff_ci95": [mean - 1.96 * sd / math.sqrt(len(d)), mean + 1.96 * sd / math.sqrt(len(d))],
                      "same_verdict_as_reference": sum(a == b for a, b in zip(oks, ref_oks)) / len(oks),
                      "probe_tokens_identical_to_reference": float((tokens == ref_tokens).float().mean()),
                      "images_per_s": rep.get("timings", {}).get("images_per_s")}
    result = {"model": json.loads(ref.read_text()).get("model"), "prompts": "dev set (300 specs)", "variants": rows}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Accuracy cost of pixlm.inference precisions (bundled model, dev prompts, judge)", "",
             "Same prompts, seeds and MaskGIT loop for every precision. Paired difference = mean over image slots "
             "of (ok with precision − ok with reference float32), ±1.96 SE. Probe tokens: 32 images at one seed, "
             "share of tokens identical to the reference's.", "",
             "| precision | accuracy | 95% CI | paired diff vs reference | 95% CI | same verdict | probe tokens = "
             "reference | FID |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        fid = f"{r['fid']:.2f}" if isinstance(r["fid"], (int, float)) else "–"
        label = name if r["precision"] == name else f"{name} ({r['precision']})"
        lines.append(f"| {label} | {r['accuracy']:.3f} | {r['ci95'][0]:.3f}–{r['ci95'][1]:.3f} | "
                     f"{r['paired_diff_vs_reference']:+.3f} | {r['paired_diff_ci95'][0]:+.3f}…"
                     f"{r['paired_diff_ci95'][1]:+.3f} | {r['same_verdict_as_reference']:.1%} | "
                     f"{r['probe_tokens_identical_to_reference']:.1%} | {fid} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", choices=VARIANTS, help="a precision (auto = the default path on this machine)")
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument("--images-per-prompt", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/precision_accuracy")
    ap.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    a = ap.parse_args()
    out = Path(a.out)
    if a.variant:
        rep = run_variant(a.variant, out, a.images_per_prompt, a.threads, a.seed, a.model)
        print(f"{a.variant}: accuracy {rep['overall']:.3f} {rep['overall_ci95']} over {rep['n_images']} images",
              file=sys.stderr)
    if a.summarize:
        summarize(out)
    if not a.variant and not a.summarize:
        ap.error("pass --variant NAME and/or --summarize")


if __name__ == "__main__":
    main()
