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

``train_likelihood_model`` trains the families with one loss (masked, autoregressive, VAE, diffusion) in
``pixlm.train.loop.TrainLoop``; the GAN, with two updates per step, gives the same loop its own step function in
``pixlm.train.gan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from pixlm.checkpoint import CheckpointError, write_json
from pixlm.models.vq import VQModel
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.text.encoder import TextEncoder
from pixlm.train.common import load_text_encoder, step_generator
from pixlm.train.generator import gather_text, quick_accuracy, save_samples, with_dropout
from pixlm.train.loop import Budget, TrainLoop, param_groups

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
        gen = step_generator(self.seed, step)
        idx = torch.randint(0, self.size, (batch_size,), generator=gen)
        tokens = self.pool["tokens"][idx].long()
        states, mask = gather_text(self.pool, idx)
        drop = torch.rand(batch_size, generator=gen) < self.cond_dropout
        states, mask = with_dropout(states, mask, drop, self.null_states, self.null_mask)
        return tokens, states, mask, gen


def setup(cfg: PoolTrainConfig) -> tuple[TrainLoop, VQModel, TextEncoder, PoolBatches]:
    """The loop (run folder, Accelerate, seed), tokenizer, text encoder and the batch maker over the pool."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    loop = TrainLoop(cfg)
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
    return loop, vq, text, PoolBatches(pool, null_states, null_mask, cfg.cond_dropout, cfg.seed)


def finish(run: Path, vq: VQModel, text: TextEncoder, model: torch.nn.Module, defaults: dict, cfg: PoolTrainConfig,
           summary: dict) -> Path:
    """Write ``RUN/pipeline`` (model_index.json + vq/ text_encoder/ generator/), a sample grid and
    ``RUN/budget.json`` (steps done, training seconds, quick accuracy)."""
    pipe = TextToImagePipeline(vq, text, model.eval(), defaults)
    save_samples(pipe, run / "samples.png")
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
    loop, vq, text, batches = setup(cfg)
    model = build(vq, text)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    (model,) = loop.prepare({"raw": model}, opt, ema=True)
    budget = resumed_budget(loop, cfg)
    dev = loop.accelerator.device

    def step_fn(step: int) -> dict:
        tokens, states, mask, gen = batches(step, cfg.batch_size)
        out = loss_fn(model, tokens.to(dev), states.to(dev), mask.to(dev), gen)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        loop.accelerator.backward(loss)
        return {"loss": loss.detach(), **parts}

    done = loop.fit(step_fn, ema_decay=cfg.ema, clip_norm=1.0, budget=budget)
    return finish(loop.run, vq, text, loop.ema, defaults, cfg, budget_summary(budget, done, cfg))


def resumed_budget(loop: TrainLoop, cfg: PoolTrainConfig) -> Budget:
    """The run's budget clock, carried on from the resumed checkpoint."""
    return Budget(cfg.max_minutes, cfg.steps, cfg.budget_clock, loop.state.get("train_s", 0.0),
                  loop.state.get("wall_s", 0.0))


def budget_summary(budget: Budget, steps: int, cfg: PoolTrainConfig) -> dict:
    """What ``budget.json`` records about the compute a run used."""
    return {"steps": steps, "train_s": round(budget.spent_s, 1), "wall_s": round(budget.wall_s, 1),
            "budget_clock": cfg.budget_clock, "samples_seen": steps * cfg.batch_size,
            "stopped_by": "budget" if budget.exhausted() else "steps"}
