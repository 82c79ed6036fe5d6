"""Accuracy cost of ``pixlm.fast.optimize`` settings: the judge's score on the dev prompts, per setting.

    python benchmarks/fast_accuracy.py --variant fp32          # one setting per call (each a few minutes)
    python benchmarks/fast_accuracy.py --variant int8
    python benchmarks/fast_accuracy.py --summarize             # fast_accuracy.{json,md} from what has run

Every setting generates the same prompts with the same seeds (``pixlm.eval.report.run_eval`` on the bundled
model), so the images pair up: the summary gives each setting's accuracy with its 95% interval and the
paired difference against fp32 (mean of ok_setting − ok_fp32 over the same image slots, ±1.96 standard
errors), plus the share of image tokens identical to fp32's at the same seed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

VARIANTS = {  # name → optimize() flags
    "fp32": {},
    "int8": {"int8": True},
    "int8 head-fp32": {"int8": True, "int8_skip": ("head",)},
    "bf16": {"bf16": True},  # packed (pixlm.packed) where oneDNN supports bf16, else autocast
    "bf16 autocast": {"bf16": True, "packed": False},
    "bf16 fixed-loop": {"bf16": True, "fixed_loop": True, "channels_last": True},
    "fixed-loop": {"fixed_loop": True},
    "int8+bf16 fixed-loop": {"int8": True, "bf16": True, "fixed_loop": True, "channels_last": True},
    # CPUs without bf16 arithmetic: the packed network in float32 (what --fast picks there)
    "fp32 packed": {"packed": True},
    "fp32 packed fixed-loop": {"packed": True, "fixed_loop": True, "channels_last": True},
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def run_variant(name: str, out: Path, images_per_prompt: int, threads: int, seed: int,
                model: str | None = None) -> dict:
    """Evaluate one setting; writes ``out/<slug>/report.json`` and the tokens of a fixed probe batch."""
    from pixlm.eval.report import run_eval
    from pixlm.fast import optimize
    from pixlm.pipelines.text_to_image import load_pipeline

    pipe = optimize(load_pipeline(model), threads=threads, **VARIANTS[name])
    report = run_eval(model=model, prompts=None, images_per_prompt=images_per_prompt, out=str(out / slug(name)),
                      pipeline=pipe, seed=seed)
    probe = [r["prompt"] for r in report["images"][:: images_per_prompt]][:32]
    tokens = pipe.generate(probe, seed=seed).tokens
    torch.save(tokens, out / slug(name) / "probe_tokens.pt")
    return report


def summarize(out: Path) -> dict:
    """Combine the per-setting reports into ``fast_accuracy.json`` / ``.md`` with paired differences vs fp32."""
    rows: dict[str, dict] = {}
    ref = out / slug("fp32") / "report.json"
    if not ref.is_file():
        raise SystemExit(f"{ref} is missing: run --variant fp32 first")
    ref_oks = [im["ok"] for im in json.loads(ref.read_text())["images"]]
    ref_tokens = torch.load(out / slug("fp32") / "probe_tokens.pt")
    for name in VARIANTS:
        path = out / slug(name) / "report.json"
        if not path.is_file():
            continue
        rep = json.loads(path.read_text())
        oks = [im["ok"] for im in rep["images"]]
        if len(oks) != len(ref_oks):
            raise SystemExit(f"{name}: {len(oks)} images vs fp32's {len(ref_oks)}; rerun with the same settings")
        d = [float(a) - float(b) for a, b in zip(oks, ref_oks)]
        mean = sum(d) / len(d)
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1))
        tokens = torch.load(out / slug(name) / "probe_tokens.pt")
        rows[name] = {"flags": {k: list(v) if isinstance(v, tuple) else v for k, v in VARIANTS[name].items()},
                      "accuracy": rep["overall"], "ci95": rep["overall_ci95"], "n_images": rep["n_images"],
                      "fid": rep.get("fid"), "paired_diff_vs_fp32": mean,
                      "paired_diff_ci95": [mean - 1.96 * sd / math.sqrt(len(d)), mean + 1.96 * sd / math.sqrt(len(d))],
                      "same_verdict_as_fp32": sum(a == b for a, b in zip(oks, ref_oks)) / len(oks),
                      "probe_tokens_identical_to_fp32": float((tokens == ref_tokens).float().mean()),
                      "images_per_s": rep.get("timings", {}).get("images_per_s")}
    result = {"model": json.loads(ref.read_text()).get("model"), "prompts": "dev set (300 specs)", "variants": rows}
    (out.parent / "fast_accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Accuracy cost of pixlm.fast settings (bundled model, dev prompts, judge)", "",
             "Same prompts and seeds for every setting. Paired difference = mean over image slots of "
             "(ok with setting − ok with fp32), ±1.96 SE. Probe tokens: 32 images at one seed, share of tokens "
             "identical to fp32's (the fixed loop draws different random numbers by design).", "",
             "| setting | accuracy | 95% CI | paired diff vs fp32 | 95% CI | same verdict | probe tokens = fp32 | FID |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        fid = f"{r['fid']:.2f}" if isinstance(r["fid"], (int, float)) else "–"
        lines.append(f"| {name} | {r['accuracy']:.3f} | {r['ci95'][0]:.3f}–{r['ci95'][1]:.3f} | "
                     f"{r['paired_diff_vs_fp32']:+.3f} | {r['paired_diff_ci95'][0]:+.3f}…{r['paired_diff_ci95'][1]:+.3f}"
                     f" | {r['same_verdict_as_fp32']:.1%} | {r['probe_tokens_identical_to_fp32']:.1%} | {fid} |")
    (out.parent / "fast_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", choices=sorted(VARIANTS))
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument("--images-per-prompt", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/fast_accuracy")
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
