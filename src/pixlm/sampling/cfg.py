"""Classifier-free guidance helpers shared by the samplers: batch conditional and unconditional rows together."""

from __future__ import annotations

import torch


def pad_to(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """``x`` zero-padded along ``dim`` up to ``length`` (unchanged if already that long)."""
    extra = length - x.shape[dim]
    if extra <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def concat_prepared(a: dict, b: dict) -> dict:
    """Stack two ``prepare_text`` results along the batch (``a``'s rows first), zero-padding the text length.

    Understands the keys the generators produce: ``mask`` (B, T), ``states`` or ``prefix`` (B, T, D), ``kv``
    (a list of per-layer (k, v), each (B, H, T, Dh)) and ``pooled`` (B, D). Padded text positions are masked out.
    """
    unknown = (set(a) | set(b)) - {"mask", "states", "prefix", "kv", "pooled"}
    if unknown or set(a) != set(b):
        raise ValueError(f"cannot stack prepared text with keys {sorted(a)} and {sorted(b)}")
    out: dict = {}
    t = max(a["mask"].shape[1], b["mask"].shape[1]) if "mask" in a else 0
    if "mask" in a:
        out["mask"] = torch.cat([pad_to(a["mask"], 1, t), pad_to(b["mask"], 1, t)])
    for key in ("states", "prefix"):
        if key in a:
            out[key] = torch.cat([pad_to(a[key], 1, t), pad_to(b[key], 1, t)])
    if "kv" in a:
        out["kv"] = [(torch.cat([pad_to(ka, 2, t), pad_to(kb, 2, t)]),
                      torch.cat([pad_to(va, 2, t), pad_to(vb, 2, t)]))
                     for (ka, va), (kb, vb) in zip(a["kv"], b["kv"])]
    if "pooled" in a:
        out["pooled"] = torch.cat([a["pooled"], b["pooled"]])
    return out


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale · (cond − uncond)``."""
    return uncond + scale * (cond - uncond)
