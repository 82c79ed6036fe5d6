"""Training any generator family on the pre-encoded pool, under a recorded compute budget.

Every generator (masked, autoregressive, GAN, VAE, diffusion) trains on the same pool that
``pixlm.train.generator`` builds (``RUN/pool.safetensors``: image tokens from the frozen tokenizer and
per-token MiniLM states of the captions), so the families differ only in the network, loss and sampler.

A run stops at ``steps`` or when ``max_minutes`` of training time (the optimisation steps themselves; the
final evaluation and model assembly are not counted) is spent, whichever comes first; the learning-rate
schedule follows whichever is further along, so a budget-limited run still ends its cosine decay. The budget
clock is the process's CPU time by default (``budget_clock="cpu"``): on a machine shared with other jobs, wall
time would hand whichever family ran during a quiet spell more compute. Wall time is logged beside it. Data
order is a function of (seed, step), the budget clock is saved in every checkpoint, and ``resume`` continues
both.

``train_likelihood_model`` is the straight-line loop shared by the families with one loss (masked,
autoregressive, VAE, diffusion); the GAN, with two optimisers, has its own loop in ``pixlm.train.gan``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from pixlm.checkpoint import CheckpointError, write_json
from pixlm.models.vq import VQModel
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.text.encoder import TextEncoder, TextEncoderConfig
from pixlm.train.common import LossLog, resume_from_latest, save_grid, save_training_checkpoint
from pixlm.train.generator import gather_text, quick_accuracy

SAMPLE_PROMPTS = ["two red circles above a blue square", "a large green triangle in the center",
                  "three yellow diamonds", "a small purple square in the bottom right",
                  "a cyan circle to the left of an orange diamond", "four pink squares",
                  "a blue triangle at the top and a red circle at the bottom", "a picture of a big disk"]


@dataclass
class PoolTrainConfig:
    out: str = "runs/baselines/x"
    pool: str = "runs/generator/pool.safetensors"  # built by `pixlm train generator` (same data for everyone)
    vq: str = "runs/tokenizer/model"  # the tokenizer that made the pool; its decoder goes into the pipeline
    text_encoder: str = "minilm"  # what encoded the pool: "minilm", "tiny" or a saved text_encoder folder
    steps: int = 100_000
    max_minutes: float = 0.0  # training-time budget; 0 = no limit (stop at `steps`)
    budget_clock: str = "cpu"  # "cpu": process CPU time (fair on a shared machine); "wall": elapsed time
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.05
    cond_dropout: float = 0.1  # rows trained with the empty prompt (classifier-free guidance)
    ema: float = 0.999
    seed: int = 0
    threads: int = 0  # torch.set_num_threads; 0 = leave as is
    log_every: int = 25
    ckpt_every: int = 500
    eval_n: int = 48  # held-out prompts scored by quick_accuracy at the end (0 = skip)
    resume: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps={self.steps} and batch_size={self.batch_size} must be >= 1")
        if self.max_minutes < 0:
            raise ValueError(f"max_minutes={self.max_minutes} must be >= 0 (0 = no limit)")
        if self.budget_clock not in ("cpu", "wall"):
            raise ValueError(f"budget_clock={self.budget_clock!r} must be 'cpu' or 'wall'")
        if not 0 <= self.cond_dropout < 1:
            raise ValueError(f"cond_dropout={self.cond_dropout} must be in [0, 1)")


def load_text_encoder(spec: str) -> TextEncoder:
    """"minilm", "tiny", a saved pixlm ``text_encoder`` folder, or a local Hugging Face encoder folder."""
    if spec in ("minilm", "tiny"):
        return TextEncoder(TextEncoderConfig(type=spec))
    path = Path(spec)
    cfg = path / "config.json"
    if cfg.is_file() and json.loads(cfg.read_text()).get("kind") == "text_encoder":
        return TextEncoder.from_pretrained(path)
    if not path.is_dir():
        raise CheckpointError(f"text_encoder={spec!r}: not 'minilm', 'tiny' or an existing folder")
    return TextEncoder(TextEncoderConfig(type="hf", path=str(path)))


def load_pool(path: str | Path) -> dict[str, torch.Tensor]:
    """Read and check a pool file: ``tokens`` (P, N) int, ``text`` (sum T_i, D), ``offsets`` (P + 1,)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pool file {path} does not exist; build it with `pixlm train generator` "
                              "(it writes RUN/pool.safetensors)")
    pool = load_file(str(path))
    missing = {"tokens", "text", "offsets"} - set(pool)
    if missing:
        raise CheckpointError(f"pool file {path} lacks {sorted(missing)}")
    if pool["offsets"].shape[0] != pool["tokens"].shape[0] + 1:
        raise CheckpointError(f"pool file {path}: {pool['tokens'].shape[0]} token rows but "
                              f"{pool['offsets'].shape[0]} text offsets")
    return pool


