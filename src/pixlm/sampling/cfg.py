"""Classifier-free guidance helpers shared by the samplers: batch conditional and unconditional rows together."""

from __future__ import annotations

from typing import Any, Callable

import torch


def map_tensors(fn: Callable[[torch.Tensor], Any], x: Any) -> Any:
    """``fn`` applied to every tensor in nested dicts, lists and tuples (e.g. ``prepare_text`` output)."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, dict):
        return {k: map_tensors(fn, v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(map_tensors(fn, v) for v in x)
    return x


def pad_to(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """``x`` zero-padded along ``dim`` up to ``length`` (unchanged if already that long)."""
    extra = length - x.shape[dim]
    if extra <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


# The text-length axis of each tensor in the per-layer pairs of prepared text: ``kv``, (k, v) each (B, H, T, Dh);
# ``cross`` (a packed generator's folded cross-attention, pixlm.packed), maps (B, C, H, T) and (B, H, T, C).
PAIR_TEXT_DIMS = {"kv": (2, 2), "cross": (3, 2)}


def pad_pairs(pairs: list, dims: tuple[int, int], length: int) -> list:
    """Per-layer pairs of prepared text, each tensor zero-padded along its text axis up to ``length``."""
    return [tuple(pad_to(x, d, length) for x, d in zip(pair, dims)) for pair in pairs]


def concat_prepared(a: dict, b: dict) -> dict:
    """Stack two ``prepare_text`` results along the batch (``a``'s rows first), zero-padding the text length.

    Understands the keys the generators produce: ``mask`` (B, T), ``states`` or ``prefix`` (B, T, D), per-layer
    pairs (``PAIR_TEXT_DIMS``: ``kv``, ``cross``) and ``pooled`` (B, D). Padded text positions are masked out.
    """
    unknown = (set(a) | set(b)) - {"mask", "states", "prefix", "pooled", *PAIR_TEXT_DIMS}
    if unknown or set(a) != set(b):
        raise ValueError(f"cannot stack prepared text with keys {sorted(a)} and {sorted(b)}")
    out: dict = {}
    t = max(a["mask"].shape[1], b["mask"].shape[1]) if "mask" in a else 0
    if "mask" in a:
        out["mask"] = torch.cat([pad_to(a["mask"], 1, t), pad_to(b["mask"], 1, t)])
    for key in ("states", "prefix"):
        if key in a:
            out[key] = torch.cat([pad_to(a[key], 1, t), pad_to(b[key], 1, t)])
    for key, dims in PAIR_TEXT_DIMS.items():
        if key in a:
            out[key] = [tuple(torch.cat(xy) for xy in zip(pa, pb))
                        for pa, pb in zip(pad_pairs(a[key], dims, t), pad_pairs(b[key], dims, t))]
    if "pooled" in a:
        out["pooled"] = torch.cat([a["pooled"], b["pooled"]])
    return out


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale · (cond − uncond)``."""
    return uncond + scale * (cond - uncond)
