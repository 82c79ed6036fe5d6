"""Train the conditional VAE baseline on the shared pool (negative ELBO in the FSQ code space)::

    python -m pixlm.train.vae --out runs/baselines/vae --pool runs/generator/pool.safetensors \\
        --vq runs/tokenizer/model --max-minutes 8

The loop is ``pixlm.train.pool.train_likelihood_model``; the result is ``OUT/pipeline`` (``"generator": "vae"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pixlm.models.vae import ConditionalVAE, VAEConfig, vae_loss
from pixlm.train.common import config_parser
from pixlm.train.pool import PoolTrainConfig, train_likelihood_model


@dataclass
class VAETrainConfig(PoolTrainConfig):
    out: str = "runs/baselines/vae"
    cond_dropout: float = 0.0  # no guidance for a one-shot generator
    z_dim: int = 64
    dim: int = 192
    cond_dim: int = 192
    beta: float = 1.0
    sigma: float = 0.5


def train_vae(cfg: VAETrainConfig) -> Path:
    """Train, then write ``OUT/pipeline``; returns its path."""

    def build(vq, text) -> ConditionalVAE:
        return ConditionalVAE(VAEConfig(levels=vq.config.levels, grid=vq.config.grid, text_dim=text.dim,
                                        z_dim=cfg.z_dim, dim=cfg.dim, cond_dim=cfg.cond_dim, beta=cfg.beta,
                                        sigma=cfg.sigma))

    defaults = {"num_inference_steps": 1, "guidance_scale": 1.0, "temperature": 1.0}
    return train_likelihood_model(cfg, build, vae_loss, defaults)


def main(argv: list[str] | None = None) -> None:
    print(train_vae(VAETrainConfig(**vars(config_parser(VAETrainConfig, __doc__).parse_args(argv)))))


if __name__ == "__main__":
    main()
