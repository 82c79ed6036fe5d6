"""Autoregressive decoding: prefill the start token, then choose the N image tokens one by one.

Each step filters the next-token logits (temperature, top-k, top-p), samples with seeded generators (one,
or one per row: row i then draws only from generator i, see ``pixlm.sampling.randomness``) and feeds the choice back through ``decode_one_token`` over a static KV cache. With
classifier-free guidance the conditional and unconditional rows share every forward (2B rows), and both
halves receive the same chosen token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pixlm.sampling.cfg import concat_prepared, guide
from pixlm.sampling.randomness import Generators, check_generators, inverse_cdf_sample, rand_rows

StepCallback = Callable[[int, int, torch.Tensor], None]  # (step, total, tokens (B, N); vocab_size = not yet written)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf (0 / 1.0 disable each filter).

    ``logits`` (..., V). The most likely token always survives, so the result can always be sampled.
    """
    if top_k < 0 or isinstance(top_k, bool):
        raise ValueError(f"top_k={top_k!r} must be an integer >= 0 (0 = off)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] (1 = off)")
    out = logits
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]  # (..., 1)
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of strictly more likely tokens
        drop_sorted = before >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: Generators = None) -> torch.Tensor:
    """(B, V) logits → (B,) token ids; ``temperature`` 0 means greedy (argmax). ``generator``: one, or one per
    row (row i then draws only from ``generator[i]``)."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    return inverse_cdf_sample(probs, rand_rows(generator, probs.shape[0], (), probs.device))


@dataclass
class AutoregressiveSampler:
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1.0 = no nucleus filter

    def __post_init__(self) -> None:
        filter_logits(torch.zeros(1, 2), self.top_k, self.top_p)  # validates top_k / top_p with a clear error
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")

    @torch.no_grad()
    def sample(self, model, cond: dict, uncond: dict | None, batch: int, generator: Generators = None,
               callback: StepCallback | None = None, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Generate (B, N) tokens. ``cond``/``uncond`` come from ``model.prepare_text`` (uncond may be None).

        ``generator``: one, or one per row. ``prefix`` (B, P) fixes the first P raster-order tokens (e.g. to
        complete a partly given image).
        """
        check_generators(generator, batch)
        cfg = model.config
        n, device = cfg.num_tokens, model.pos_emb.device
        use_cfg = uncond is not None and self.guidance_scale != 1.0
        both = concat_prepared(cond, uncond) if use_cfg else cond
        rows = 2 * batch if use_cfg else batch
        cache = model.new_cache(rows)
        tokens = torch.full((batch, n), cfg.vocab_size, dtype=torch.long, device=device)  # vocab_size = unwritten
        start = 0
        if prefix is not None:
            start = prefix.shape[1]
            tokens[:, :start] = prefix
            prefix = torch.cat([prefix, prefix]) if use_cfg else prefix
        logits = model.prefill(both, cache, prefix)  # (rows, V)
        for i in range(start, n):
            if use_cfg:
                c, u = logits.float().chunk(2)
                logits = guide(c, u, self.guidance_scale)
            nxt = sample_logits(logits, self.temperature, self.top_k, self.top_p, generator)  # (B,)
            tokens[:, i] = nxt
            if callback is not None:
                callback(i - start, n - start, tokens.clone())
            if i + 1 < n:
                logits = model.decode_one_token(torch.cat([nxt, nxt]) if use_cfg else nxt, both, cache)
        return tokens
