"""Transformer pieces shared by the token generators: attention (self/cross, optional KV cache), MLP, block.

Attention computes through a *processor* (as in diffusers): :class:`AttnProcessor` here is the reference
(projections, SDPA, output projection); ``pixlm.inference`` sets faster ones on the same modules at load time
(fused projections, batched-matmul attention, cross-attention folded per prompt). A processor also prepares
what a layer keeps of the text (``Attention.prepare_context``), as a :class:`PerText`: tensors with a declared
text axis, so samplers can pad and stack prepared text without knowing what the tensors are.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F


def init_weights(m: nn.Module) -> None:
    """GPT-2 style init for ``module.apply``: N(0, 0.02) linear and embedding weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


def resolve_prepared(model, text: torch.Tensor | None, text_mask: torch.Tensor | None,
                     prepared: dict | None) -> dict:
    """``prepared`` if given, else ``model.prepare_text(text, text_mask)`` (the generators' forward prologue)."""
    if prepared is not None:
        return prepared
    if text is None or text_mask is None:
        raise ValueError("pass text states and mask, or prepared=prepare_text(...)")
    return model.prepare_text(text, text_mask)


class PerText(tuple):
    """A layer's tensors prepared from the text (e.g. keys and values), each batch-first, with its text axis in
    ``dims``: what samplers need to pad prompts of different lengths and stack conditional and unconditional
    rows (``pixlm.sampling.cfg``). Padded positions are masked out by the text mask."""

    dims: tuple[int, ...]

    def __new__(cls, tensors: Iterable[torch.Tensor], dims: Iterable[int]) -> "PerText":
        obj = super().__new__(cls, tensors)
        obj.dims = tuple(dims)
        if len(obj.dims) != len(obj):
            raise ValueError(f"{len(obj)} tensors but {len(obj.dims)} text axes")
        return obj

    def map(self, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> "PerText":
        """``fn(tensor, text_axis)`` applied to each tensor; the same class and axes."""
        return type(self)((fn(t, d) for t, d in zip(self, self.dims)), self.dims)

    def __reduce__(self) -> Any:
        return (type(self), (tuple(self), self.dims))


class AttnProcessor:
    """Reference attention: q and k/v projections, ``F.scaled_dot_product_attention``, output projection.

    ``prepare(attn, context)`` → the layer's prepared text, ``PerText((k, v))`` each (B, H, S, Dh).
    """

    def prepare(self, attn: "Attention", context: torch.Tensor) -> PerText:
        return PerText(attn.project_kv(context), (2, 2))

    def __call__(self, attn: "Attention", x: torch.Tensor, context: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                 is_causal: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q = attn.q(x).view(b, t, attn.heads, -1).transpose(1, 2)  # (B, H, T, Dh)
        k, v = kv if kv is not None else attn.project_kv(x if context is None else context)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S): True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        out = attn.out(y.transpose(1, 2).reshape(b, t, d))
        return out if residual is None else residual + out


class Attention(nn.Module):
    """Multi-head attention. Self-attention when ``context`` is None; cross-attention otherwise.

    ``kv`` lets a caller pass keys/values computed once (e.g. the text's, reused by every sampling step:
    ``prepare_context``). ``residual``, when given, is added to the output (``residual + attention``), which
    lets a processor fuse the add into the output projection. The computation is ``self.processor``'s.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.processor: AttnProcessor = AttnProcessor()

    def set_processor(self, processor: Any) -> None:
        """Compute attention with ``processor`` from now on (``pixlm.inference`` sets faster ones)."""
        self.processor = processor

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, Dc) → keys and values, each (B, H, S, Dh)."""
        b, s, _ = context.shape
        k, v = self.kv_proj(context).view(b, s, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def prepare_context(self, context: torch.Tensor) -> PerText:
        """(B, S, Dc) context → what the processor keeps of it for ``forward(kv=...)`` (keys and values by default)."""
        return self.processor.prepare(self, context)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None, is_causal: bool = False,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.processor(self, x, context=context, mask=mask, kv=kv, is_causal=is_causal, residual=residual)


class MLP(nn.Module):
    """fc1 → GELU (tanh form) → fc2; ``residual``, when given, is added to the output."""

    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = nn.GELU(approximate="tanh")  # no weights: swapping it (pixlm.inference) keeps checkpoints as they are

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        out = self.fc2(self.act(self.fc1(x)))
        return out if residual is None else residual + out


class Block(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to the text, MLP (each adds to the residual)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, text_dim: int | None) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.cross = text_dim is not None
        if self.cross:
            self.norm2, self.cross_attn = nn.LayerNorm(dim), Attention(dim, heads, context_dim=text_dim)
        self.norm3, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, self_mask: torch.Tensor | None = None,
                text_kv: tuple[torch.Tensor, torch.Tensor] | None = None, text_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        x = self.attn(self.norm1(x), mask=self_mask, is_causal=is_causal, residual=x)
        if self.cross:
            x = self.cross_attn(self.norm2(x), mask=text_mask, kv=text_kv, residual=x)
        return self.mlp(self.norm3(x), residual=x)
