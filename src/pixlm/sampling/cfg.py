"""Classifier-free guidance helpers shared by the samplers: batch conditional and unconditional rows together."""

from __future__ import annotations

from typing import Any, Callable

import torch

from pixlm.models.layers import PerText


def map_tensors(fn: Callable[[torch.Tensor], Any], x: Any) -> Any:
    """``fn`` applied to every tensor in nested dicts, lists and tuples (e.g. ``prepare_text`` output)."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, PerText):
        return x.map(lambda t, _: fn(t))
    if isinstance(x, dict):
        return {k: map_tensors(fn, v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(map_tensors(fn, v) for v in x)
    return x


def take_rows(prepared: dict, start: int, stop: int) -> dict:
    """Rows ``start:stop`` of ``prepare_text`` output (views; every tensor in it is batch-first)."""
    return map_tensors(lambda t: t[start:stop], prepared)


def pad_to(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """``x`` zero-padded along ``dim`` up to ``length`` (unchanged if already that long)."""
    extra = length - x.shape[dim]
    if extra <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


TEXT_KEYS = ("states", "prefix")  # (B, T, D) tensors along the text; "mask" (B, T); "pooled" (B, D) has no text axis


def pad_prepared(prepared: dict, length: int) -> dict:
    """``prepare_text`` output right-padded to ``length`` text positions (the padding masked out).

    Knows ``mask`` (B, T), ``states``/``prefix`` (B, T, D), ``pooled`` (B, D) and lists of per-layer
    :class:`~pixlm.models.layers.PerText` (each tensor padded along its declared text axis).
    """
    unknown = set(prepared) - {"mask", "pooled", *TEXT_KEYS}
    for key in unknown:
        value = prepared[key]
        if not (isinstance(value, list) and all(isinstance(v, PerText) for v in value)):
            raise ValueError(f"cannot pad prepared text entry {key!r}: not mask/states/prefix/pooled nor a list of "
                             f"PerText (got {type(value).__name__})")
    if "mask" in prepared and length < prepared["mask"].shape[1]:
        raise ValueError(f"cannot pad text of length {prepared['mask'].shape[1]} down to {length}")
    out: dict = {}
    for key, value in prepared.items():
        if key == "mask" or key in TEXT_KEYS:
            out[key] = pad_to(value, 1, length)
        elif key == "pooled":
            out[key] = value
        else:
            out[key] = [layer.map(lambda t, d: pad_to(t, d, length)) for layer in value]
    return out


def concat_prepared(a: dict, b: dict) -> dict:
    """Stack two ``prepare_text`` results along the batch (``a``'s rows first), zero-padding the text length
    (see :func:`pad_prepared` for the entries understood). Padded text positions are masked out."""
    if set(a) != set(b):
        raise ValueError(f"cannot stack prepared text with keys {sorted(a)} and {sorted(b)}")
    t = max(a["mask"].shape[1], b["mask"].shape[1]) if "mask" in a else 0
    pa, pb = pad_prepared(a, t), pad_prepared(b, t)
    out: dict = {}
    for key in pa:
        if isinstance(pa[key], list):
            out[key] = [type(x)((torch.cat([u, w]) for u, w in zip(x, y)), x.dims) for x, y in zip(pa[key], pb[key])]
        else:
            out[key] = torch.cat([pa[key], pb[key]])
    return out


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale · (cond − uncond)``."""
    return uncond + scale * (cond - uncond)
