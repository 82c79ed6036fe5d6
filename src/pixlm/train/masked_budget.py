"""Train the masked generator on the shared pool under a time budget, with the baselines' loop::

    python -m pixlm.train.masked_budget --out runs/baselines/masked --pool runs/generator/pool.safetensors \\
        --vq runs/tokenizer/model --max-minutes 8

Same network and loss as ``pixlm train generator`` (``MaskedTransformer``, ``masked_token_loss``) but the
loop of ``pixlm.train.pool``, so its compute budget matches the other families' exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pixlm.models.masked import MaskedConfig, MaskedTransformer, masked_token_loss
from pixlm.train.common import config_parser
from pixlm.train.pool import PoolTrainConfig, train_likelihood_model


@dataclass
class MaskedBudgetTrainConfig(PoolTrainConfig):
    out: str = "runs/baselines/masked"
    dim: int = 192
    layers: int = 4
    heads: int = 4
    conditioning: str = "cross"
    guidance_scale: float = 1.5  # sampling defaults written with the model: the bundled model's tuned ones
    temperature: float = 0.5
    num_inference_steps: int = 8


def train_masked_budget(cfg: MaskedBudgetTrainConfig) -> Path:
    """Train, then write ``OUT/pipeline``; returns its path."""

    def build(vq, text) -> MaskedTransformer:
        return MaskedTransformer(MaskedConfig(vocab_size=vq.vocab_size, grid=vq.config.grid, dim=cfg.dim,
                                              layers=cfg.layers, heads=cfg.heads, text_dim=text.dim,
                                              conditioning=cfg.conditioning))

    def loss(model, tokens, states, mask, gen):
        return masked_token_loss(model, tokens, states, mask, generator=gen)

    defaults = {"num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale,
                "temperature": cfg.temperature, "choice_temperature": 4.5}
    return train_likelihood_model(cfg, build, loss, defaults)


def main(argv: list[str] | None = None) -> None:
    cfg = MaskedBudgetTrainConfig(**vars(config_parser(MaskedBudgetTrainConfig, __doc__).parse_args(argv)))
    print(train_masked_budget(cfg))


if __name__ == "__main__":
    main()
