"""Train the latent diffusion baseline on the shared pool (a small diffusers UNet on FSQ code grids)::

    python -m pixlm.train.diffusion --out runs/baselines/diffusion --pool runs/generator/pool.safetensors \\
        --vq runs/tokenizer/model --max-minutes 8

The loop is ``pixlm.train.pool.train_likelihood_model``; the result is ``OUT/pipeline``
(``"generator": "diffusion"``). Needs ``diffusers`` (``pip install 'pixlm[baselines]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pixlm.models.diffusion import DiffusionConfig, LatentDiffusion, diffusion_loss
from pixlm.train.common import config_parser
from pixlm.train.pool import PoolTrainConfig, train_likelihood_model


@dataclass
class DiffusionTrainConfig(PoolTrainConfig):
    out: str = "runs/baselines/diffusion"
    lr: float = 5e-4
    weight_decay: float = 0.0
    channels: tuple[int, ...] = (64, 128)
    layers_per_block: int = 1
    heads: int = 4
    prediction_type: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"
    guidance_scale: float = 3.0  # pipeline defaults written with the model
    num_inference_steps: int = 25
    scheduler: str = "ddim"


def train_diffusion(cfg: DiffusionTrainConfig) -> Path:
    """Train, then write ``OUT/pipeline``; returns its path."""
    noise_schedule: list = []

    def build(vq, text) -> LatentDiffusion:
        model = LatentDiffusion(DiffusionConfig(levels=vq.config.levels, grid=vq.config.grid, text_dim=text.dim,
                                                channels=cfg.channels, layers_per_block=cfg.layers_per_block,
                                                heads=cfg.heads, prediction_type=cfg.prediction_type,
                                                beta_schedule=cfg.beta_schedule))
        noise_schedule.append(model.make_scheduler("ddpm"))  # add_noise / get_velocity for the loss
        return model

    def loss(model, tokens, states, mask, gen):
        return diffusion_loss(model, tokens, states, mask, noise_schedule[0], gen)

    defaults = {"num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale,
                "temperature": 1.0, "scheduler": cfg.scheduler}
    return train_likelihood_model(cfg, build, loss, defaults)


def main(argv: list[str] | None = None) -> None:
    print(train_diffusion(DiffusionTrainConfig(**vars(config_parser(DiffusionTrainConfig, __doc__).parse_args(argv)))))


if __name__ == "__main__":
    main()
