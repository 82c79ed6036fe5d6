"""What the GAN, VAE and diffusion baselines share: the continuous FSQ code space and a pooled text vector.

The baselines generate in the tokenizer's latent space: a (d, 8, 8) grid of FSQ codes (d = number of FSQ
levels, 4 for the 1000-code tokenizer), each channel a real number that the tokenizer would round to one of
its levels. ``CodeSpace.to_tokens`` snaps a generated grid to the nearest levels and returns the token ids,
so every generator family ends in the same VQ decoder and the comparison isolates the generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from pixlm.models.layers import Attention
from pixlm.models.vq import FSQ


def check_levels(levels: tuple[int, ...]) -> tuple[int, ...]:
    """Validate FSQ levels (each >= 2) and return them as a tuple of ints."""
    levels = tuple(int(v) for v in levels)
    if not levels or any(v < 2 for v in levels):
        raise ValueError(f"levels={levels}: need at least one FSQ level, each >= 2")
    return levels


class CodeGridConfig:
    """Mixin for baseline configs with ``levels`` and ``grid``: the token vocabulary and grid size they imply."""

    levels: tuple[int, ...]
    grid: int

    @property
    def vocab_size(self) -> int:
        return math.prod(self.levels)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid


class CodeSpace(nn.Module):
    """Token ids ↔ FSQ code grids. Holds no weights (its buffers are not saved)."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = check_levels(levels)
        self.fsq = FSQ(self.levels)

    @property
    def channels(self) -> int:
        return len(self.levels)

    @property
    def vocab_size(self) -> int:
        return math.prod(self.levels)

    def to_codes(self, tokens: torch.Tensor, grid: int) -> torch.Tensor:
        """(B, N) or (B, h, w) token ids → (B, d, h, w) codes in [-1, 1]."""
        return self.fsq.indices_to_codes(tokens.long().view(-1, grid, grid))

    def snap(self, codes: torch.Tensor) -> torch.Tensor:
        """Round each channel to its nearest FSQ level (values outside the range clamp to the end levels)."""
        half = (self.fsq.levels // 2).view(1, -1, 1, 1)
        top = (self.fsq.levels - 1).view(1, -1, 1, 1)
        digits = torch.minimum(torch.clamp((codes * half + half).round(), min=0), top)
        return (digits - half) / half

    def snap_ste(self, codes: torch.Tensor) -> torch.Tensor:
        """``snap`` in the forward pass, identity in the backward pass (straight-through)."""
        return codes + (self.snap(codes) - codes).detach()

    def to_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) continuous codes → (B, h·w) token ids of the nearest levels."""
        return self.fsq.codes_to_indices(self.snap(codes)).flatten(1)


class TextPool(nn.Module):
    """Attention pooling: ``queries`` learned vectors attend over the text states → one vector (B, out_dim)."""

    def __init__(self, text_dim: int, out_dim: int, queries: int = 4, heads: int = 4, width: int = 128) -> None:
        super().__init__()
        if queries < 1:
            raise ValueError(f"queries={queries} must be >= 1")
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.02)
        self.attn = Attention(width, heads, context_dim=text_dim)
        self.mean_proj = nn.Linear(text_dim, width)  # the masked mean keeps a direct path to every word
        self.out = nn.Sequential(nn.LayerNorm(width * (queries + 1)), nn.Linear(width * (queries + 1), out_dim),
                                 nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b = states.shape[0]
        q = self.queries.expand(b, -1, -1)  # (B, Q, W)
        pooled = self.attn(q, context=states, mask=mask)  # (B, Q, W)
        m = mask.unsqueeze(-1).to(states.dtype)
        mean = (states * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, Dt)
        return self.out(torch.cat([pooled.flatten(1), self.mean_proj(mean)], dim=1))  # (B, out_dim)
