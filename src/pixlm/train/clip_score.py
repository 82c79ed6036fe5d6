"""Train the contrastive text–image scorer (:mod:`pixlm.eval.clip_score`) on an imagefolder::

    python -m pixlm.train.clip_score --data DIR/train --out runs/clip
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pixlm.checkpoint import write_json
from pixlm.eval.clip_score import ContrastiveScorer, ScorerConfig
from pixlm.text.encoder import TextEncoder, TextEncoderConfig


@dataclass
class ScorerTrainConfig:
    data: str = "data/emoji/train"  # an imagefolder; rows sharing a file_name are captions of one picture
    out: str = "runs/clip"
    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    text_encoder: str = "minilm"
    log_every: int = 50


def train_scorer(cfg: ScorerTrainConfig) -> Path:
    """Train a ContrastiveScorer on ``cfg.data``; writes ``out/model`` and ``out/log.jsonl``."""
    from pixlm.data.folder import ImageFolder
    from pixlm.train.tokenizer import lr_at

    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "train_config.json", asdict(cfg))
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
    batch = min(cfg.batch_size, len(files))
    t0 = time.time()
    with open(out / "log.jsonl", "w") as log:
        for step in range(cfg.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg.lr, min(100, cfg.steps // 10), cfg.steps)
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            pick = torch.randperm(len(files), generator=gen)[:batch]  # distinct pictures: no false negatives
            rows = [caps_of[files[p]][int(torch.randint(len(caps_of[files[p]]), (1,), generator=gen))]
                    for p in pick.tolist()]
            x = images[pick]
            flip = torch.rand(batch, generator=gen) < 0.5  # mirrored emoji are still the same thing
            x[flip] = x[flip].flip(-1)
            img = model.embed_images(x)
            txt = model.embed_pooled_text(pooled[rows])
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B)
            target = torch.arange(batch)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            if not torch.isfinite(loss):
                raise FloatingPointError(f"scorer loss became {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                acc = float((logits.argmax(1) == target).float().mean())
                log.write(f'{{"step": {step + 1}, "loss": {loss.item():.4f}, "batch_top1": {acc:.3f}, '
                          f'"elapsed_s": {time.time() - t0:.1f}}}\n')
                log.flush()
    model.eval()
    model.save_pretrained(out / "model")
    return out / "model"



def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in ScorerTrainConfig.__dataclass_fields__.values():
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    print(train_scorer(ScorerTrainConfig(**vars(ap.parse_args(argv)))))


if __name__ == "__main__":
    main()
