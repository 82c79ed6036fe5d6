"""Diffusion sampling for the latent baseline: a diffusers scheduler (DDIM or DPM-Solver++) owns the loop.

Start from Gaussian noise on the (d, 8, 8) FSQ code grid, run ``num_inference_steps`` denoising steps with
classifier-free guidance (conditional and unconditional rows in one batched UNet call), then snap the grid
to the FSQ levels and return token ids. Randomness comes only from the seeded generators (one, or one per row:
row i's starting noise then comes only from generator i, see ``pixlm.sampling.randomness``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pixlm.sampling.cfg import concat_prepared, guide
from pixlm.sampling.randomness import Generators, randn_rows

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step, total, tokens (B, N) of the current estimate)
SCHEDULERS = ("ddim", "dpmsolver")


@dataclass
class DiffusionSampler:
    num_inference_steps: int = 25
    guidance_scale: float = 3.0
    scheduler: str = "ddim"

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler={self.scheduler!r} is not one of {SCHEDULERS}")
        if not isinstance(self.num_inference_steps, int) or self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps={self.num_inference_steps!r} must be an integer >= 1")

    @torch.no_grad()
    def sample(self, model, cond: dict, uncond: dict | None, batch: int, generator: Generators = None,
               callback: StepCallback | None = None) -> torch.Tensor:
        """Generate (B, N) tokens. ``cond``/``uncond`` come from ``model.prepare_text`` (uncond may be None)."""
        c = model.config
        if self.num_inference_steps > c.num_train_timesteps:
            raise ValueError(f"num_inference_steps={self.num_inference_steps} exceeds the model's "
                             f"{c.num_train_timesteps} training timesteps")
        sched = model.make_scheduler(self.scheduler)
        sched.set_timesteps(self.num_inference_steps)
        device = next(model.parameters()).device
        use_cfg = uncond is not None and self.guidance_scale != 1.0
        both = concat_prepared(cond, uncond) if use_cfg else cond
        x = randn_rows(generator, batch, (model.codes.channels, c.grid, c.grid), device)
        x = x * sched.init_noise_sigma  # (B, d, g, g)
        steps = len(sched.timesteps)
        for i, t in enumerate(sched.timesteps):
            inp = torch.cat([x, x]) if use_cfg else x
            inp = sched.scale_model_input(inp, t)
            out = model(inp, t.expand(inp.shape[0]).to(device), both)
            if use_cfg:
                out = guide(*out.chunk(2), self.guidance_scale)
            res = sched.step(out, t, x, generator=generator)  # (diffusers takes a list too: one per row)
            x = res.prev_sample
            if callback is not None:
                est = getattr(res, "pred_original_sample", None)
                callback(i, steps, model.codes.to_tokens(x if est is None else est))
        return model.codes.to_tokens(x)
