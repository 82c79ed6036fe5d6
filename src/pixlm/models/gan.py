"""Text-conditional GAN baseline: a DCGAN-style generator and a projection discriminator (Miyato & Koyama, 2018).

Both work in the tokenizer's FSQ code space (see ``pixlm.models.codes``): the generator maps noise and a
pooled text vector to a (d, 8, 8) code grid in one forward pass; the VQ decoder turns it into pixels. Fake
grids are snapped to the FSQ levels (straight-through) before the discriminator sees them, so it cannot
tell real from fake by the mere fact that real codes sit exactly on the levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from pixlm.checkpoint import Pretrained
from pixlm.models.codes import CodeGridConfig, CodeSpace, TextPool, check_levels


@dataclass
class GANConfig(CodeGridConfig):
    levels: tuple[int, ...] = (8, 5, 5, 5)  # the tokenizer's FSQ levels; vocab_size = their product
    grid: int = 8
    text_dim: int = 384
    z_dim: int = 64
    dim: int = 192  # feature channels
    cond_dim: int = 192  # pooled text vector
    pool_queries: int = 4

    def __post_init__(self) -> None:
        self.levels = check_levels(self.levels)
        if self.grid < 4 or self.grid % 4:
            raise ValueError(f"grid={self.grid} must be a multiple of 4 (the generator starts at grid/2)")
        for name in ("z_dim", "dim", "cond_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


class FiLMBlock(nn.Module):
    """conv → GroupNorm modulated by the condition (scale, shift) → ReLU, with a residual path."""

    def __init__(self, ch: int, cond_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.norm = nn.GroupNorm(8, ch, affine=False)
        self.film = nn.Linear(cond_dim, 2 * ch)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(c)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return x + F.relu(self.norm(self.conv(x)) * (1 + scale) + shift)


class GANGenerator(nn.Module, Pretrained):
    """(noise, text) → FSQ code grid (B, d, grid, grid) in [-1, 1]."""

    config_class = GANConfig
    kind = "gan"

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = c = config
        self.codes = CodeSpace(c.levels)
        self.pool = TextPool(c.text_dim, c.cond_dim, c.pool_queries)
        s = c.grid // 2
        self.fc = nn.Linear(c.z_dim + c.cond_dim, c.dim * s * s)
        self.low = FiLMBlock(c.dim, c.cond_dim)  # grid/2 × grid/2
        self.up = nn.ConvTranspose2d(c.dim, c.dim, 4, stride=2, padding=1)  # → grid × grid
        self.high = nn.ModuleList(FiLMBlock(c.dim, c.cond_dim) for _ in range(2))
        self.out = nn.Conv2d(c.dim, self.codes.channels, 3, padding=1)

    def prepare_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> dict:
        """The pooled text vector, once per generation."""
        return {"pooled": self.pool(text, text_mask)}

    def forward(self, z: torch.Tensor, prepared: dict) -> torch.Tensor:
        c = prepared["pooled"]  # (B, cond_dim)
        s = self.config.grid // 2
        h = self.fc(torch.cat([z, c], dim=1)).view(-1, self.config.dim, s, s)  # (B, C, g/2, g/2)
        h = self.low(F.relu(h), c)
        h = F.relu(self.up(h))  # (B, C, g, g)
        for blk in self.high:
            h = blk(h, c)
        return torch.tanh(self.out(h))  # (B, d, g, g)

    def generate_codes(self, z: torch.Tensor, prepared: dict) -> torch.Tensor:
        """Noise (B, z_dim) + prepared text → code grid (B, d, g, g); what the samplers call."""
        return self(z, prepared)

    def noise(self, batch: int, generator: torch.Generator | None = None, scale: float = 1.0) -> torch.Tensor:
        """Latent noise (B, z_dim); ``scale`` < 1 is the truncation trick."""
        dev = self.fc.weight.device
        return torch.randn(batch, self.config.z_dim, generator=generator, device=dev) * scale


class GANDiscriminator(nn.Module, Pretrained):
    """Projection discriminator: score = ψ(φ(x)) + ⟨W·text, φ(x)⟩, spectral-normalised convolutions."""

    config_class = GANConfig
    kind = "gan_discriminator"

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = c = config
        d = len(c.levels)
        self.pool = TextPool(c.text_dim, c.cond_dim, c.pool_queries)
        self.convs = nn.ModuleList([
            spectral_norm(nn.Conv2d(d, c.dim, 3, padding=1)),
            spectral_norm(nn.Conv2d(c.dim, c.dim, 3, padding=1)),
            spectral_norm(nn.Conv2d(c.dim, c.dim, 4, stride=2, padding=1)),  # → grid/2
            spectral_norm(nn.Conv2d(c.dim, c.dim, 3, padding=1)),
        ])
        self.psi = spectral_norm(nn.Linear(c.dim, 1))
        self.embed = spectral_norm(nn.Linear(c.cond_dim, c.dim, bias=False))

    def forward(self, codes: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        h = codes  # (B, d, g, g)
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        phi = h.sum(dim=(2, 3))  # (B, C)
        c = self.pool(text, text_mask)
        return self.psi(phi).squeeze(1) + (self.embed(c) * phi).sum(1)  # (B,)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss on real and fake scores."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss on fake scores."""
    return -fake.mean()
