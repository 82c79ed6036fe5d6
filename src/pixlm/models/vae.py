"""Conditional VAE baseline: q(z | codes, text) and p(codes | z, text) over the tokenizer's FSQ code grid.

Generation draws z ~ N(0, t²·I) (``t`` = temperature) and decodes it with the pooled text vector in one
forward pass; the grid is snapped to the FSQ levels and the VQ decoder makes the pixels. The likelihood is
Gaussian in *level units* (each channel's code times half its level count), so an error of one level costs
the same in every channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.checkpoint import Pretrained
from pixlm.models.codes import CodeGridConfig, CodeSpace, TextPool, check_levels
from pixlm.models.gan import FiLMBlock


@dataclass
class VAEConfig(CodeGridConfig):
    levels: tuple[int, ...] = (8, 5, 5, 5)
    grid: int = 8
    text_dim: int = 384
    z_dim: int = 64
    dim: int = 192
    cond_dim: int = 192
    pool_queries: int = 4
    sigma: float = 0.5  # likelihood std, in FSQ levels
    beta: float = 1.0  # KL weight

    def __post_init__(self) -> None:
        self.levels = check_levels(self.levels)
        if self.grid < 4 or self.grid % 4:
            raise ValueError(f"grid={self.grid} must be a multiple of 4")
        if self.sigma <= 0 or self.beta < 0:
            raise ValueError(f"sigma={self.sigma} must be > 0 and beta={self.beta} >= 0")


class ConditionalVAE(nn.Module, Pretrained):
    config_class = VAEConfig
    kind = "vae"

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = c = config
        self.codes = CodeSpace(c.levels)
        d, s = self.codes.channels, c.grid // 2
        self.pool = TextPool(c.text_dim, c.cond_dim, c.pool_queries)
        # encoder: codes (B, d, g, g) → (B, C, g/2, g/2) → mean and log-variance of z
        self.enc = nn.Sequential(nn.Conv2d(d, c.dim, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(c.dim, c.dim, 4, stride=2, padding=1), nn.SiLU())
        self.enc_fc = nn.Sequential(nn.Linear(c.dim * s * s + c.cond_dim, 2 * c.dim), nn.SiLU(),
                                    nn.Linear(2 * c.dim, 2 * c.z_dim))
        # decoder: as the GAN generator, (z, text) → codes
        self.dec_fc = nn.Linear(c.z_dim + c.cond_dim, c.dim * s * s)
        self.low = FiLMBlock(c.dim, c.cond_dim)
        self.up = nn.ConvTranspose2d(c.dim, c.dim, 4, stride=2, padding=1)
        self.high = nn.ModuleList(FiLMBlock(c.dim, c.cond_dim) for _ in range(2))
        self.out = nn.Conv2d(c.dim, d, 3, padding=1)

    def prepare_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> dict:
        return {"pooled": self.pool(text, text_mask)}

    def encode(self, codes: torch.Tensor, prepared: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """codes (B, d, g, g) → posterior mean and log-variance, each (B, z_dim)."""
        h = self.enc(codes).flatten(1)
        mu, logvar = self.enc_fc(torch.cat([h, prepared["pooled"]], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor, prepared: dict) -> torch.Tensor:
        """z (B, z_dim) → code grid (B, d, g, g) (unbounded; snapped by the sampler)."""
        c = prepared["pooled"]
        s = self.config.grid // 2
        h = F.relu(self.dec_fc(torch.cat([z, c], dim=1)).view(-1, self.config.dim, s, s))
        h = self.low(h, c)
        h = F.relu(self.up(h))
        for blk in self.high:
            h = blk(h, c)
        return self.out(h)

    def generate_codes(self, z: torch.Tensor, prepared: dict) -> torch.Tensor:
        """Prior sample z (B, z_dim) + prepared text → code grid; what the samplers call."""
        return self.decode(z, prepared)

    def noise(self, batch: int, generator: torch.Generator | None = None, scale: float = 1.0) -> torch.Tensor:
        """Prior noise (B, z_dim) scaled by ``scale`` (the sampling temperature)."""
        dev = self.out.weight.device
        return torch.randn(batch, self.config.z_dim, generator=generator, device=dev) * scale


def vae_loss(model: ConditionalVAE, tokens: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative ELBO per image (Gaussian likelihood in level units + β·KL) and its parts for logging."""
    c = model.config
    x = model.codes.to_codes(tokens, c.grid)  # (B, d, g, g)
    prepared = model.prepare_text(text, text_mask)
    mu, logvar = model.encode(x, prepared)
    z = mu + torch.randn(mu.shape, generator=generator, device=mu.device) * (0.5 * logvar).exp()
    recon = model.decode(z, prepared)
    half = (model.codes.fsq.levels // 2).view(1, -1, 1, 1)
    nll = 0.5 * (((recon - x) * half) ** 2).sum(dim=(1, 2, 3)).mean() / c.sigma**2
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1).mean()
    return nll + c.beta * kl, {"nll": nll.item(), "kl": kl.item()}
