"""MaskGIT decoding: start fully masked, and in K parallel steps commit the most confident tokens.

The sampler owns the loop (steps, schedule, temperature, guidance, randomness); the network maps
(tokens, text) → final hidden states (``hidden``) and those → logits (``head_logits``). One loop serves every
case (fresh images, previews, editing with frozen tokens, revision) and every device: fixed shapes and no
host syncs inside it, so it runs as is under ``torch.compile``/CUDA graphs.

* Randomness is drawn up front, per row (``pixlm.sampling.randomness``): two uniforms per token and step.
  Token values are drawn by inverse-CDF sampling, commit order by Gumbel noise on the confidences.
* Guidance is a lerp on the final hidden states, then the head once: exact (the head is affine and the
  lerp's weights sum to 1), and the unconditional rows skip the vocabulary-sized head.
* At step 0 every token of a fresh image is masked, so unconditional rows with the same negative prompt see
  the same input: one of them is computed and shared (exact up to the rounding of a smaller batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from pixlm.sampling.cfg import concat_prepared, map_tensors, take_rows
from pixlm.sampling.randomness import Generators, check_generators, inverse_cdf_sample, rand_rows

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
    def sample(self, model, cond: dict, uncond: dict | None, batch: int, generator: Generators = None,
               callback: StepCallback | None = None, init_tokens: torch.Tensor | None = None,
               keep: torch.Tensor | None = None) -> torch.Tensor:
        """Generate (B, N) tokens. ``cond``/``uncond`` come from ``model.prepare_text`` (uncond may be None).

        ``generator``: one generator, or one per row (row i then draws only from ``generator[i]``).
        ``init_tokens`` with a boolean ``keep`` (B, N) fixes some tokens (inpainting, variations): they never
        move, and the rest start masked and are decoded on the same schedule, scaled to the masked count.
        ``callback(step, steps, tokens)`` sees the tokens after every step (previews).
        """
        cfg = model.config
        n, mask_id, steps = cfg.num_tokens, cfg.mask_id, self.num_inference_steps
        device = model.pos_emb.device
        check_generators(generator, batch)
        tokens = torch.full((batch, n), mask_id, dtype=torch.long, device=device)
        frozen = None
        if init_tokens is not None:
            keep = keep if keep is not None else torch.zeros_like(init_tokens, dtype=torch.bool)
            tokens = torch.where(keep, init_tokens, tokens)
            frozen = tokens != mask_id  # given by the caller: never re-masked
        use_cfg = uncond is not None and self.guidance_scale != 1.0
        prepared = concat_prepared(cond, uncond) if use_cfg else cond
        first = first_uncond = None
        if use_cfg and frozen is None and _same_rows(uncond):  # one negative prompt: step 0's row is shared
            cache = getattr(model, "step0_cache", None)  # an inference copy's (pixlm.inference.optimize)
            if cache is not None:
                first_uncond = cache.lookup(model, take_rows(uncond, 0, 1), tokens[:1])
            elif batch > 1:
                first = concat_prepared(cond, take_rows(uncond, 0, 1))
        u = rand_rows(generator, batch, (2, steps, n), device).transpose(0, 2)  # (steps, 2, B, N)
        return maskgit_loop(model, prepared, tokens, u[:, 0], u[:, 1], mask_id=mask_id, steps=steps,
                            guidance_scale=float(self.guidance_scale), use_cfg=use_cfg,
                            temperature=float(self.temperature), choice_temperature=float(self.choice_temperature),
                            revise_margin=self.revise_margin, frozen=frozen, first_prepared=first,
                            first_uncond=first_uncond, callback=callback)


class Step0Cache:
    """The unconditional row's step-0 hidden states per negative prompt, kept across calls.

    At step 0 every token of a fresh image is masked, so that row depends only on the weights and the negative
    prompt: an inference copy of a generator, whose weights never change, keeps it (``pixlm.inference.optimize``
    gives one a cache; a trainable model has none). Every call then runs step 0 on its conditional rows only,
    and every batch size sees the same unconditional row. Keyed by the prepared text itself, trimmed to its real
    length (the padding depends on the other prompts of a call) and compared up to batching's rounding
    (``_same_text``), so a changed prompt is never served stale."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.entries: list[tuple[list[torch.Tensor], torch.Tensor]] = []  # (key tensors, hidden (1, N, C)), newest last

    def lookup(self, model, row: dict, tokens: torch.Tensor) -> torch.Tensor:
        """The hidden states (1, N, C) of ``row`` (one prepared unconditional row) at the fully masked ``tokens``
        (1, N): cached, or computed on the trimmed row and kept."""
        length = int(row["mask"][0].sum())  # right-padded: the real text comes first
        key = _text_tensors(_trim(row, length, copy=False))  # views: a hit copies nothing
        for i, (k, h) in enumerate(self.entries):
            if len(k) == len(key) and all(_same_text(a, b) for a, b in zip(k, key)):
                self.entries.append(self.entries.pop(i))
                return h
        trimmed = _trim(row, length)
        h = model.hidden(tokens, prepared=trimmed).float()
        self.entries = [*self.entries[-(self.size - 1):], ([t.clone() for t in _text_tensors(trimmed)], h)]
        return h