class PoolBatches:
    """Batches of (tokens, text states, text mask) drawn from the pool; order = f(seed, step)."""

    def __init__(self, pool: dict[str, torch.Tensor], null_states: torch.Tensor, null_mask: torch.Tensor,
                 cond_dropout: float, seed: int) -> None:
        self.pool, self.cond_dropout, self.seed = pool, cond_dropout, seed
        self.null_states, self.null_mask = null_states, null_mask  # (1, T0, D), (1, T0)
        self.size = pool["tokens"].shape[0]

    def __call__(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator]:
        """Tokens (B, N) long, states (B, T, D), mask (B, T), and the step's generator for the loss's noise."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randint(0, self.size, (batch_size,), generator=gen)
        tokens = self.pool["tokens"][idx].long()
        states, mask = gather_text(self.pool, idx)
        drop = torch.rand(batch_size, generator=gen) < self.cond_dropout
        if drop.any():  # condition dropout uses the empty prompt, as classifier-free guidance does
            t = max(states.shape[1], self.null_states.shape[1])
            states = torch.nn.functional.pad(states, (0, 0, 0, t - states.shape[1]))
            mask = torch.nn.functional.pad(mask, (0, t - mask.shape[1]))
            states[drop] = 0
            mask[drop] = False
            states[drop, : self.null_states.shape[1]] = self.null_states[0].to(states.dtype)
            mask[drop, : self.null_mask.shape[1]] = True
        return tokens, states, mask, gen


def lr_at(step: int, progress: float, base: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 5% of ``base`` as progress goes 0 → 1."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Budget:
    """Counts training seconds (carried across resumes) against ``max_minutes``; progress in [0, 1].

    Time a block with ``start()`` … ``stop()``: ``spent_s`` grows by its CPU (or wall) seconds, ``wall_s`` by
    its wall seconds.
    """

    def __init__(self, cfg: PoolTrainConfig, spent_s: float = 0.0, wall_s: float = 0.0) -> None:
        self.limit_s = cfg.max_minutes * 60.0
        self.steps = cfg.steps
        self.spent_s, self.wall_s = spent_s, wall_s
        self.clock = time.process_time if cfg.budget_clock == "cpu" else time.perf_counter

    def start(self) -> None:
        self._t0, self._w0 = self.clock(), time.perf_counter()

    def stop(self) -> None:
        self.spent_s += self.clock() - self._t0
        self.wall_s += time.perf_counter() - self._w0

    def state(self) -> dict:
        return {"train_s": self.spent_s, "wall_s": self.wall_s}

    def progress(self, step: int) -> float:
        by_time = self.spent_s / self.limit_s if self.limit_s else 0.0
        return min(1.0, max(step / self.steps, by_time))

    def exhausted(self) -> bool:
        return bool(self.limit_s) and self.spent_s >= self.limit_s


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and kernels only (not on norms, biases or embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "emb" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """EMA of the weights with the usual warm start: decay ramps up as (1 + step) / (10 + step)."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - d)


