"""Rebuild the bundled shapes model in one command::

    python -m pixlm.train.bundle --work runs/bundle --out src/pixlm/assets/shapes-masked

Stages (each resumable; a finished stage is skipped): (1) tokenizer, (2) generator trained on the
stage-1 tokens, while (3) the tokenizer's decoder alone is fine-tuned — the encoder, hence every token, stays
fixed — then (4) the pipeline is assembled with the fine-tuned decoder and written in float16.
Stages 2 and 3 run as two processes so they share a 2-core machine; ``--sequential`` runs them in turn.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
from pathlib import Path

import torch


def _tokenizer(work: Path, steps: int) -> Path:
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    out = work / "tokenizer"
    if not (out / "model" / ".complete").exists():
        train_tokenizer(TokenizerTrainConfig(out=str(out), steps=steps, batch_size=24, ckpt_every=100, resume=True))
    return out / "model"


def _decoder(work: Path, tokenizer: Path, steps: int) -> Path:
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    out = work / "decoder"
    if not (out / "model" / ".complete").exists():
        train_tokenizer(TokenizerTrainConfig(out=str(out), steps=steps, batch_size=24, lr=5e-4, warmup=20,
                                             init_from=str(tokenizer), freeze_encoder=True, seed=1,
                                             ckpt_every=100, resume=True))
    return out / "model"


def _generator(work: Path, tokenizer: Path, steps: int, pool: int) -> Path:
    from pixlm.train.generator import GeneratorTrainConfig, train_generator

    out = work / "generator"
    if not (out / "pipeline" / ".complete").exists():
        train_generator(GeneratorTrainConfig(out=str(out), tokenizer=str(tokenizer), steps=steps, pool=pool,
                                             resume=True))
    return out / "pipeline"


def _run(fn, *args) -> None:
    torch.set_num_threads(1)  # two single-threaded processes share two cores without spin-waiting
    fn(*args)


def assemble(generator_pipeline: Path, decoder: Path, out: Path) -> Path:
    """Pipeline from stage 2 with the fine-tuned VQ of stage 3, weights stored as float16."""
    from pixlm.models.vq import VQModel
    from pixlm.pipeline import TextToImagePipeline

    pipe = TextToImagePipeline.from_pretrained(generator_pipeline)
    vq = VQModel.from_pretrained(decoder)
    first = pipe.vq.encoder.state_dict()
    if any(not torch.equal(v, vq.encoder.state_dict()[k]) for k, v in first.items()):
        raise RuntimeError("the fine-tuned tokenizer's encoder differs from the one the generator was trained on")
    pipe.vq = vq.eval()
    from pixlm.checkpoint import atomic_write_dir, write_json

    def write(tmp: Path) -> None:
        pipe.vq.save_pretrained(tmp / "vq", dtype=torch.float16)
        pipe.text_encoder.save_pretrained(tmp / "text_encoder")
        pipe.generator.save_pretrained(tmp / "generator", dtype=torch.float16)
        write_json(tmp / "model_index.json", {"pipeline": "TextToImagePipeline", "generator": pipe.generator.kind,
                                              "defaults": pipe.defaults})

    return atomic_write_dir(out, write)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/bundle")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "assets" / "shapes-masked"))
    ap.add_argument("--tokenizer-steps", type=int, default=1000)
    ap.add_argument("--decoder-steps", type=int, default=1500)
    ap.add_argument("--generator-steps", type=int, default=3000)
    ap.add_argument("--pool", type=int, default=40_000)
    ap.add_argument("--sequential", action="store_true")
    a = ap.parse_args(argv)
    work = Path(a.work)
    tok = _tokenizer(work, a.tokenizer_steps)
    if a.sequential:
        gen = _generator(work, tok, a.generator_steps, a.pool)
        dec = _decoder(work, tok, a.decoder_steps)
    else:
        ctx = mp.get_context("spawn")
        p = ctx.Process(target=_run, args=(_decoder, work, tok, a.decoder_steps))
        p.start()
        _run(_generator, work, tok, a.generator_steps, a.pool)
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"decoder fine-tuning failed with exit code {p.exitcode}")
        gen, dec = work / "generator" / "pipeline", work / "decoder" / "model"
    print(assemble(gen, dec, Path(a.out)))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
