"""Pick each budget-trained generator's sampling defaults on held-out prompts, before ``pixlm bench``.

    python benchmarks/tune_baselines.py --runs runs/baselines --out benchmarks/results/tune_baselines.json

For every family in ``--runs`` (the output of ``python -m pixlm.train.baselines``), each setting of a small grid
(temperature / guidance) is scored with ``pixlm.eval.report.run_eval`` on a tuning set made with
``make_dev_set(seed=1)`` — same categories as the shipped dev set (seed 0), different prompts, so the bench's
dev-set figures are not tuned on. The best setting (accuracy, then lower FID) is written into the pipeline's
``model_index.json`` defaults; the whole grid goes to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

GRIDS = {
    "masked": [{"temperature": t, "guidance_scale": g} for t in (0.5, 1.0) for g in (1.5, 3.0)],
    "autoregressive": [{"temperature": t, "guidance_scale": g} for t in (0.7, 1.0) for g in (1.5, 3.0)],
    "diffusion": [{"guidance_scale": g} for g in (1.5, 3.0, 5.0)],
    "gan": [{"temperature": t} for t in (0.5, 1.0)],
    "vae": [{"temperature": t} for t in (0.5, 1.0)],
}


def main(argv: list[str] | None = None) -> None:
    from pixlm.checkpoint import read_json, write_json
    from pixlm.data.specs import make_dev_set, write_specs
    from pixlm.eval.report import run_eval
    from pixlm.pipelines.text_to_image import load_pipeline

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/baselines")
    ap.add_argument("--families", default=",".join(GRIDS))
    ap.add_argument("--n-per-category", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/tune_baselines.json")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="tune-"))
    prompts = work / "tune.jsonl"
    write_specs(make_dev_set(seed=1, n_per_category=a.n_per_category), prompts)
    results: dict = {"prompts": f"make_dev_set(seed=1, n_per_category={a.n_per_category})", "families": {}}
    for family in [f for f in a.families.split(",") if f]:
        path = Path(a.runs) / family / "pipeline"
        pipe = load_pipeline(path)
        base = dict(pipe.defaults)
        rows = []
        for setting in GRIDS[pipe.generator.kind]:
            pipe.defaults = {**base, **setting}
            t0 = time.perf_counter()
            rep = run_eval(None, str(prompts), 1, str(work / family), seed=0, pipeline=pipe)
            rows.append({**setting, "accuracy": rep["overall"], "fid": rep["fid"],
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(family, rows[-1], flush=True)
        best = max(rows, key=lambda r: (r["accuracy"], -(r["fid"] if r["fid"] is not None else float("inf"))))
        chosen = {k: best[k] for k in GRIDS[pipe.generator.kind][0]}
        index = read_json(path / "model_index.json")
        index["defaults"] = {**index["defaults"], **chosen}
        write_json(path / "model_index.json", index)
        results["families"][family] = {"grid": rows, "chosen": chosen}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({f: r["chosen"] for f, r in results["families"].items()}))


if __name__ == "__main__":
    main()
