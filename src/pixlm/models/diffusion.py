"""Latent diffusion baseline: a small ``diffusers`` ``UNet2DConditionModel`` over the FSQ code grid.

The network denoises a (d, 8, 8) grid of the tokenizer's FSQ codes (see ``pixlm.models.codes``) while
cross-attending to the text encoder's per-token states. The diffusers scheduler (DDIM or DPM-Solver++),
which owns ``set_timesteps``/``step``, is built by the sampler in ``pixlm.sampling.diffusion`` from this
config; the last step's grid is snapped to the FSQ levels and the VQ decoder makes the pixels.
``diffusers`` is the ``baselines`` extra and is imported only when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pixlm.checkpoint import Pretrained
from pixlm.models.codes import CodeGridConfig, CodeSpace, check_levels

PREDICTIONS = ("epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def require_diffusers():
    """Import ``diffusers`` or raise an ImportError that says how to install it."""
    try:
        import diffusers
    except ImportError as e:
        raise ImportError("the diffusion baseline needs diffusers: pip install 'pixlm[baselines]'") from e
    return diffusers


@dataclass
class DiffusionConfig(CodeGridConfig):
    levels: tuple[int, ...] = (8, 5, 5, 5)
    grid: int = 8
    text_dim: int = 384
    channels: tuple[int, ...] = (64, 128)  # UNet widths per resolution (grid, grid/2, ...)
    layers_per_block: int = 1
    heads: int = 4
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"

    def __post_init__(self) -> None:
        self.levels = check_levels(self.levels)
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or any(c % 8 for c in self.channels):
            raise ValueError(f"channels={self.channels}: need at least one width, each a multiple of 8")
        if self.grid % (2 ** (len(self.channels) - 1)):
            raise ValueError(f"grid={self.grid} must be divisible by 2**{len(self.channels) - 1} "
                             f"for {len(self.channels)} resolutions")
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type={self.prediction_type!r} is not one of {PREDICTIONS}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule={self.beta_schedule!r} is not one of {BETA_SCHEDULES}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps={self.num_train_timesteps} must be >= 2")


class LatentDiffusion(nn.Module, Pretrained):
    """ε- or v-prediction UNet over FSQ code grids, conditioned on per-token text states."""

    config_class = DiffusionConfig
    kind = "diffusion"

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel

        require_diffusers()
        self.config = c = config
        self.codes = CodeSpace(c.levels)
        n = len(c.channels)
        self.unet = UNet2DConditionModel(
            sample_size=c.grid, in_channels=self.codes.channels, out_channels=self.codes.channels,
            block_out_channels=c.channels, layers_per_block=c.layers_per_block,
            down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
            cross_attention_dim=c.text_dim, attention_head_dim=c.heads, norm_num_groups=8)

    def prepare_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> dict:
        return {"states": text, "mask": text_mask}

    def forward(self, x: torch.Tensor, t: torch.Tensor, prepared: dict) -> torch.Tensor:
        """Noisy grid (B, d, g, g) at timesteps t (B,) → the model output (ε or v), same shape."""
        return self.unet(x, t, encoder_hidden_states=prepared["states"],
                         encoder_attention_mask=prepared["mask"].to(x.dtype)).sample

    def make_scheduler(self, kind: str = "ddim"):
        """A fresh diffusers scheduler matching the training noise schedule (``ddim`` or ``dpmsolver``)."""
        d = require_diffusers()
        c = self.config
        common = dict(num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                      prediction_type=c.prediction_type, timestep_spacing="trailing")
        if kind == "ddim":
            return d.DDIMScheduler(clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=False, **common)
        if kind == "dpmsolver":
            return d.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, thresholding=False,
                                                 **common)
        if kind == "ddpm":
            return d.DDPMScheduler(clip_sample=True, **common)
        raise ValueError(f"scheduler={kind!r} is not one of ('ddim', 'dpmsolver', 'ddpm')")


def diffusion_loss(model: LatentDiffusion, tokens: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                   scheduler, generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between the UNet output and its target (ε or v) at uniformly drawn timesteps.

    ``scheduler`` is a DDPM scheduler from ``model.make_scheduler("ddpm")`` (it supplies ``add_noise`` and
    ``get_velocity``).
    """
    c = model.config
    x0 = model.codes.to_codes(tokens, c.grid)  # (B, d, g, g)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    t = torch.randint(0, c.num_train_timesteps, (x0.shape[0],), generator=generator, device=x0.device)
    xt = scheduler.add_noise(x0, noise, t)
    target = noise if c.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    out = model(xt, t, model.prepare_text(text, text_mask))
    return ((out - target) ** 2).mean()
