"""One training loop for every trainer: run folder → resume → prepare → schedule → step → log → checkpoint.

A trainer (tokenizer, generator, captioner, expander, the pool families, the GAN, the judge, the contrastive scorer)
builds its models and optimizer and hands :class:`TrainLoop` a *step function*: the forward and backward passes of
one optimisation step (micro-batches and ``no_sync`` included), returning its losses. The loop owns everything around it, the same way
for every family:

- ``TrainLoop(cfg)``: an Accelerate ``Accelerator`` (``train.distributed.make_accelerator``), the run folder with
  ``train_config.json``, the seed;
- ``prepare``: weights of the newest complete checkpoint loaded (``--resume``), ``accelerator.prepare``, then each
  process's optimizer and RNG state (after ``prepare``, so a sharded FSDP optimizer takes its own shard back);
- ``fit``: per step the learning rate (:func:`lr_at`), the step function, a finiteness check, gradient clipping,
  ``optimizer.step``, the EMA (:func:`ema_update`); a log line every ``log_every`` steps and at the end (with the
  trainer's evaluation every ``eval_every``); a crash-safe checkpoint (``train.common.save_training_checkpoint``,
  every process taking part) every ``ckpt_every`` steps, at the end and when a limit stops the run early.

Checkpoints keep one layout: ``model`` (the EMA copy, or the only model), then the trained modules under their
names (``raw``, ``disc``), ``rank-R.pt`` and ``state.json`` with ``step``, ``world_size``, ``seed`` (and the pool
families' budget clock). Data order is each trainer's pure function of (seed, step), so a resumed run continues
exactly where the interrupted one stopped.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from pixlm.checkpoint import write_json
from pixlm.train.common import LossLog, restore_process_state, resume_from_latest, save_training_checkpoint

Metrics = dict[str, "torch.Tensor | float"]


def lr_at(step: int, base: float, warmup: int, total: int, progress: float | None = None,
          floor: float = 0.05) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``floor`` × ``base`` (5% unless a trainer keeps its
    own: the learned judge's 2%).

    The decay follows ``progress`` in [0, 1] when given (the pool families' budget clock), otherwise the steps after
    the warmup out of ``total``.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    if progress is None:
        progress = (step - warmup) / max(1, total - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay_names: Sequence[str] = ("emb",)) -> list[dict]:
    """AdamW groups: weight decay on matrices and kernels, none on vectors (norms, biases) nor on parameters whose
    name contains one of ``no_decay_names`` (embeddings). The split is part of a checkpoint's optimizer state, so a
    trainer keeps its own ``no_decay_names`` for good."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or any(k in name for k in no_decay_names) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int, accelerator: Any = None) -> None:
    """EMA of the weights with the usual warm start: the decay ramps up as (1 + step) / (10 + step).

    ``model`` is the prepared module when ``accelerator`` is given. Under FSDP its weights are sharded: every
    process gathers them and the main process, which keeps the EMA, takes the floating-point entries.
    """
    d = min(decay, (1 + step) / (10 + step))
    if accelerator is not None and str(accelerator.distributed_type).endswith("FSDP"):
        full = accelerator.get_state_dict(model)
        for k, pe in ema.state_dict().items() if accelerator.is_main_process else ():
            if pe.is_floating_point():
                pe.lerp_(full[k].to(pe), 1 - d)
        return
    raw = accelerator.unwrap_model(model) if accelerator is not None else model
    for pe, pm in zip(ema.parameters(), raw.parameters()):
        pe.lerp_(pm.detach(), 1 - d)


class Budget:
    """Training seconds (carried across resumes in ``state.json``) against ``max_minutes``; progress in [0, 1].

    The loop times each step with ``start()`` … ``stop()``: ``spent_s`` grows by its CPU (``clock="cpu"``) or wall
    seconds, ``wall_s`` by its wall seconds.
    """

    def __init__(self, max_minutes: float, steps: int, clock: str = "cpu", spent_s: float = 0.0,
                 wall_s: float = 0.0) -> None:
        if clock not in ("cpu", "wall"):
            raise ValueError(f"budget clock={clock!r} must be 'cpu' or 'wall'")
        self.max_minutes, self.limit_s, self.steps, self.clock_name = max_minutes, max_minutes * 60.0, steps, clock
        self.spent_s, self.wall_s = spent_s, wall_s
        self.clock = time.process_time if clock == "cpu" else time.perf_counter

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

    def reason(self) -> str:
        """Why the run stops here ("" while the budget lasts)."""
        return f"max_minutes={self.max_minutes} of {self.clock_name} time reached" if self.exhausted() else ""