def _text_tensors(prepared: dict) -> list[torch.Tensor]:
    """Every tensor of a prepared row but its mask, in order."""
    out: list[torch.Tensor] = []
    map_tensors(out.append, {k: v for k, v in prepared.items() if k != "mask"})
    return out


def _same_text(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two prepared-text tensors come from the same prompt: equal up to the rounding that batching with
    other prompts brings (the projections run over every prompt of a call: 1e-6 in float32, 1e-2 in bfloat16,
    relative to the tensor's largest entry); another prompt differs by far more."""
    if a.shape != b.shape:
        return False
    a, b = a.float(), b.float()
    return bool((a - b).abs().max() <= 0.02 * a.abs().max() + 1e-6)


def _trim(row: dict, length: int, copy: bool = True) -> dict:
    """A prepared row cut to its first ``length`` text positions (per-layer tensors along their declared axes),
    contiguous copies (``copy``) or views."""
    out: dict = {}
    for name, value in row.items():
        if name == "mask":
            out[name] = value[:, :length]
        elif isinstance(value, list):
            cut = (lambda t, d: t.narrow(d, 0, length).contiguous()) if copy else (lambda t, d: t.narrow(d, 0, length))
            out[name] = [layer.map(cut) if hasattr(layer, "map") else layer for layer in value]
        else:
            out[name] = value.narrow(1, 0, length)
    return out


def _same_rows(prepared: dict) -> bool:
    """Whether every row of ``prepare_text`` output equals the first (one negative prompt for all rows)."""
    rows: list[bool] = []
    map_tensors(lambda t: rows.append(t.shape[0] == 1 or bool((t == t[:1]).all())), prepared)
    return all(rows)


def maskgit_loop(model, prepared: dict, tokens: torch.Tensor, u_token: torch.Tensor, u_choice: torch.Tensor, *,
                 mask_id: int, steps: int, guidance_scale: float, use_cfg: bool, temperature: float,
                 choice_temperature: float, revise_margin: float | None = None, frozen: torch.Tensor | None = None,
                 first_prepared: dict | None = None, first_uncond: torch.Tensor | None = None,
                 callback: StepCallback | None = None) -> torch.Tensor:
    """The K-step MaskGIT loop with fixed shapes and no host syncs: (B, N) start tokens → (B, N) tokens.

    ``prepared``: the model's prepared text, conditional rows then (when ``use_cfg``) unconditional ones.
    ``u_token``, ``u_choice``: (steps, B, N) uniforms in [0, 1) for the token draws and the commit noise.
    ``frozen`` (B, N): positions that never change. ``first_prepared``: the conditional rows then one shared
    unconditional row, used at step 0 when every unconditional row sees the same input; ``first_uncond``: that
    row's step-0 hidden states (1, N, C) already computed (``Step0Cache``): step 0 then runs the conditional rows
    only. Raises
    ``FloatingPointError`` after the loop when the last step's logits are not finite (corrupt weights).
    """
    b = tokens.shape[0]
    to_fill = (tokens == mask_id).sum(1).float()  # (B,): the schedule scales to what this call must decode
    gumbels = None
    if choice_temperature > 0:  # all steps' commit noise in one op (launches cost more than arithmetic here)
        gumbels = -torch.log(-torch.log(u_choice.clamp(1e-20, 1 - 1e-7)))  # (steps, B, N)
    inv_t = 1.0 / max(temperature, 1e-4)
    for i in range(steps):
        if use_cfg and i == 0 and first_uncond is not None:
            c = model.hidden(tokens, prepared=take_rows(prepared, 0, b)).float()  # (B, N, C)
            out = torch.lerp(first_uncond.expand_as(c), c, guidance_scale)
        elif use_cfg and i == 0 and first_prepared is not None:
            h = model.hidden(torch.cat([tokens, tokens[:1]]), prepared=first_prepared).float()  # (B + 1, N, C)
            out = torch.lerp(h[b:].expand(b, -1, -1), h[:b], guidance_scale)
        elif use_cfg:
            c, u = model.hidden(torch.cat([tokens, tokens]), prepared=prepared).float().chunk(2)  # (B, N, C) each
            out = torch.lerp(u, c, guidance_scale)  # u + scale · (c − u)
        else:
            out = model.hidden(tokens, prepared=prepared)
        logits = model.head_logits(out).float()  # (B, N, V), a new tensor: scaled in place
        if inv_t != 1.0:
            logits.mul_(inv_t)
        probs = torch.softmax(logits, dim=-1)
        sampled = inverse_cdf_sample(probs, u_token[i])  # (B, N)
        gumbel = gumbels[i] if gumbels is not None else None
        n_next = (to_fill * math.cos(math.pi / 2 * (i + 1) / steps)).floor().long()  # (B,)
        tokens = commit_step(tokens, sampled, probs, gumbel, i, steps, n_next, mask_id=mask_id,
                             choice_temperature=choice_temperature, revise_margin=revise_margin, frozen=frozen)
        if callback is not None:
            callback(i, steps, tokens)
    # NaN/Inf logits would sample silently; corrupt weights make every step's logits non-finite, so the last
    # step's are checked, once, after the loop (no per-step host sync or full-size check)
    if not bool(torch.isfinite(logits).all()):
        raise FloatingPointError("the generator produced NaN/Inf logits; the weights are corrupt")
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
