"""Cross-attention vs prefix conditioning for the masked generator, at an equal training budget.

    python benchmarks/conditioning.py --tokenizer runs/tokenizer/model --pool runs/generator/pool.safetensors \
        --steps 600 --out benchmarks/results

Trains one generator per conditioning mode on the same pre-encoded pool, same seed, same steps, then reports
held-out masked-token loss, a quick compositional accuracy (geometric checker on fully specified prompts),
sampling latency at batch 1 (8 steps, CFG) and parameter count. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--pool", required=True, help="pool.safetensors written by a generator run")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--work", default="runs/conditioning")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    from safetensors.torch import load_file, save_file

    from pixlm.models.masked import masked_token_loss
    from pixlm.pipelines.text_to_image import load_pipeline
    from pixlm.train.generator import GeneratorTrainConfig, gather_text, quick_accuracy, train_generator

    pool = load_file(a.pool)
    n_train = pool["tokens"].shape[0] - 512
    held = torch.arange(n_train, n_train + 512)  # scored below, left out of the training copy of the pool
    train_pool = {"tokens": pool["tokens"][:n_train], "offsets": pool["offsets"][: n_train + 1],
                  "text": pool["text"][: int(pool["offsets"][n_train])]}
    rows = []
    for mode in ("cross", "prefix"):
        run = Path(a.work) / mode
        run.mkdir(parents=True, exist_ok=True)
        save_file(train_pool, str(run / "pool.safetensors"))
        t0 = time.time()
        train_generator(GeneratorTrainConfig(out=str(run), tokenizer=a.tokenizer, steps=a.steps, conditioning=mode,
                                             dim=a.dim, layers=a.layers, eval_every=10**9, ckpt_every=10**9,
                                             resume=True))
        train_s = time.time() - t0
        pipe = load_pipeline(run / "pipeline")
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            losses = []
            for chunk in held.split(128):
                states, mask = gather_text(pool, chunk)
                losses.append(masked_token_loss(pipe.generator, pool["tokens"][chunk].long(), states, mask,
                                                generator=g, label_smoothing=0.0).item())
        lat = []
        for i in range(12):
            t = time.perf_counter()
            pipe(f"a red circle {'above' if i % 2 else 'below'} a blue square", seed=i)
            lat.append((time.perf_counter() - t) * 1e3)
        rows.append({"conditioning": mode, "steps": a.steps, "train_s": round(train_s, 1),
                     "params": sum(p.numel() for p in pipe.generator.parameters()),
                     "heldout_masked_loss": statistics.mean(losses), "quick_acc": quick_accuracy(pipe, n=96),
                     "latency_ms_bs1": statistics.median(lat[2:])})
        print(json.dumps(rows[-1]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conditioning.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