def setup(cfg: PoolTrainConfig) -> tuple[Path, VQModel, TextEncoder, dict, PoolBatches]:
    """Run folder (with ``train_config.json``), tokenizer, text encoder, pool and batch maker."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "train_config.json", asdict(cfg))
    torch.manual_seed(cfg.seed)
    vq = VQModel.from_pretrained(cfg.vq)
    text = load_text_encoder(cfg.text_encoder)
    pool = load_pool(cfg.pool)
    if pool["text"].shape[1] != text.dim:
        raise CheckpointError(f"pool text states have dim {pool['text'].shape[1]} but text_encoder="
                              f"{cfg.text_encoder!r} gives {text.dim}; use the encoder that built the pool")
    if int(pool["tokens"].max()) >= vq.vocab_size:
        raise CheckpointError(f"pool holds token {int(pool['tokens'].max())} but the tokenizer at {cfg.vq} has "
                              f"{vq.vocab_size} codes; use the tokenizer that built the pool")
    with torch.no_grad():
        null_states, null_mask = text.encode([""])
    return run, vq, text, pool, PoolBatches(pool, null_states, null_mask, cfg.cond_dropout, cfg.seed)


def finish(run: Path, vq: VQModel, text: TextEncoder, model: torch.nn.Module, defaults: dict, cfg: PoolTrainConfig,
           summary: dict) -> Path:
    """Write ``RUN/pipeline`` (model_index.json + vq/ text_encoder/ generator/), a sample grid and
    ``RUN/budget.json`` (steps done, training seconds, quick accuracy)."""
    pipe = TextToImagePipeline(vq, text, model.eval(), defaults)
    images = pipe(SAMPLE_PROMPTS, num_images_per_prompt=2, seed=0)
    save_grid(np.stack([np.asarray(im) for im in images]), run / "samples.png", cols=8)
    if cfg.eval_n:
        summary["quick_acc"] = quick_accuracy(pipe, n=cfg.eval_n)
    path = pipe.save_pretrained(run / "pipeline")
    write_json(run / "budget.json", {"generator": model.kind, "params": sum(p.numel() for p in model.parameters()),
                                     "batch_size": cfg.batch_size, "max_minutes": cfg.max_minutes,
                                     "threads": torch.get_num_threads(), **summary})
    return path


LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator],
                  "torch.Tensor | tuple[torch.Tensor, dict]"]


def train_likelihood_model(cfg: PoolTrainConfig, build: Callable[[VQModel, TextEncoder], torch.nn.Module],
                           loss_fn: LossFn, defaults: dict) -> Path:
    """Train ``build(vq, text)`` by minimising ``loss_fn(model, tokens, states, mask, generator)`` on the pool.

    ``loss_fn`` returns a scalar, or a scalar and a dict of floats to log. Writes ``RUN/pipeline`` with
    ``defaults`` as the pipeline defaults, and returns its path.
    """
    from accelerate import Accelerator

    accelerator = Accelerator()
    run, vq, text, pool, batches = setup(cfg)
    model = build(vq, text)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    state = resume_from_latest(run, {"model": ema, "raw": model}, opt) if cfg.resume else {}
    start = state.get("step", 0)
    budget = Budget(cfg, state.get("train_s", 0.0), state.get("wall_s", 0.0))
    model, opt = accelerator.prepare(model, opt)
    log = LossLog(run, start)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not accelerator.is_main_process)
    done = start
    for step in bar:
        if budget.exhausted():
            break
        budget.start()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, budget.progress(step), cfg.lr, cfg.warmup)
        tokens, states, mask, gen = batches(step, cfg.batch_size)
        dev = accelerator.device
        out = loss_fn(model, tokens.to(dev), states.to(dev), mask.to(dev), gen)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{cfg.out}: loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, accelerator.unwrap_model(model), cfg.ema, step)
        budget.stop()
        done = step + 1
        if done % cfg.log_every == 0 and accelerator.is_main_process:
            log.append({"step": done, "loss": loss.item(), **parts, "lr": opt.param_groups[0]["lr"],
                        **budget.state()})
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if done % cfg.ckpt_every == 0 and accelerator.is_main_process:
            save_training_checkpoint(run, done, {"model": ema, "raw": accelerator.unwrap_model(model)}, opt,
                                     {"seed": cfg.seed, **budget.state()})
    if accelerator.is_main_process:
        if done % cfg.ckpt_every and done > start:  # the last step, unless it was just saved
            save_training_checkpoint(run, done, {"model": ema, "raw": accelerator.unwrap_model(model)}, opt,
                                     {"seed": cfg.seed, **budget.state()})
        if log.path.is_file():
            log.plot(("loss",))
    return finish(run, vq, text, ema, defaults, cfg, budget_summary(budget, done, cfg))


def budget_summary(budget: Budget, steps: int, cfg: PoolTrainConfig) -> dict:
    """What ``budget.json`` records about the compute a run used."""
    return {"steps": steps, "train_s": round(budget.spent_s, 1), "wall_s": round(budget.wall_s, 1),
            "budget_clock": cfg.budget_clock, "samples_seen": steps * cfg.batch_size,
            "stopped_by": "budget" if budget.exhausted() else "steps"}


def config_parser(cls: type, description: str | None) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per field of the dataclass ``cls``.

    Booleans become ``--flag/--no-flag``; tuples of ints are written comma-separated (``--channels 64,128``).
    """
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if t == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif t.startswith("tuple"):
            ap.add_argument(flag, type=lambda v: tuple(int(x) for x in v.split(",")), default=f.default,
                            metavar="N,N,...")
        else:
            ap.add_argument(flag, type={"int": int, "float": float}.get(t, str), default=f.default)
    return ap
