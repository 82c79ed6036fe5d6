"""One-forward sampling for the GAN and VAE baselines: noise + pooled text → code grid → token ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pixlm.sampling.randomness import Generators, randn_rows

StepCallback = Callable[[int, int, torch.Tensor], None]


@dataclass
class OneShotSampler:
    """``temperature`` scales the latent noise (values below 1 are the truncation trick; 0 gives the mode)."""

    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 10.0:
            raise ValueError(f"temperature={self.temperature} must be in [0, 10]")

    @torch.no_grad()
    def sample(self, model, cond: dict, uncond: dict | None = None, batch: int = 1,
               generator: Generators = None, callback: StepCallback | None = None) -> torch.Tensor:
        """Generate (B, N) tokens in one generator forward. ``uncond`` is unused (no guidance in one shot).
        ``generator``: one, or one per row (row i's noise then comes only from ``generator[i]``)."""
        device = next(model.parameters()).device
        z = randn_rows(generator, batch, (model.config.z_dim,), device) * self.temperature  # (B, z_dim)
        tokens = model.codes.to_tokens(model.generate_codes(z, cond))  # (B, N)
        if callback is not None:
            callback(0, 1, tokens)
        return tokens
