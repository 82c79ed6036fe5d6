"""Best-of-N reranking: accuracy on the dev prompts against N = 1, at equal total time.

    python benchmarks/rerank.py [--model DIR] [--configs 1x8,1x32,4x2,4x8] [--images-per-prompt 1] [--out ...]

A config ``NxS`` draws N candidates per image with S decoding steps and keeps the best by
``pixlm.pipelines.rerank.score_candidate`` (geometric reading + the model's detailed caption); 1xS is plain generation.
Every image is scored by the shipped evaluation judge (``eval.judge``, learned + geometric), which is *not* what
the reranker uses. Time is wall time per output image, reranking included, so "equal total time" pairs are
read off the table: 4x2 costs about what 1x8 does (same number of generator forwards), 1x32 about what 4x8 does.
Writes ``rerank.json``. Not a test: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompts", default=None, help="spec JSONL (default: the shipped dev set)")
    ap.add_argument("--configs", default="1x8,4x2,1x32,4x8")
    ap.add_argument("--images-per-prompt", type=int, default=1)
    ap.add_argument("--no-captioner", action="store_true", help="rerank with the geometric reading only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-prompts", type=int, default=25)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from pixlm.data.shapes import satisfies
    from pixlm.data.specs import load_specs
    from pixlm.eval.judge import default_judge
    from pixlm.eval.score import summarize
    from pixlm.pipelines.common import bundled_model_path
    from pixlm.pipelines.text_to_image import load_pipeline
    from pixlm.pipelines.rerank import generate_reranked

    pipe = load_pipeline(a.model)
    rows = load_specs(a.prompts)
    judge = default_judge()
    result: dict = {"model": str(a.model or bundled_model_path()), "n_prompts": len(rows),
                    "images_per_prompt": a.images_per_prompt, "captioner_used": pipe.has_captioner() and
                    not a.no_captioner, "torch_threads": torch.get_num_threads(), "configs": {}}
    for cfg in a.configs.split(","):
        n, steps = (int(x) for x in cfg.lower().split("x"))
        images, cats, specs = [], [], []
        t0 = time.perf_counter()
        for b, start in enumerate(range(0, len(rows), a.batch_prompts)):
            chunk = rows[start:start + a.batch_prompts]
            prompts = [r["prompt"] for r in chunk]
            if n == 1:
                out = pipe.generate(prompts, num_images_per_prompt=a.images_per_prompt, num_inference_steps=steps,
                                    seed=a.seed + b)
            else:
                out = generate_reranked(pipe, prompts, n, a.images_per_prompt, seed=a.seed + b,
                                        use_captioner=not a.no_captioner, num_inference_steps=steps)
            images += out.images
            for r in chunk:
                cats += [r["category"]] * a.images_per_prompt
                specs += [r["spec"]] * a.images_per_prompt
        secs = time.perf_counter() - t0
        found = [r.objects for r in judge.read_many(images)]
        summary = summarize([satisfies(f, s) for f, s in zip(found, specs)], cats)
        result["configs"][cfg] = {"candidates": n, "steps": steps, "s_per_image": secs / len(images),
                                  "accuracy": summary["overall"], "ci95": summary["overall_ci95"],
                                  "per_category": {k: v["accuracy"] for k, v in summary["categories"].items()}}
        print(f"{cfg}: accuracy {summary['overall']:.3f} {[round(x, 3) for x in summary['overall_ci95']]} "
              f"{secs / len(images) * 1e3:.0f} ms/image")
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rerank.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
