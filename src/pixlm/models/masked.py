"""Masked image-token transformer (MaskGIT/Muse): predicts every masked token of the grid at once.

Bidirectional self-attention over the h×w image tokens; the prompt enters either by cross-attention to the
text encoder's per-token states (``conditioning="cross"``) or as a prefix of projected text states that the
image tokens attend to (``"prefix"``). The sampling loop lives in ``pixlm.sampling.maskgit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.checkpoint import Pretrained
from pixlm.models.layers import Block, init_weights, resolve_prepared

CONDITIONINGS = ("cross", "prefix")


@dataclass
class MaskedConfig:
    vocab_size: int = 1000  # image codes; the mask token is ``vocab_size``
    grid: int = 8
    dim: int = 192
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 384
    conditioning: str = "cross"

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={self.conditioning!r} is not one of {CONDITIONINGS}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def mask_id(self) -> int:
        return self.vocab_size


class MaskedTransformer(nn.Module, Pretrained):
    config_class = MaskedConfig
    kind = "masked"

    def __init__(self, config: MaskedConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size + 1, c.dim)
        self.pos_emb = nn.Parameter(torch.randn(c.num_tokens, c.dim) * 0.02)
        cross = c.conditioning == "cross"
        if not cross:
            self.text_proj = nn.Linear(c.text_dim, c.dim)
            self.text_pos = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, c.text_dim if cross else None)
                                    for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size)
        self.apply(init_weights)

    def prepare_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> dict:
        """Work that depends only on the prompt, done once per generation rather than once per step: per layer
        the cross-attention's prepared text (keys and values, or what its processor keeps), or the projected prefix."""
        if self.config.conditioning == "cross":
            return {"kv": [blk.cross_attn.prepare_context(text) for blk in self.blocks], "mask": text_mask}
        return {"prefix": self.text_proj(text) + self.text_pos, "mask": text_mask}

    def forward(self, tokens: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                prepared: dict | None = None) -> torch.Tensor:
        """tokens (B, N) with ``mask_id`` at masked places → logits (B, N, vocab_size).

        Split in two so that samplers can guide the final hidden states and run the head once (exact: the head
        is affine and guidance's weights sum to 1)."""
        return self.head_logits(self.hidden(tokens, text, text_mask, prepared))

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, N, C) → logits (B, N, vocab_size)."""
        return self.head(h)

    def hidden(self, tokens: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
               prepared: dict | None = None) -> torch.Tensor:
        """tokens (B, N) → final (normalised) hidden states (B, N, C), the head's input."""
        prepared = resolve_prepared(self, text, text_mask, prepared)
        x = self.tok_emb(tokens) + self.pos_emb  # (B, N, C)
        n = x.shape[1]
        if self.config.conditioning == "cross":
            for blk, kv in zip(self.blocks, prepared["kv"]):
                x = blk(x, text_kv=kv, text_mask=prepared["mask"])
        else:
            x = torch.cat([prepared["prefix"], x], dim=1)  # (B, T + N, C)
            full = torch.cat([prepared["mask"], prepared["mask"].new_ones(x.shape[0], n)], dim=1)
            for blk in self.blocks:
                x = blk(x, self_mask=full)
            x = x[:, -n:]
        return self.norm(x)


def cosine_mask_ratio(r: torch.Tensor) -> torch.Tensor:
    """MaskGIT's cosine schedule: the fraction of tokens still masked at progress ``r`` in [0, 1]."""
    return torch.cos(r * math.pi / 2)


def random_token_mask(b: int, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, N) bool: True on a cosine-scheduled random fraction (at least one) of each row's positions."""
    r = torch.rand(b, generator=generator, device=device)
    n_mask = (cosine_mask_ratio(r) * n).ceil().clamp(1, n)  # (B,)
    scores = torch.rand(b, n, generator=generator, device=device)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a random permutation rank per position
    return ranks < n_mask[:, None]


def masked_token_loss(model: MaskedTransformer, tokens: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                      generator: torch.Generator | None = None, label_smoothing: float = 0.1) -> torch.Tensor:
    """Mask a cosine-scheduled random fraction of each row and score the model on the masked tokens."""
    masked = random_token_mask(*tokens.shape, generator=generator, device=tokens.device)  # (B, N)
    inp = tokens.masked_fill(masked, model.config.mask_id)
    logits = model(inp, text, text_mask)
    return F.cross_entropy(logits[masked], tokens[masked], label_smoothing=label_smoothing)
