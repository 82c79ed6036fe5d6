"""Train the autoregressive token generator on the shared pool (next-token cross-entropy, teacher forcing)::

    python -m pixlm.train.autoregressive --out runs/baselines/autoregressive \\
        --pool runs/generator/pool.safetensors --vq runs/tokenizer/model --max-minutes 8

The loop is ``pixlm.train.pool.train_likelihood_model`` (Accelerate, EMA, resumable, budgeted); the result is
``OUT/pipeline``, a model folder whose ``model_index.json`` says ``"generator": "autoregressive"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pixlm.models.autoregressive import AutoregressiveConfig, AutoregressiveTransformer, autoregressive_loss
from pixlm.train.common import config_parser
from pixlm.train.pool import PoolTrainConfig, train_likelihood_model


@dataclass
class ARTrainConfig(PoolTrainConfig):
    out: str = "runs/baselines/autoregressive"
    dim: int = 192
    layers: int = 4
    heads: int = 4
    label_smoothing: float = 0.0
    guidance_scale: float = 3.0  # pipeline defaults written with the model
    top_k: int = 0
    top_p: float = 1.0


def train_autoregressive(cfg: ARTrainConfig) -> Path:
    """Train, then write ``OUT/pipeline``; returns its path."""

    def build(vq, text) -> AutoregressiveTransformer:
        return AutoregressiveTransformer(AutoregressiveConfig(vocab_size=vq.vocab_size, grid=vq.config.grid,
                                                              dim=cfg.dim, layers=cfg.layers, heads=cfg.heads,
                                                              text_dim=text.dim))

    def loss(model, tokens, states, mask, gen):
        return autoregressive_loss(model, tokens, states, mask, cfg.label_smoothing)

    defaults = {"num_inference_steps": 64, "guidance_scale": cfg.guidance_scale, "temperature": 1.0,
                "top_k": cfg.top_k, "top_p": cfg.top_p}
    return train_likelihood_model(cfg, build, loss, defaults)


def main(argv: list[str] | None = None) -> None:
    a = config_parser(ARTrainConfig, __doc__).parse_args(argv)
    print(train_autoregressive(ARTrainConfig(**vars(a))))


if __name__ == "__main__":
    main()
