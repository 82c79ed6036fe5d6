"""A small contrastive text–image model (a CLIP analogue) trained on an imagefolder, and the scores it gives.

ImageNet Inception and OpenAI CLIP weights cannot be downloaded here, and neither knows 64×64 emoji anyway.
So the yardstick is trained on the data's own training split: a tiny CNN image tower and the frozen MiniLM
text states (mean-pooled over real tokens) through a small MLP, both projected to a shared unit sphere and
trained with the symmetric InfoNCE loss. It gives

* ``retrieval``: text → image top-k accuracy (each caption must find its own picture among the set);
* ``clip_score``: 100 · max(cos(image, text), 0), the CLIPScore form, for generated or real pictures;
* ``features``: the image tower's pooled features, for a Fréchet distance (``pixlm.eval.fid.frechet_distance``).

Figures from it compare models scored with the same scorer only.

Train one with ``python -m pixlm.train.clip_score --data DIR/train --out runs/clip``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from pixlm.checkpoint import Pretrained
from pixlm.text.encoder import TextEncoder, TextEncoderConfig


@dataclass
class ScorerConfig:
    channels: tuple[int, ...] = (32, 64, 128, 192)  # one stride-2 conv block each: 64 → 4 pixels
    text_dim: int = 384  # MiniLM's hidden size
    text_hidden: int = 384
    embed_dim: int = 128
    text_encoder: str = "minilm"  # "minilm" or "tiny" (tests); the encoder stays frozen


class ContrastiveScorer(nn.Module, Pretrained):
    """Image tower (CNN) and text head (MLP over pooled frozen text states) into one embedding space."""

    config_class = ScorerConfig
    kind = "clip_score"

    def __init__(self, config: ScorerConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 3
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.image_tower = nn.Sequential(*layers)
        self.image_proj = nn.Linear(c_in, config.embed_dim)
        self.text_head = nn.Sequential(nn.Linear(config.text_dim, config.text_hidden), nn.GELU(),
                                       nn.Linear(config.text_hidden, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self._text: TextEncoder | None = None

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, C) pooled image-tower features (for Fréchet distances)."""
        return self.image_tower(images).mean(dim=(2, 3))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.features(images)), dim=-1)  # (B, E)

    def embed_pooled_text(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_head(pooled), dim=-1)  # (B, E)

    def text_encoder(self) -> TextEncoder:
        if self._text is None:
            self._text = TextEncoder(TextEncoderConfig(type=self.config.text_encoder))
        return self._text

    @torch.no_grad()
    def pooled_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Mean of the frozen encoder's states over real tokens: (B, text_dim)."""
        enc = self.text_encoder()
        out = []
        for i in range(0, len(texts), batch_size):
            states, mask = enc.encode(texts[i:i + batch_size], use_cache=False)
            m = mask.unsqueeze(-1).float()
            out.append((states * m).sum(1) / m.sum(1).clamp(min=1))
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.embed_pooled_text(self.pooled_text(texts))


def pil_to_tensor(images: list[Image.Image], size: int = 64) -> torch.Tensor:
    """PIL images → (B, 3, size, size) in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)
                               if im.size != (size, size) else im.convert("RGB")) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@torch.no_grad()
def embed_images(model: ContrastiveScorer, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([model.embed_images(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def image_features(model: ContrastiveScorer, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    return torch.cat([model.features(images[i:i + batch_size])
                      for i in range(0, len(images), batch_size)]).numpy()


def retrieval(text_emb: torch.Tensor, image_emb: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Text → image top-k accuracy: row i of ``text_emb`` should rank row i of ``image_emb`` among the top k.

    Ties count against the query (its image must score strictly higher than every image outside the top k).
    """
    if text_emb.shape != image_emb.shape:
        raise ValueError(f"need one text per image, got {tuple(text_emb.shape)} and {tuple(image_emb.shape)}")
    sims = text_emb @ image_emb.T  # (N, N)
    own = sims.diagonal().unsqueeze(1)
    rank = (sims >= own).sum(1) - 1  # images scoring at least as high as the right one, itself excluded
    out = {f"top{k}": float((rank < k).float().mean()) for k in ks}
    out["n"] = int(len(sims))
    out.update({f"chance_top{k}": min(1.0, k / len(sims)) for k in ks})
    return out


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Mean CLIPScore 100 · max(cos, 0) over matched (image, text) rows."""
    return float((100 * (image_emb * text_emb).sum(-1).clamp(min=0)).mean())


BUNDLED_SCORER = "emoji-clip"  # the scorer trained with the bundled emoji model, in pixlm/assets


def load_scorer(path: str | Path | None = None) -> ContrastiveScorer:
    """A scorer folder, or ``None`` for the bundled emoji scorer."""
    if path is None:
        from importlib import resources

        path = Path(str(resources.files("pixlm") / "assets" / BUNDLED_SCORER))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"the bundled emoji scorer is not installed at {path}; train one with "
                                    "`python -m pixlm.train.emoji` (WORK/clip_score/model) and pass its folder")
    return ContrastiveScorer.from_pretrained(path)
