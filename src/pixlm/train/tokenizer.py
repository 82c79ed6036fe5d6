"""Train the FSQ image tokenizer on shapes scenes rendered on the fly, or on pictures streamed from tar shards.

One straight-line Accelerate loop."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pixlm.models.vq import VQConfig, VQModel
from pixlm.train.common import (LossLog, psnr, restore_process_state, resume_from_latest, save_grid,
                                save_training_checkpoint, shapes_batch, tensor_to_uint8)


@dataclass
class TokenizerTrainConfig:
    out: str = "runs/tokenizer"
    data: str = ""  # tar shards of pictures (pattern or folder; `pixlm data shard`); empty = shapes scenes
    shuffle_buffer: int = 1000  # shard streaming: samples held for shuffling
    steps: int = 3000
    batch_size: int = 32  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    mixed_precision: str = "no"  # "no", "bf16" (CPU or GPU) or "fp16" (GPU)
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0
    log_every: int = 25
    ckpt_every: int = 250
    resume: bool = False
    init_from: str = ""  # start from a trained tokenizer folder (e.g. to fine-tune its decoder)
    freeze_encoder: bool = False  # keep tokens fixed (so a generator can train on them) and improve the decoder
    stop_at: int = 0  # stop after this step (0 = run to ``steps``); the LR schedule still spans ``steps``
    channels: tuple[int, ...] = (32, 64, 128, 128)
    levels: tuple[int, ...] = (8, 5, 5, 5)


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warmup then cosine decay to 5% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train_tokenizer(cfg: TokenizerTrainConfig) -> Path:
    from pixlm.train.distributed import make_accelerator

    accelerator = make_accelerator(cfg.mixed_precision, cfg.grad_accum)
    world, main = accelerator.num_processes, accelerator.is_main_process
    if str(accelerator.distributed_type).endswith("FSDP"):
        raise ValueError("the tokenizer trains with DDP (plain `accelerate launch` or --num-processes); its few "
                         "million parameters need no sharding, and FSDP is supported for the generator only")
    run = Path(cfg.out)
    if main:
        run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = VQModel.from_pretrained(cfg.init_from).train() if cfg.init_from else \
        VQModel(VQConfig(channels=cfg.channels, levels=cfg.levels))
    if cfg.freeze_encoder:
        model.encoder.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.99),
                            weight_decay=0.0)
    state = resume_from_latest(run, {"model": model}, None, accelerator) if cfg.resume else {}
    start = state.get("step", 0)
    local = cfg.batch_size * cfg.grad_accum
    stream = None
    if cfg.data:
        from pixlm.data.shards import ShardStream, looks_like_shards

        if not looks_like_shards(cfg.data):
            raise ValueError(f"data={cfg.data!r} is not a set of tar shards; the tokenizer streams shards: convert an "
                             f"imagefolder with `pixlm data shard FOLDER --out DIR` and pass DIR")
        if state and state.get("world_size", world) != world:
            raise ValueError(f"this streaming run was checkpointed with {state['world_size']} processes; resume it "
                             f"with the same number (got {world})")
        stream = iter(ShardStream(cfg.data, shuffle=cfg.shuffle_buffer, seed=cfg.seed, rank=accelerator.process_index,
                                  world_size=world, skip=start * local, size=64))
    model, opt = accelerator.prepare(model, opt)
    if state:  # after prepare, so that a sharded (FSDP) optimizer takes its own shard back
        restore_process_state(state, opt, accelerator)
    log = LossLog(run, start) if main else None
    if main:
        (run / "train_config.json").write_text(str(asdict(cfg)))
    # Held-out scenes (a seed no training step uses) to report PSNR on.
    val_images, _, _ = shapes_batch(cfg.seed + 10_000, 0, 64)
    usage = torch.zeros(accelerator.unwrap_model(model).vocab_size)  # token counts since the last log line
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, disable=not accelerator.is_main_process)
    t0 = time.time()
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
        # Each process takes its own slice of the step's batch so data order is independent of world size;
        # the slice is split into grad_accum micro-batches whose gradients add up before the optimizer step.
        if stream is None:
            images, _, _ = shapes_batch(cfg.seed, step, local * world)
            images = images.chunk(world)[accelerator.process_index].to(accelerator.device)
        else:  # each process streams its own part of the shards
            images = torch.stack([next(stream)["image"] for _ in range(local)]).to(accelerator.device)
        loss = torch.zeros((), device=accelerator.device)
        for k, micro in enumerate(images.split(cfg.batch_size)):
            sync = k == cfg.grad_accum - 1  # all-reduce gradients once, after the last micro-batch
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                recon, idx = model(micro)
                recon = recon.float()
                part = (F.mse_loss(recon, micro) + 0.5 * F.l1_loss(recon, micro)) / cfg.grad_accum
                accelerator.backward(part)
            loss += part.detach()
            usage += torch.bincount(idx.flatten().cpu(), minlength=usage.numel()).float()
        loss = accelerator.reduce(loss, "mean")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"tokenizer loss became {loss.item()} at step {step}")
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        if done % cfg.log_every == 0 and main:
            p = usage / usage.sum()
            perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
            used = float((usage > 0).float().mean())
            usage.zero_()
            row = {"step": done, "loss": loss.item(), "codebook_usage": used, "perplexity": perplexity,
                   "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - t0}
            if done % (cfg.log_every * 4) == 0:
                with torch.no_grad():
                    row["val_psnr"] = psnr(accelerator.unwrap_model(model)(val_images)[0], val_images)
            log.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", ppl=f"{perplexity:.0f}", psnr=row.get("val_psnr", ""))
        if done % cfg.ckpt_every == 0 or done == end:  # every process takes part (optimizer + RNG state)
            save_training_checkpoint(run, done, {"model": accelerator.unwrap_model(model)}, opt, {"seed": cfg.seed},
                                     accelerator=accelerator)
        if (done % cfg.ckpt_every == 0 or done == end) and main:
            with torch.no_grad():
                rec = accelerator.unwrap_model(model)(val_images[:16])[0]
            pairs = np.concatenate([tensor_to_uint8(val_images[:16]), tensor_to_uint8(rec)])
            save_grid(pairs, run / "samples.png", cols=16)
            log.plot(("loss", "perplexity", "val_psnr"))
    final = accelerator.unwrap_model(model)
    if main:
        final.save_pretrained(run / "model")
    accelerator.wait_for_everyone()
    return run / "model"
