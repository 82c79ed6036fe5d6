"""Transformer pieces shared by the token generators: attention (self/cross, optional KV cache), MLP, block."""

from __future__ import annotations

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


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ / √d) v with two plain matmuls; ``attn_mask`` is boolean, True = attend.

    At pixlm's CPU sizes (64 image tokens, a few heads) this ran 1.5–2.7× faster than PyTorch's fused SDPA
    kernels in our measurements; ``pixlm.fast.optimize`` switches to it on CPU. A fully masked row attends
    uniformly instead of giving NaN.
    """
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
    return scores.softmax(-1) @ v


class Attention(nn.Module):
    """Multi-head attention. Self-attention when ``context`` is None; cross-attention otherwise.

    ``kv`` lets a caller pass keys/values computed once (e.g. the text's, reused by every sampling step).
    ``matmul`` (off by default) computes non-causal attention with :func:`matmul_attention` instead of SDPA.
    """

    matmul = False

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, Dc) → keys and values, each (B, H, S, Dh)."""
        b, s, _ = context.shape
        k, v = self.kv_proj(context).view(b, s, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None, is_causal: bool = False) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.heads, -1).transpose(1, 2)  # (B, H, T, Dh)
        k, v = kv if kv is not None else self.project_kv(x if context is None else context)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S): True = attend
        if self.matmul and not is_causal:
            y = matmul_attention(q, k, v, attn_mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to the text, MLP."""

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
        x = x + self.attn(self.norm1(x), mask=self_mask, is_causal=is_causal)
        if self.cross:
            x = x + self.cross_attn(self.norm2(x), mask=text_mask, kv=text_kv)
        return x + self.mlp(self.norm3(x))
