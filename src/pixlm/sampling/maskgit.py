"""MaskGIT decoding: start fully masked, and in K parallel steps commit the most confident tokens.

The sampler owns the loop (steps, schedule, temperature, guidance, randomness); the network only maps
(tokens, text) → logits. Conditional and unconditional rows run in one batched forward for CFG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step, total_steps, tokens (B, N); mask_id = masked)


@dataclass
class MaskGITSampler:
    num_inference_steps: int = 8
    guidance_scale: float = 3.0
    temperature: float = 1.0  # softmax temperature for sampling token values
    choice_temperature: float = 4.5  # Gumbel noise on confidences, annealed to 0 (MaskGIT)

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
        use_cfg = uncond is not None and self.guidance_scale != 1.0
        both = _concat_prepared(cond, uncond) if use_cfg else cond
        to_fill = (tokens == mask_id).sum(1)  # (B,) tokens this call must decode
        steps = self.num_inference_steps
        for i in range(steps):
            masked = tokens == mask_id  # (B, N)
            if not masked.any():
                break
            x = torch.cat([tokens, tokens]) if use_cfg else tokens
            logits = model(x, prepared=both).float()  # (B or 2B, N, V)
            if use_cfg:
                c, u = logits.chunk(2)
                logits = u + self.guidance_scale * (c - u)
            logits = logits / max(self.temperature, 1e-4)
            probs = torch.softmax(logits, dim=-1)
            sampled = torch.multinomial(probs.view(-1, probs.shape[-1]), 1, generator=generator).view(batch, n)
            conf = torch.log(torch.gather(probs, -1, sampled[..., None]).squeeze(-1).clamp_min(1e-20))
            ratio = math.cos(math.pi / 2 * (i + 1) / steps)
            if self.choice_temperature > 0:
                u01 = torch.rand(conf.shape, generator=generator, device=device).clamp(1e-20, 1 - 1e-7)
                conf = conf + self.choice_temperature * (1 - (i + 1) / steps) * -torch.log(-torch.log(u01))
            conf = conf.masked_fill(~masked, float("inf"))  # committed tokens are never re-masked
            tokens = torch.where(masked, sampled, tokens)
            n_next = (to_fill.float() * ratio).floor().long()  # (B,) still masked after this step
            if i < steps - 1 and bool((n_next > 0).any()):
                order = conf.argsort(dim=1)  # least confident first
                ranks = order.argsort(dim=1)
                tokens = tokens.masked_fill(ranks < n_next[:, None], mask_id)
            if callback is not None:
                callback(i, steps, tokens)
        return tokens


def _concat_prepared(a: dict, b: dict) -> dict:
    """Stack two ``prepare_text`` results along the batch (conditional rows first), padding text length."""
    out: dict = {}
    ma, mb = a["mask"], b["mask"]
    t = max(ma.shape[1], mb.shape[1])

    def pad(x: torch.Tensor, dim: int) -> torch.Tensor:
        extra = t - x.shape[dim]
        if extra == 0:
            return x
        shape = list(x.shape)
        shape[dim] = extra
        return torch.cat([x, x.new_zeros(shape)], dim=dim)

    out["mask"] = torch.cat([pad(ma, 1), pad(mb, 1)])
    if "kv" in a:
        out["kv"] = [(torch.cat([pad(ka, 2), pad(kb, 2)]), torch.cat([pad(va, 2), pad(vb, 2)]))
                     for (ka, va), (kb, vb) in zip(a["kv"], b["kv"])]
    else:
        out["prefix"] = torch.cat([pad(a["prefix"], 1), pad(b["prefix"], 1)])
    return out
