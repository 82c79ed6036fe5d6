"""Batch-1 latency of the bundled model with prompts read (the default) against word for word (expand=False).

    python benchmarks/results/reading/latency_check.py      # run from the repository root, nothing else running

200 dev + paraphrase prompts, shuffled, each timed both ways in alternating order, text cache cleared per call."""
import json
import random
import statistics
import time

import torch

import pixlm

torch.set_num_threads(2)
pipe = pixlm.load_pipeline()
rows = [json.loads(line)["prompt"] for f in ("dev_prompts", "paraphrase_prompts")
        for line in open(f"src/pixlm/assets/{f}.jsonl", encoding="utf-8")]
random.Random(0).shuffle(rows)
res: dict = {False: [], None: []}
for _ in range(3):
    pipe.generate(rows[0], seed=0)
    pipe.generate(rows[0], seed=0, expand=False)
for i, p in enumerate(rows[:200]):
    for mode in ([False, None] if i % 2 else [None, False]):
        pipe.text_encoder._cache.clear()
        t = time.perf_counter()
        pipe.generate(p, seed=i, expand=mode)
        res[mode].append((time.perf_counter() - t) * 1e3)
for k, v in res.items():
    print("expand =", k, "median ms", round(statistics.median(v), 2), "p90", round(sorted(v)[int(len(v) * .9)], 2))
print("ratio", round(statistics.median(res[None]) / statistics.median(res[False]), 3))
