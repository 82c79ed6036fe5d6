"""MaskGIT decoding: start fully masked, and in K parallel steps commit the most confident tokens.

The sampler owns the loop (steps, schedule, temperature, guidance, randomness); the network only maps
(tokens, text) → logits. Conditional and unconditional rows run in one batched forward for CFG.
``commit_step`` is the commit rule, shared with the fixed-shape loop in :mod:`pixlm.fast`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from pixlm.sampling.cfg import concat_prepared

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step, total_steps, tokens (B, N); mask_id = masked)


@dataclass
class MaskGITSampler:
    num_inference_steps: int = 8
    guidance_scale: float = 3.0
    temperature: float = 1.0  # softmax temperature for sampling token values
    choice_temperature: float = 4.5  # Gumbel noise on confidences, annealed to 0 (MaskGIT)
    revise_margin: float | None = None  # None: committed tokens stay (MaskGIT); a number: see ``commit_step``

    def schedule(self, num_tokens: int) -> list[int]:
        """How many tokens are still masked after each step (cosine schedule, ends at 0)."""
        k = self.num_inference_steps
        return [int(math.floor(num_tokens * math.cos(math.pi / 2 * (i + 1) / k))) for i in range(k)]

    @torch.no_grad()
    def sample(self, model, cond: dict, uncond: dict | None, batch: int, generator: torch.Generator | None = None,
               callback: StepCallback | None = None, init_tokens: torch.Tensor | None = None,
               keep: torch.Tensor | None = None) -> torch.Tensor:
        """Generate (B, N) tokens. ``cond``/``uncond`` come from ``model.prepare_text`` (uncond may be None).

        ``init_tokens`` with a boolean ``keep`` (B, N) fixes some tokens (inpainting, variations); the rest
        start masked and are decoded on the same schedule, scaled to the masked count.
        """
        if getattr(model, "fixed_loop", False) and callback is None and init_tokens is None:
            return model.sample_fixed(self, cond, uncond, batch, generator)  # pixlm.fast: fixed-shape, sync-free
        cfg = model.config
        n, mask_id = cfg.num_tokens, cfg.mask_id
        device = model.pos_emb.device
        tokens = torch.full((batch, n), mask_id, dtype=torch.long, device=device)
        if init_tokens is not None:
            keep = keep if keep is not None else torch.zeros_like(init_tokens, dtype=torch.bool)
            tokens = torch.where(keep, init_tokens, tokens)
        frozen = tokens != mask_id  # given by the caller: never re-masked
        use_cfg = uncond is not None and self.guidance_scale != 1.0
        both = concat_prepared(cond, uncond) if use_cfg else cond
        to_fill = (~frozen).sum(1)  # (B,) tokens this call must decode
        steps = self.num_inference_steps
        draw_on = generator.device if generator is not None else device
        for i in range(steps):
            if not bool((tokens == mask_id).any()):
                break
            x = torch.cat([tokens, tokens]) if use_cfg else tokens
            logits = model(x, prepared=both).float()  # (B or 2B, N, V)
            if use_cfg:
                c, u = logits.chunk(2)
                logits = u + self.guidance_scale * (c - u)
            probs = torch.softmax(logits / max(self.temperature, 1e-4), dim=-1)
            # draw where the generator lives (a CPU generator cannot drive CUDA kernels), then move the result
            flat = probs.view(-1, probs.shape[-1]).to(draw_on)
            sampled = torch.multinomial(flat, 1, generator=generator).view(batch, n).to(device)
            gumbel = None
            if self.choice_temperature > 0:
                u01 = torch.rand(sampled.shape, generator=generator, device=draw_on).to(device).clamp(1e-20, 1 - 1e-7)
                gumbel = -torch.log(-torch.log(u01))
            n_next = (to_fill.float() * math.cos(math.pi / 2 * (i + 1) / steps)).floor().long()  # (B,)
            tokens = commit_step(tokens, sampled, probs, gumbel, i, steps, n_next, mask_id=mask_id,
                                 choice_temperature=self.choice_temperature, revise_margin=self.revise_margin,
                                 frozen=frozen)
            if callback is not None:
                callback(i, steps, tokens)
        return tokens


def commit_step(tokens: torch.Tensor, sampled: torch.Tensor, probs: torch.Tensor, gumbel: torch.Tensor | None,
                step: int, steps: int, n_next: torch.Tensor, *, mask_id: int, choice_temperature: float,
                revise_margin: float | None, frozen: torch.Tensor | None = None) -> torch.Tensor:
    """Fill the masked positions of ``tokens`` (B, N) with ``sampled``, then re-mask the ``n_next`` (B,)
    least confident positions (none after the last step).

    Confidence is the log-probability of a position's token under this step's ``probs`` (B, N, V), plus
    Gumbel noise scaled by ``choice_temperature`` and annealed to 0 over the steps. Tokens committed at
    earlier steps stay unless ``revise_margin`` is a number: then they compete too, at their current
    log-probability plus a margin that shrinks linearly from ``revise_margin`` at the first step toward 0, so
    a token the model has come to doubt once its neighbours were drawn is re-masked and drawn again, more
    readily as the picture fills in. That lets the few parallel steps repair early choices that disagree (two
    objects drawn with the same colour); the schedule still ends with every token committed. ``frozen``
    positions (B, N) never move.
    """
    masked = tokens == mask_id
    tokens = torch.where(masked, sampled, tokens)
    if step >= steps - 1:
        return tokens
    conf = torch.log(torch.gather(probs, -1, tokens[..., None]).squeeze(-1).clamp_min(1e-20))
    if gumbel is not None:
        conf = conf + choice_temperature * (1 - (step + 1) / steps) * gumbel
    if revise_margin is None:
        conf = conf.masked_fill(~masked, float("inf"))
    else:
        conf = torch.where(masked, conf, conf + revise_margin * (1 - step / steps))
    if frozen is not None:
        conf = conf.masked_fill(frozen, float("inf"))
    ranks = conf.argsort(dim=1).argsort(dim=1)  # 0 = least confident
    return tokens.masked_fill(ranks < n_next[:, None], mask_id)
