"""Train the FSQ image tokenizer on shapes scenes rendered on the fly, or on pictures streamed from tar shards.

Its step function runs in ``pixlm.train.loop.TrainLoop``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixlm.models.vq import VQConfig, VQModel
from pixlm.train.common import psnr, save_grid, shapes_batch, tensor_to_uint8
from pixlm.train.loop import TrainLoop


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
    res_blocks: int = 1  # residual blocks per resolution


def train_tokenizer(cfg: TokenizerTrainConfig) -> Path:
    """Train (or resume) a tokenizer; returns ``OUT/model``."""
    loop = TrainLoop(cfg, cfg.mixed_precision, cfg.grad_accum)
    accelerator = loop.accelerator
    world, rank = accelerator.num_processes, accelerator.process_index
    if loop.fsdp:
        raise ValueError("the tokenizer trains with DDP (plain `accelerate launch` or --num-processes); its few "
                         "million parameters need no sharding, and FSDP is supported for the generator only")
    model = VQModel.from_pretrained(cfg.init_from).float().train() if cfg.init_from else \
        VQModel(VQConfig(channels=cfg.channels, levels=cfg.levels, res_blocks=cfg.res_blocks))
    if cfg.freeze_encoder:
        model.encoder.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.99),
                            weight_decay=0.0)
    if cfg.data:
        from pixlm.data.shards import ShardStream, looks_like_shards

        if not looks_like_shards(cfg.data):
            raise ValueError(f"data={cfg.data!r} is not a set of tar shards; the tokenizer streams shards: convert an "
                             f"imagefolder with `pixlm data shard FOLDER --out DIR` and pass DIR")
    (model,) = loop.prepare({"model": model}, opt, same_world=bool(cfg.data))
    raw = loop.unwrap("model")
    local = cfg.batch_size * cfg.grad_accum
    stream = iter(ShardStream(cfg.data, shuffle=cfg.shuffle_buffer, seed=cfg.seed, rank=rank, world_size=world,
                              skip=loop.start * local, size=64)) if cfg.data else None
    val_images, _, _ = shapes_batch(cfg.seed + 10_000, 0, 64)  # held-out scenes (a seed no step uses) for PSNR
    usage = torch.zeros(raw.vocab_size)  # token counts since the last log line

    def step_fn(step: int) -> dict:
        # Each process takes its own slice of the step's batch so data order is independent of world size;
        # the slice is split into grad_accum micro-batches whose gradients add up before the optimizer step.
        if stream is None:
            images, _, _ = shapes_batch(cfg.seed, step, local * world)
            images = images.chunk(world)[rank].to(accelerator.device)
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
            usage.add_(torch.bincount(idx.flatten().cpu(), minlength=usage.numel()).float())
        return {"loss": accelerator.reduce(loss, "mean")}

    def codebook(done: int) -> dict:
        """Share of codes used since the last log line and the perplexity of their distribution."""
        p = usage / usage.sum()
        row = {"codebook_usage": float((usage > 0).float().mean()),
               "perplexity": float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))}
        usage.zero_()
        return row

    @torch.no_grad()
    def evaluate(done: int) -> dict:
        return {"val_psnr": psnr(raw(val_images)[0], val_images)}

    @torch.no_grad()
    def samples(done: int) -> None:
        rec = raw(val_images[:16])[0]
        save_grid(np.concatenate([tensor_to_uint8(val_images[:16]), tensor_to_uint8(rec)]), loop.run / "samples.png",
                  cols=16)

    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
    loop.fit(step_fn, end=end, log_extra=codebook, evaluate=evaluate, eval_every=cfg.log_every * 4,
             on_checkpoint=samples, plot=("loss", "perplexity", "val_psnr"))
    loop.finish(lambda: raw.save_pretrained(loop.run / "model"))
    return loop.run / "model"