class TrainLoop:
    """One training run (see the module docstring). ``cfg`` is the trainer's config dataclass; the loop reads its
    ``out`` (the run folder, unless ``run`` names another), ``seed``, ``resume``, ``steps``, ``warmup``,
    ``log_every`` and ``ckpt_every``.

    Between ``TrainLoop(cfg)`` and ``prepare`` the trainer builds its data and models (after the seed is set, so
    random initialisations are a function of it); after ``prepare``, ``start`` is the step to continue from and
    ``state`` the resumed checkpoint's ``state.json`` (``{}`` for a fresh run).
    """

    def __init__(self, cfg: Any, mixed_precision: str = "no", grad_accum: int = 1, run: str | Path = "") -> None:
        from pixlm.train.distributed import make_accelerator

        self.cfg = cfg
        self.started = time.time()  # max_minutes limits count from here: data and model set-up included
        self.accelerator = make_accelerator(mixed_precision, grad_accum)
        self.main = self.accelerator.is_main_process
        self.run = Path(run or cfg.out)
        if self.main:
            self.run.mkdir(parents=True, exist_ok=True)
            write_json(self.run / "train_config.json", asdict(cfg))
        self.accelerator.wait_for_everyone()  # the run folder exists for every process
        torch.manual_seed(cfg.seed)
        self.state: dict = {}
        self.start = 0

    @property
    def fsdp(self) -> bool:
        return str(self.accelerator.distributed_type).endswith("FSDP")

    def prepare(self, trained: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                ema: bool = False, same_world: bool = False) -> list[torch.nn.Module]:
        """Resume (when ``cfg.resume``), ``accelerator.prepare`` the ``trained`` modules and ``optimizer``; returns the
        prepared modules in order. The first trained module is the one whose gradients are clipped and, with
        ``ema``, whose exponential moving average ``self.ema`` keeps (checkpointed as ``model``; the main process's
        copy is the one to ship). ``same_world`` refuses to resume on another number of processes (streamed data:
        each process continues its own part of the shards)."""
        first = next(iter(trained.values()))
        self.ema = copy.deepcopy(first).eval().requires_grad_(False) if ema else None
        self.modules = {**({"model": self.ema} if ema else {}), **trained}
        self.optimizer = optimizer
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]  # before a resumed state overwrites them
        if self.cfg.resume:
            self.state = resume_from_latest(self.run, self.modules, None, self.accelerator)
        self.start = self.state.get("step", 0)
        world = self.accelerator.num_processes
        if same_world and self.state and self.state.get("world_size", world) != world:
            raise ValueError(f"this streaming run was checkpointed with {self.state['world_size']} processes; resume "
                             f"it with the same number (got {world}) so every process continues its own part of "
                             "the shards")
        *prepared, self.optimizer = self.accelerator.prepare(*trained.values(), optimizer)
        if self.state:
            restore_process_state(self.state, self.optimizer, self.accelerator)
        self.prepared = dict(zip(trained, prepared))
        self.log = LossLog(self.run, self.start) if self.main else None
        return prepared

    def unwrap(self, name: str) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.prepared[name])

    def stop_when(self, max_minutes: float = 0.0, stop_after: int = 0) -> Callable[[int], str]:
        """A ``stop`` for :meth:`fit`: after ``max_minutes`` of wall time since the loop was made, or after step
        ``stop_after`` (0 = no such limit)."""
        def stop(done: int) -> str:
            if max_minutes > 0 and time.time() - self.started > 60 * max_minutes:
                return f"max_minutes={max_minutes} reached"
            return f"stop_after={stop_after} reached" if stop_after and done >= stop_after else ""

        return stop

    def save(self, done: int, budget: Budget | None = None) -> Path:
        """Checkpoint ``done`` (every process takes part: each writes its optimizer and RNG state)."""
        modules = {**self.modules, **{name: self.unwrap(name) for name in self.prepared}}
        states = {name: self.accelerator.get_state_dict(m) for name, m in self.prepared.items()} if self.fsdp else None
        extra = {"seed": self.cfg.seed, **(budget.state() if budget else {})}
        return save_training_checkpoint(self.run, done, modules, self.optimizer, extra, accelerator=self.accelerator,
                                        states=states)

    def fit(self, step_fn: Callable[[int], Metrics], *, end: int = 0, ema_decay: float = 0.0,
            clip_norm: float | None = None, evaluate: Callable[[int], dict] | None = None, eval_every: int = 0,
            log_extra: Callable[[int], dict] | None = None, on_checkpoint: Callable[[int], None] | None = None,
            plot: tuple[str, ...] = ("loss",), stop: Callable[[int], str] | None = None,
            budget: Budget | None = None, lr_floor: float = 0.05) -> int:
        """Train steps ``start`` … ``end - 1`` (``end`` 0 = ``cfg.steps``; the schedule always spans ``cfg.steps``);
        returns the number of steps done.

        ``step_fn(step)`` runs the forward and backward passes and returns metrics: ``loss`` and any ``loss_*`` must
        be finite, every entry is logged. Main process only: ``evaluate(done)`` adds to the log line every
        ``eval_every`` steps and at the end, ``log_extra(done)`` to every log line, ``on_checkpoint(done)`` runs
        after each checkpoint (sample grids). ``stop(done)`` returning a reason (or ``budget`` running out) ends the
        run early: a log line with ``"stopped"`` and the evaluation, then a checkpoint. With a ``budget`` each
        step is timed, the schedule follows its progress and its clock goes into the log and the checkpoints.
        ``lr_floor`` is where the cosine decay ends, as a share of each group's rate.
        """
        cfg, acc = self.cfg, self.accelerator
        end = end or cfg.steps
        main_module = next(iter(self.prepared.values()))
        done = self.start
        if budget is not None and budget.exhausted():  # a resumed run whose budget was already spent
            return done
        if stop is not None and done and stop(done):  # resumed at or past its stop_after: nothing left to do
            return done
        bar = tqdm(range(self.start, end), initial=self.start, total=end, disable=not self.main)
        t0 = time.time()
        for step in bar:
            if budget is not None:
                budget.start()
            progress = budget.progress(step) if budget is not None else None
            for g, base in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = lr_at(step, base, cfg.warmup, cfg.steps, progress, lr_floor)
            metrics = step_fn(step)
            for name, value in metrics.items():
                if name.startswith("loss") and not torch.isfinite(torch.as_tensor(value)):
                    raise FloatingPointError(f"{self.run}: {name} became {float(value)} at step {step}")
            if clip_norm is not None:
                acc.clip_grad_norm_(main_module.parameters(), clip_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                ema_update(self.ema, main_module, ema_decay, step, acc)
            if budget is not None:
                budget.stop()
            done = step + 1
            reason = (stop(done) if stop else "") or (budget.reason() if budget is not None else "")
            if (stop or budget) and acc.num_processes > 1:  # clocks differ: every process stops where the main one does
                from accelerate.utils import broadcast_object_list

                reason = broadcast_object_list([reason])[0]
            last = done == end or bool(reason)
            if self.main and (done % cfg.log_every == 0 or done == end):
                clock = budget.state() if budget is not None else {"elapsed_s": time.time() - t0}
                row = {"step": done, **{k: float(v) for k, v in metrics.items()},
                       "lr": self.optimizer.param_groups[0]["lr"], **clock, **(log_extra(done) if log_extra else {})}
                if evaluate and (done == end or eval_every and done % eval_every == 0):
                    row.update(evaluate(done))
                self.log.append(row)
                bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in plot and isinstance(v, float)})
            if self.main and reason:
                self.log.append({"step": done, "loss": float(metrics["loss"]), "stopped": reason,
                                 **(evaluate(done) if evaluate else {})})
            if done % cfg.ckpt_every == 0 or last:
                self.save(done, budget)
                if self.main:
                    if on_checkpoint:
                        on_checkpoint(done)
                    self.log.plot(plot)
            if reason:
                break
        return done

    def finish(self, write: Callable[[], Any]) -> None:
        """``write()`` the finished model on the main process while the others wait."""
        if self.main:
            write()
        self.accelerator.wait_for_everyone()
