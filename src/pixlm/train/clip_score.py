"""Train the contrastive text–image scorer (:mod:`pixlm.eval.clip_score`) on an imagefolder::

    python -m pixlm.train.clip_score --data DIR/train --out runs/clip

Training runs in ``pixlm.train.loop.TrainLoop``: ``OUT`` holds the checkpoints and ``log.jsonl`` (``--resume``
continues from the newest checkpoint) and the finished scorer in ``OUT/model``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from pixlm.eval.clip_score import ContrastiveScorer, ScorerConfig
from pixlm.text.encoder import TextEncoder, TextEncoderConfig
from pixlm.train.common import config_parser, step_generator
from pixlm.train.loop import TrainLoop


@dataclass
class ScorerTrainConfig:
    data: str = "data/emoji/train"  # an imagefolder; rows sharing a file_name are captions of one picture
    out: str = "runs/clip"
    steps: int = 800
    warmup: int = -1  # -1: a tenth of the steps, at most 100
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    text_encoder: str = "minilm"
    log_every: int = 50
    ckpt_every: int = 200
    resume: bool = False


def train_scorer(cfg: ScorerTrainConfig) -> Path:
    """Train (or resume) a ContrastiveScorer on ``cfg.data``; writes ``out/model`` and ``out/log.jsonl``."""
    from pixlm.data.folder import ImageFolder

    if cfg.warmup < -1:
        raise ValueError(f"warmup={cfg.warmup} must be a number of steps (>= 0) or -1 for a tenth of the steps")
    loop = TrainLoop(replace(cfg, warmup=min(100, cfg.steps // 10)) if cfg.warmup == -1 else cfg)
    if loop.accelerator.num_processes > 1:  # the step calls the scorer's own methods, which DDP does not synchronise
        raise ValueError(f"the scorer trains on one process (got {loop.accelerator.num_processes}); run it without "
                         "`accelerate launch` or torchrun")
    folder = ImageFolder(cfg.data, size=64)
    files = list(dict.fromkeys(r.file_name for r in folder.rows))
    first = {}
    for i, r in enumerate(folder.rows):
        first.setdefault(r.file_name, i)
    images = torch.stack([folder[first[f]]["image"] for f in files])  # (P, 3, 64, 64)
    caps_of = {f: [] for f in files}
    for i, r in enumerate(folder.rows):
        caps_of[r.file_name].append(i)
    if len(files) < 2:
        raise ValueError(f"{cfg.data} has {len(files)} distinct pictures; contrastive training needs at least 2")
    text = TextEncoder(TextEncoderConfig(type=cfg.text_encoder))
    model = ContrastiveScorer(ScorerConfig(text_dim=text.dim, text_encoder=cfg.text_encoder))
    model._text = text
    pooled = model.pooled_text([r.text for r in folder.rows])  # every caption once, frozen encoder
    opt = torch.optim.AdamW([p for p in model.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    loop.prepare({"model": model}, opt)
    raw = loop.unwrap("model")
    device = loop.accelerator.device
    batch = min(cfg.batch_size, len(files))
    target = torch.arange(batch, device=device)

    def step_fn(step: int) -> dict:
        gen = step_generator(cfg.seed, step)
        pick = torch.randperm(len(files), generator=gen)[:batch]  # distinct pictures: no false negatives
        rows = [caps_of[files[p]][int(torch.randint(len(caps_of[files[p]]), (1,), generator=gen))]
                for p in pick.tolist()]
        x = images[pick]
        flip = torch.rand(batch, generator=gen) < 0.5  # mirrored emoji are still the same thing
        x[flip] = x[flip].flip(-1)
        img = raw.embed_images(x.to(device))
        txt = raw.embed_pooled_text(pooled[rows].to(device))
        logits = raw.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        loop.accelerator.backward(loss)
        return {"loss": loss.detach(), "batch_top1": float((logits.argmax(1) == target).float().mean())}

    loop.fit(step_fn)
    loop.finish(lambda: raw.eval().save_pretrained(loop.run / "model"))
    return loop.run / "model"


def main(argv: list[str] | None = None) -> None:
    ap = config_parser(ScorerTrainConfig, __doc__)
    print(train_scorer(ScorerTrainConfig(**vars(ap.parse_args(argv)))))


if __name__ == "__main__":
    main()
