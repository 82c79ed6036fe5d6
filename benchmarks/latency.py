"""End-to-end text→image latency at batch 1 (text encoding included), and throughput at larger batches.

    python benchmarks/latency.py [--model DIR] [--steps K] [--repeats 30] [--out benchmarks/results]

Every timed call uses a prompt the text cache has not seen ("cold"), unless --warm-cache; the median of
``--repeats`` calls after warm-up is reported. Not a test: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def prompts(n: int) -> list[str]:
    """``n`` distinct relation prompts (up to 4,096), so no timed call hits the text cache by accident."""
    from itertools import islice, product

    colors = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
    shapes = ["circle", "square", "triangle", "diamond"]
    rels = ["above", "below", "to the left of", "to the right of"]
    combos = product(rels, colors, shapes, colors, shapes)
    return [f"a {c1} {s1} {r} a {c2} {s2}" for r, c1, s1, c2, s2 in islice(combos, n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=None, help="default: the model's own")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--warm-cache", action="store_true")
    ap.add_argument("--batches", default="8,64")
    ap.add_argument("--prompt-file", default="", help="draw the prompts from this file (one per line, used in order; "
                    "e.g. emoji names for the emoji model) instead of the shapes relation prompts")
    ap.add_argument("--name", default="latency.json", help="result file name in --out")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from pixlm.pipelines.text_to_image import load_pipeline

    pipe = load_pipeline(a.model)
    if a.prompt_file:
        lines = [x.strip() for x in Path(a.prompt_file).read_text(encoding="utf-8").splitlines() if x.strip()]
        pool = list(dict.fromkeys(lines))
        if len(pool) < a.repeats + 10 + max([int(b) for b in a.batches.split(",") if b] or [0]):
            raise SystemExit(f"--prompt-file has {len(pool)} distinct prompts; need repeats + 10 + the largest batch")
    take = (lambda n: pool[:n]) if a.prompt_file else prompts
    ps = take(a.repeats + 10)
    for p in ps[:5]:  # warm-up
        pipe(p, num_inference_steps=a.steps, guidance_scale=a.guidance, seed=0)
    lat, parts = [], []
    for i in range(a.repeats):
        p = ps[0] if a.warm_cache else ps[5 + i]
        t = time.perf_counter()
        out = pipe.generate(p, num_inference_steps=a.steps, guidance_scale=a.guidance, seed=i)
        lat.append((time.perf_counter() - t) * 1e3)
        parts.append(out.timings_ms)
    row = {
        "model": a.model or "bundled shapes-masked", "steps": a.steps or pipe.defaults["num_inference_steps"],
        "prompts": a.prompt_file or "relations",
        "guidance_scale": pipe.defaults["guidance_scale"] if a.guidance is None else a.guidance,
        "threads": a.threads, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "text_cache": "warm" if a.warm_cache else "cold",
        "latency_ms_bs1_median": statistics.median(lat), "latency_ms_bs1_p90": sorted(lat)[int(0.9 * len(lat))],
        "text_ms_median": statistics.median(p["text_ms"] for p in parts),
        "sample_ms_median": statistics.median(p["sample_ms"] for p in parts),
        "decode_ms_median": statistics.median(p["decode_ms"] for p in parts),
        "throughput": {},
    }
    for bs in [int(b) for b in a.batches.split(",") if b]:
        batch = take(bs + 200)[200:] if not a.prompt_file else take(a.repeats + 10 + bs)[a.repeats + 10:]
        pipe(batch, num_inference_steps=a.steps, seed=0)
        t = time.perf_counter()
        pipe(batch, num_inference_steps=a.steps, seed=1)
        row["throughput"][f"images_per_s_bs{bs}"] = bs / (time.perf_counter() - t)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / a.name).write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
