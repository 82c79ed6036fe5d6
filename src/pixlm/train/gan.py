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

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pixlm.models.gan import GANConfig, GANDiscriminator, GANGenerator, hinge_d_loss, hinge_g_loss
from pixlm.train.common import LossLog, resume_from_latest, save_training_checkpoint
from pixlm.train.pool import Budget, PoolTrainConfig, budget_summary, config_parser, ema_update, finish, lr_at, setup


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
    from accelerate import Accelerator

    accelerator = Accelerator()
    run, vq, text, pool, batches = setup(cfg)
    gcfg = GANConfig(levels=vq.config.levels, grid=vq.config.grid, text_dim=text.dim, z_dim=cfg.z_dim, dim=cfg.dim,
                     cond_dim=cfg.cond_dim)
    G, D = GANGenerator(gcfg), GANDiscriminator(gcfg)
    ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.AdamW([{"params": list(G.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                             {"params": list(D.parameters()), "lr": cfg.lr_d, "weight_decay": 0.0}],
                            betas=(0.0, 0.99))
    state = resume_from_latest(run, {"model": ema, "raw": G, "disc": D}, opt) if cfg.resume else {}
    start = state.get("step", 0)
    budget = Budget(cfg, state.get("train_s", 0.0), state.get("wall_s", 0.0))
    G, D, opt = accelerator.prepare(G, D, opt)
    g_raw, d_raw = accelerator.unwrap_model(G), accelerator.unwrap_model(D)
    log = LossLog(run, start)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not accelerator.is_main_process)
    done = start
    for step in bar:
        if budget.exhausted():
            break
        budget.start()
        progress = budget.progress(step)
        opt.param_groups[0]["lr"] = lr_at(step, progress, cfg.lr, cfg.warmup)
        opt.param_groups[1]["lr"] = lr_at(step, progress, cfg.lr_d, cfg.warmup)
        tokens, states, mask, gen = batches(step, cfg.batch_size)
        dev = accelerator.device
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
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss_d)
        opt.step()

        # --- generator: fool the discriminator with snapped (straight-through) grids
        d_raw.requires_grad_(False)
        g_raw.requires_grad_(True)
        z = torch.randn(b, gcfg.z_dim, generator=gen).to(dev)
        fake = g_raw.codes.snap_ste(G(z, g_raw.prepare_text(states, mask)))
        loss_g = hinge_g_loss(D(fake, states, mask))
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            raise FloatingPointError(f"{cfg.out}: GAN losses became D={loss_d.item()} G={loss_g.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss_g)
        accelerator.clip_grad_norm_(g_raw.parameters(), 1.0)
        opt.step()
        ema_update(ema, g_raw, cfg.ema, step)
        budget.stop()
        done = step + 1
        if done % cfg.log_every == 0 and accelerator.is_main_process:
            log.append({"step": done, "loss": loss_g.item(), "loss_d": loss_d.item(),
                        "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(),
                        "d_mismatch": d_mis.mean().item(), "hinge_d": hinge_d_loss(d_real, d_fake).item(),
                        "lr": opt.param_groups[0]["lr"], **budget.state()})
            bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}")
        if done % cfg.ckpt_every == 0 and accelerator.is_main_process:
            save_training_checkpoint(run, done, {"model": ema, "raw": g_raw, "disc": d_raw}, opt,
                                     {"seed": cfg.seed, **budget.state()})
    if accelerator.is_main_process:
        if done % cfg.ckpt_every and done > start:
            save_training_checkpoint(run, done, {"model": ema, "raw": g_raw, "disc": d_raw}, opt,
                                     {"seed": cfg.seed, **budget.state()})
        if log.path.is_file():
            log.plot(("loss", "loss_d"))
    summary = budget_summary(budget, done, cfg)
    defaults = {"num_inference_steps": 1, "guidance_scale": 1.0, "temperature": 1.0}
    return finish(run, vq, text, ema, defaults, cfg, summary)


def main(argv: list[str] | None = None) -> None:
    print(train_gan(GANTrainConfig(**vars(config_parser(GANTrainConfig, __doc__).parse_args(argv)))))


if __name__ == "__main__":
    main()
