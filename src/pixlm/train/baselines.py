"""Train every generator family on the same pool with the same recorded budget, one after another::

    python -m pixlm.train.baselines --out runs/baselines --pool runs/generator/pool.safetensors \\
        --vq runs/tokenizer/model --minutes 6 --threads 1 [--decoder src/pixlm/assets/shapes-masked/vq]

Families: masked (the same network and loss as the main generator, in the shared loop), autoregressive,
GAN, VAE and diffusion. Each gets ``--minutes`` of training time (optimisation steps only; setup and the
final sample grid are not counted), measured as process CPU time by default so that other jobs on a shared
machine cannot tilt the budget, on ``--threads`` torch threads and batch size ``--batch-size``; each
writes ``OUT/<family>/pipeline`` and ``OUT/<family>/budget.json``, and ``OUT/budgets.json`` collects them.
Re-running resumes an interrupted family (its budget clock is saved with its checkpoints) and skips
finished ones. ``--decoder`` puts a fine-tuned VQ decoder (same encoder, hence the same tokens, e.g. the
bundled model's) into every pipeline, so all families, and the bundled model, decode with the same one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from pixlm.checkpoint import CheckpointError, write_json

FAMILIES = ("masked", "autoregressive", "gan", "vae", "diffusion")


def train_family(family: str, common: dict) -> Path:
    """Train one family with the shared settings ``common`` (fields of ``PoolTrainConfig``)."""
    if family == "masked":
        from pixlm.train.masked_budget import MaskedBudgetTrainConfig, train_masked_budget

        return train_masked_budget(MaskedBudgetTrainConfig(**common))
    if family == "autoregressive":
        from pixlm.train.autoregressive import ARTrainConfig, train_autoregressive

        return train_autoregressive(ARTrainConfig(**common))
    if family == "gan":
        from pixlm.train.gan import GANTrainConfig, train_gan

        return train_gan(GANTrainConfig(**common))
    if family == "vae":
        from pixlm.train.vae import VAETrainConfig, train_vae

        return train_vae(VAETrainConfig(**common))
    if family == "diffusion":
        from pixlm.train.diffusion import DiffusionTrainConfig, train_diffusion

        return train_diffusion(DiffusionTrainConfig(**common))
    raise ValueError(f"family={family!r} is not one of {FAMILIES}")


def use_decoder(pipeline_dir: Path, vq_dir: Path) -> None:
    """Put the decoder of ``vq_dir`` into a pipeline's VQ, after checking that its encoder is the pipeline's
    (equal up to float16 storage), so tokens mean the same to both. The pipeline keeps its own encoder."""
    from pixlm.models.vq import VQModel

    old, new = VQModel.from_pretrained(pipeline_dir / "vq"), VQModel.from_pretrained(vq_dir)
    a, b = old.encoder.state_dict(), new.encoder.state_dict()
    if old.config != new.config or any(not torch.allclose(a[k], b[k], rtol=2e-3, atol=1e-4) for k in a):
        raise CheckpointError(f"{vq_dir} has a different encoder from the tokenizer in {pipeline_dir}; "
                              "its tokens would not match what the generator learned")
    old.decoder.load_state_dict(new.decoder.state_dict())
    old.save_pretrained(pipeline_dir / "vq")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/baselines")
    ap.add_argument("--pool", default="runs/generator/pool.safetensors")
    ap.add_argument("--vq", default="runs/tokenizer/model")
    ap.add_argument("--text-encoder", default="minilm")
    ap.add_argument("--decoder", default="", help="VQ folder whose decoder goes into every pipeline")
    ap.add_argument("--minutes", type=float, default=6.0, help="training minutes per family (see --clock)")
    ap.add_argument("--clock", default="cpu", choices=("cpu", "wall"),
                    help="budget clock: process CPU time (fair on a shared machine) or wall time")
    ap.add_argument("--warmup", type=int, default=20, help="learning-rate warm-up steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    families = [f for f in a.families.split(",") if f]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise SystemExit(f"--families: unknown {sorted(unknown)}; choose from {FAMILIES}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for family in families:
        run = out / family
        if (run / "pipeline" / ".complete").exists() and (run / "budget.json").is_file():
            print(f"{family}: done already ({run / 'pipeline'})", flush=True)
            continue
        t0 = time.time()
        print(f"{family}: training for {a.minutes} min on {a.threads} thread(s)", flush=True)
        path = train_family(family, dict(out=str(run), pool=a.pool, vq=a.vq, text_encoder=a.text_encoder,
                                         steps=10**9, max_minutes=a.minutes, budget_clock=a.clock,
                                         batch_size=a.batch_size, warmup=a.warmup, threads=a.threads, seed=a.seed,
                                         resume=True))
        print(f"{family}: {path} after {time.time() - t0:.0f} s wall", flush=True)
    if a.decoder:
        for family in families:
            use_decoder(out / family / "pipeline", Path(a.decoder))
    budgets = {f: json.loads((out / f / "budget.json").read_text()) for f in FAMILIES
               if (out / f / "budget.json").is_file()}
    write_json(out / "budgets.json", {"minutes_per_family": a.minutes, "clock": a.clock, "threads": a.threads,
                                      "batch_size": a.batch_size, "pool": a.pool, "decoder": a.decoder or a.vq,
                                      "families": budgets})
    print(json.dumps(budgets, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
