"""Train the built-in prompt expander (``models/expander_lm.py``) on (loose prompt → canonical caption) pairs.

One command::

    python -m pixlm.train.expander --out runs/expander

Pairs are made on the fly by ``data/loose.py`` from random shapes scenes; the batch of step ``s`` is a pure
function of (seed, s), so ``--resume`` continues exactly. Every ``eval_every`` steps the model rewrites a held-out
set of loose prompts (a seed the training stream never uses) and the log records how many rewrites parse to
the intended scene. The finished model is written to ``OUT/model`` in float16 (what ships).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pixlm.checkpoint import write_json
from pixlm.data.loose import expansion_correct, loose_prompt_set, training_pair, vocabulary_words
from pixlm.models.expander_lm import ExpanderConfig, ExpanderLM, build_vocab, caption_loss
from pixlm.train.common import LossLog, resume_from_latest, save_training_checkpoint, step_rng
from pixlm.train.tokenizer import lr_at

DEV_SEED = 99_999_989  # held-out prompts for the training log (the benchmark uses loose.BENCHMARK_SEED)


@dataclass
class ExpanderTrainConfig:
    out: str = "runs/expander"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    dim: int = 128
    layers: int = 4
    heads: int = 4
    vague: float = 0.15  # share of pairs whose loose side is vague ("a few blue things")
    identity: float = 0.1  # share of pairs that are already canonical
    log_every: int = 25
    eval_every: int = 500
    eval_n: int = 200
    ckpt_every: int = 250
    resume: bool = False
    max_minutes: float = 0.0  # stop early (and still save the model) after this much wall time; 0 = no limit


def pair_batch(cfg: ExpanderTrainConfig, step: int) -> list[tuple[str, str]]:
    """The (loose, canonical) pairs of training step ``step``."""
    rng = step_rng(cfg.seed, step)
    return [training_pair(rng, cfg.vague, cfg.identity) for _ in range(cfg.batch_size)]


def dev_accuracy(model: ExpanderLM, rows: list[dict]) -> dict[str, float]:
    """Share of held-out loose prompts rewritten into a caption with the intended spec, and exact matches."""
    model.eval()
    outs: list[str] = []
    for i in range(0, len(rows), 64):
        outs += model.rewrite([r["prompt"] for r in rows[i:i + 64]])
    model.train()
    return {"dev_spec_acc": sum(expansion_correct(o, r["specs"]) for o, r in zip(outs, rows)) / len(rows),
            "dev_exact": sum(o == r["canonical"] for o, r in zip(outs, rows)) / len(rows)}


def train_expander(cfg: ExpanderTrainConfig) -> Path:
    """Run (or resume) training; returns the folder of the finished model."""
    from accelerate import Accelerator

    for name in ("steps", "batch_size", "dim", "layers", "heads", "eval_n"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    accelerator = Accelerator()
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "train_config.json", asdict(cfg))
    torch.manual_seed(cfg.seed)
    model = ExpanderLM(ExpanderConfig(vocab=build_vocab(vocabulary_words()), dim=cfg.dim, layers=cfg.layers,
                                      heads=cfg.heads))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    state = resume_from_latest(run, {"model": model}, opt) if cfg.resume else {}
    start = state.get("step", 0)
    model, opt = accelerator.prepare(model, opt)
    raw: ExpanderLM = accelerator.unwrap_model(model)
    log = LossLog(run, start)
    dev = loose_prompt_set(DEV_SEED, cfg.eval_n)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not accelerator.is_main_process)
    t0 = time.time()
    done = start
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
        b = {k: v.to(accelerator.device) for k, v in raw.packed_batch(pair_batch(cfg, step)).items()}
        loss = caption_loss(model(b["idx"], b["positions"], b["segments"]), b["targets"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"expander loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        out_of_time = cfg.max_minutes > 0 and time.time() - t0 > cfg.max_minutes * 60
        last = done == cfg.steps or out_of_time
        if (done % cfg.log_every == 0 or last) and accelerator.is_main_process:
            row = {"step": done, "loss": loss.item(), "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - t0}
            if done % cfg.eval_every == 0 or last:
                row.update(dev_accuracy(raw, dev))
            log.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=row.get("dev_spec_acc", ""))
        if (done % cfg.ckpt_every == 0 or last) and accelerator.is_main_process:
            save_training_checkpoint(run, done, {"model": raw}, opt, {"seed": cfg.seed})
            log.plot(("loss", "dev_spec_acc"))
        if out_of_time:
            break
    if accelerator.is_main_process:
        raw.eval().save_pretrained(run / "model", dtype=torch.float16)
        write_json(run / "model_info.json", {"steps_done": done, "params": raw.num_params(), **asdict(cfg)})
    return run / "model"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(ExpanderTrainConfig):
        if f.type in ("bool", bool):
            ap.add_argument(f"--{f.name.replace('_', '-')}", action="store_true")
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    cfg = ExpanderTrainConfig(**vars(ap.parse_args(argv)))
    print(train_expander(cfg))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
