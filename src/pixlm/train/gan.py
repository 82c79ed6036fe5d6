"""Train the text-conditional GAN baseline on the shared pool (hinge loss, projection discriminator)::

    python -m pixlm.train.gan --out runs/baselines/gan --pool runs/generator/pool.safetensors \\
        --vq runs/tokenizer/model --max-minutes 8

Per step: one discriminator update on real grids with their captions (real), generated grids (fake) and
real grids with another row's caption (mismatched, as in GAN-INT-CLS, so the discriminator must check the
text), then one generator update. Both networks share one AdamW with a parameter group each, so the
standard checkpoint helpers save and resume them; the network not being updated has ``requires_grad``
off, so its parameters get no gradient and the optimiser skips them. Same data, budget clock, EMA and
output (``OUT/pipeline``, ``"generator": "gan"``) as the other families.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pixlm.models.gan import GANConfig, GANDiscriminator, GANGenerator, hinge_d_loss, hinge_g_loss
from pixlm.train.common import config_parser
from pixlm.train.pool import PoolTrainConfig, budget_summary, finish, resumed_budget, setup


@dataclass
class GANTrainConfig(PoolTrainConfig):
    out: str = "runs/baselines/gan"
    lr: float = 2e-4  # generator
    lr_d: float = 4e-4  # discriminator (two time-scale update rule)
    warmup: int = 0
    weight_decay: float = 0.0
    cond_dropout: float = 0.0  # no guidance for a one-shot generator
    mismatch_weight: float = 0.5
    z_dim: int = 64
    dim: int = 192
    cond_dim: int = 192


def train_gan(cfg: GANTrainConfig) -> Path:
    """Train, then write ``OUT/pipeline``; returns its path."""
    loop, vq, text, batches = setup(cfg)
    gcfg = GANConfig(levels=vq.config.levels, grid=vq.config.grid, text_dim=text.dim, z_dim=cfg.z_dim, dim=cfg.dim,
                     cond_dim=cfg.cond_dim)
    G, D = GANGenerator(gcfg), GANDiscriminator(gcfg)
    opt = torch.optim.AdamW([{"params": list(G.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                             {"params": list(D.parameters()), "lr": cfg.lr_d, "weight_decay": 0.0}],
                            betas=(0.0, 0.99))
    G, D = loop.prepare({"raw": G, "disc": D}, opt, ema=True)
    g_raw, d_raw = loop.unwrap("raw"), loop.unwrap("disc")
    budget = resumed_budget(loop, cfg)
    dev = loop.accelerator.device

    def step_fn(step: int) -> dict:
        """The discriminator's update, then the generator's backward pass (the loop steps the optimizer)."""
        tokens, states, mask, gen = batches(step, cfg.batch_size)
        states, mask = states.to(dev), mask.to(dev)
        real = g_raw.codes.to_codes(tokens.to(dev), gcfg.grid)  # (B, d, g, g)
        b = real.shape[0]

        # --- discriminator: real (matching text) vs generated and mismatched-text pairs
        d_raw.requires_grad_(True)
        g_raw.requires_grad_(False)
        with torch.no_grad():
            z = torch.randn(b, gcfg.z_dim, generator=gen).to(dev)
            fake = g_raw.codes.snap(G(z, g_raw.prepare_text(states, mask)))
        perm = torch.roll(torch.arange(b), 1)
        d_real, d_fake = D(real, states, mask), D(fake, states, mask)
        d_mis = D(real, states[perm], mask[perm])
        loss_d = (F.relu(1 - d_real).mean() + (1 - cfg.mismatch_weight) * F.relu(1 + d_fake).mean()
                  + cfg.mismatch_weight * F.relu(1 + d_mis).mean())
        loop.accelerator.backward(loss_d)
        loop.optimizer.step()
        loop.optimizer.zero_grad(set_to_none=True)

        # --- generator: fool the discriminator with snapped (straight-through) grids; D gets no gradient
        d_raw.requires_grad_(False)
        g_raw.requires_grad_(True)
        z = torch.randn(b, gcfg.z_dim, generator=gen).to(dev)
        fake = g_raw.codes.snap_ste(G(z, g_raw.prepare_text(states, mask)))
        loss_g = hinge_g_loss(D(fake, states, mask))
        loop.accelerator.backward(loss_g)
        return {"loss": loss_g.detach(), "loss_d": loss_d.detach(), "d_real": d_real.mean().detach(),
                "d_fake": d_fake.mean().detach(), "d_mismatch": d_mis.mean().detach(),
                "hinge_d": hinge_d_loss(d_real, d_fake).detach()}

    done = loop.fit(step_fn, ema_decay=cfg.ema, clip_norm=1.0, plot=("loss", "loss_d"), budget=budget)
    defaults = {"num_inference_steps": 1, "guidance_scale": 1.0, "temperature": 1.0}
    return finish(loop.run, vq, text, loop.ema, defaults, cfg, budget_summary(budget, done, cfg))


def main(argv: list[str] | None = None) -> None:
    print(train_gan(GANTrainConfig(**vars(config_parser(GANTrainConfig, __doc__).parse_args(argv)))))


if __name__ == "__main__":
    main()
