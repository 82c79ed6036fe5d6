"""Attention processors (set on the same ``layers.Attention`` modules, as diffusers does) and MiniLM's fused
self-attention.

* :class:`MatmulAttnProcessor`: the layer's own projections, attention by two batched matmuls (int8 path).
* :class:`FusedSelfAttnProcessor`: q, k and v as one packed linear with the 1/√d scale folded into q, the
  attention kernel chosen by row count, the residual add fused into the output projection.
* :class:`FoldedCrossAttnProcessor`: the text is fixed for a whole call, so per head q·kᵀ = LN(x)·(W_q,h K_hᵀ)
  and softmax(·)·V·W_o,hᵀ = P·(V_h W_o,h): ``prepare`` builds the two maps per layer once per prompt (one linear
  of the text, W_q,hᵀW_k,h and W_o,hW_v,h multiplied out at load: 0.47 against 0.74 ms for two prompts, bf16, Zen 4),
  and every step's cross-attention becomes a batched matmul (mask bias fused), a softmax and a batched matmul (residual
  fused) instead of the q projection, attention and output projection. Exact up to rounding; fewer FLOPs while
  S·(H − 1) ≤ C (longer text takes keys and values). The sublayer alone (bf16, 192 wide, 4 heads, 16 text
  positions): 232 against 421 µs at 2 rows, 4.1 against 8.4 ms at 128.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.inference.linear import PackedLinear, linear_add
from pixlm.models.layers import Attention, AttnProcessor, PerText

# From how many rows attention by two batched matmuls and a softmax (over (B·H, N, Dh) views) beats the fused
# SDPA kernel on the CPU, per dtype: (self, cross). bf16 (2-core AMD EPYC Zen 4, 4 heads of 48 over 64 tokens, the
# whole sublayer from the qkv output to the merged heads): self-attention 168 against 217 µs at 4 rows, 454 against
# 747 µs at 16 (batch 8 with CFG) and 4.0 against 7.9 ms at 128, but a tie at 2; cross-attention to 16 text
# positions 312 against 375 µs at 16 rows and 2.3 against 3.7 ms at 128, but 107 against 58 µs at 2.
# float32 (2-core AMD EPYC Zen 3, AVX2): self-attention by SDPA at every size (1.2 against 2.9 ms at 16 rows
# with 4-D matmuls), cross-attention by matmuls at every size (0.37 against 0.79 ms at 16 rows). CUDA: SDPA.
MATMUL_FROM_ROWS: dict[torch.dtype, tuple[float, float]] = {torch.bfloat16: (4, 16), torch.float32: (math.inf, 1)}


def attention_bias(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) True = attend → additive bias (B, 1, 1, S); a finite minimum, so a fully masked row gives no NaN."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(
        ~keep, torch.finfo(dtype).min)[:, None, None, :]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, matmul: bool,
           scale: float | None = 1.0) -> torch.Tensor:
    """softmax(scale · q kᵀ + bias) v over (B, H, ·, Dh) tensors → (B, H, N, Dh); ``bias`` (B, 1, 1, S) or None.

    ``matmul``: two batched matmuls over (B·H, ·, Dh) (views when the inputs are contiguous; 4-D matmuls copied
    and were slower), else the fused SDPA kernel. ``scale`` None: 1/√Dh; the fused processors fold it into q.
    """
    if not matmul:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    b, h, n, d = q.shape
    s = k.shape[2]
    q3, k3, v3 = q.reshape(b * h, n, d), k.reshape(b * h, s, d), v.reshape(b * h, s, d)
    alpha = d ** -0.5 if scale is None else scale
    if bias is None:
        scores = torch.bmm(q3, k3.transpose(1, 2))
        if alpha != 1.0:
            scores.mul_(alpha)
    else:
        scores = torch.baddbmm(bias.expand(b, h, 1, s).reshape(b * h, 1, s), q3, k3.transpose(1, 2), alpha=alpha)
    return torch.bmm(torch.softmax(scores, dim=-1), v3).view(b, h, n, d)


def _uses_matmul(x: torch.Tensor, self_attention: bool) -> bool:
    if x.device.type != "cpu":
        return False
    rows = MATMUL_FROM_ROWS.get(x.dtype, (math.inf, math.inf))[0 if self_attention else 1]
    return x.shape[0] >= rows


class MatmulAttnProcessor(AttnProcessor):
    """The reference computation with attention by two batched matmuls (non-causal calls): at pixlm's CPU sizes
    this beat SDPA for float32 cross-attention and larger batches; a fully masked row attends uniformly."""

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                 is_causal: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        if is_causal:
            return super().__call__(attn, x, context, mask, kv, is_causal, residual)
        b, t, d = x.shape
        q = attn.q(x).view(b, t, attn.heads, -1).transpose(1, 2)  # (B, H, T, Dh)
        k, v = kv if kv is not None else attn.project_kv(x if context is None else context)
        bias = None if mask is None else attention_bias(mask, q.dtype)
        y = attend(q, k.contiguous(), v.contiguous(), bias, True, scale=None)
        return linear_add(attn.out, y.transpose(1, 2).reshape(b, t, d), residual)


class FusedSelfAttnProcessor(AttnProcessor):
    """Self-attention with q, k and v as one :class:`PackedLinear` in ``dtype`` (1/√d folded into q's rows),
    the kernel chosen by rows (``MATMUL_FROM_ROWS``), the residual add fused into the output projection (make
    ``attn.out`` a ``PackedLinear`` too). Built from ``attn``'s float weights before they are swapped."""

    def __init__(self, attn: Attention, dtype: torch.dtype, prepack: bool = True) -> None:
        dim = attn.q.weight.shape[0]
        self.heads = attn.heads
        scale = (dim // self.heads) ** -0.5
        self.qkv = PackedLinear(torch.cat([attn.q.weight * scale, attn.kv_proj.weight]), None, dtype=dtype,
                                prepack=prepack)

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                 is_causal: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None or kv is not None or is_causal:
            raise ValueError("FusedSelfAttnProcessor serves bidirectional self-attention (no context, kv or causal mask)")
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, N, Dh)
        matmul = _uses_matmul(qkv[0], True)  # by the batch rows B (not the 3 of q, k, v)
        if matmul:  # one copy for all three, then views for the batched matmuls
            qkv = qkv.contiguous()
        q, k, v = qkv
        bias = None if mask is None else attention_bias(mask, q.dtype)
        y = attend(q, k, v, bias, matmul)  # (B, H, N, Dh); the scale is in q's weights
        return linear_add(attn.out, y.transpose(1, 2).reshape(b, n, d), residual)


class FoldedText(PerText):
    """A layer's text as :class:`FoldedCrossAttnProcessor` keeps it: ``scores`` (B, C, H, S) and ``values``
    (B, H, S, C)."""


class FoldedCrossAttnProcessor(AttnProcessor):
    """Cross-attention folded per prompt (see the module docstring), in ``dtype``; keys and values (with a scaled
    packed q projection) for text longer than S·(H − 1) ≤ C. Built from ``attn``'s float weights."""

    def __init__(self, attn: Attention, dtype: torch.dtype, prepack: bool = True) -> None:
        dim = attn.q.weight.shape[0]
        heads = self.heads = attn.heads
        dh = dim // heads
        scale = dh ** -0.5
        self.dtype, self.dim = dtype, dim
        self.q = PackedLinear(attn.q.weight * scale, None, dtype=dtype, prepack=prepack)
        w_q = (attn.q.weight.detach().float() * scale).view(heads, dh, dim)  # (H, Dh, C)
        w_o = attn.out.weight.detach().float().view(dim, heads, dh).permute(1, 2, 0)  # (H, Dh, C)
        w_k, w_v = attn.kv_proj.weight.detach().float().view(2, heads, dh, -1)  # (H, Dh, E) each
        bias = attn.out.bias
        # shared out over the heads: each head's attention weights sum to 1
        out_bias = (bias.detach().float() if bias is not None else torch.zeros(dim, device=w_o.device)) / heads
        # the text's scores map (W_q,h^T W_k,h) and values (W_o,h W_v,h) for every head as one linear of the text
        self.fold = PackedLinear(torch.cat([torch.einsum("hdc,hde->hce", w_q, w_k).reshape(heads * dim, -1),
                                            torch.einsum("hdc,hde->hce", w_o, w_v).reshape(heads * dim, -1)]),
                                 torch.cat([torch.zeros(heads * dim, device=w_o.device), out_bias.repeat(heads)]),
                                 dtype=dtype, prepack=prepack)
        self._last_bias: tuple | None = None  # (mask, dtype, bias) of the last call: see _folded_bias

    def _folded_bias(self, mask: torch.Tensor, dtype: torch.dtype, heads: int) -> torch.Tensor:
        """(B, 1, H·S) additive bias of the text mask, built once per call: every step passes the same mask."""
        last = self._last_bias
        if last is None or last[0] is not mask or last[1] != dtype:
            b, s = mask.shape
            bias = attention_bias(mask, dtype).expand(b, 1, heads, s).reshape(b, 1, heads * s)
            self._last_bias = last = (mask, dtype, bias)
        return last[2]

    def prepare(self, attn: Attention, context: torch.Tensor) -> PerText:
        b, s, _ = context.shape
        if s * (self.heads - 1) > self.dim:  # folding would cost more FLOPs than it saves
            return PerText((t.contiguous() for t in attn.project_kv(context)), (2, 2))  # views for the matmuls
        folded = self.fold(context).view(b, s, 2, self.heads, self.dim)  # one linear for both maps
        scores = folded[:, :, 0].permute(0, 3, 2, 1).contiguous()  # (B, C, H, S)
        values = folded[:, :, 1].transpose(1, 2).contiguous()  # (B, H, S, C)
        return FoldedText((scores, values), (3, 2))

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                 is_causal: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        if kv is None:
            kv = self.prepare(attn, context)
        b, n, d = x.shape
        h = self.heads
        x = x.to(self.dtype)
        if isinstance(kv, FoldedText):  # two batched matmuls and a softmax
            scores_map, values = kv
            s = scores_map.shape[-1]
            lhs = scores_map.view(b, d, h * s)
            if mask is None:
                scores = torch.bmm(x, lhs)
            else:
                scores = torch.baddbmm(self._folded_bias(mask, x.dtype, h), x, lhs)  # (B, N, H·S)
            p = torch.softmax(scores.view(b, n, h, s), dim=-1).view(b, n, h * s)
            if residual is None:
                return torch.bmm(p, values.view(b, h * s, d))
            return torch.baddbmm(residual.to(self.dtype), p, values.view(b, h * s, d))
        q = self.q(x).view(b, n, h, -1).transpose(1, 2)  # (B, H, N, Dh), scale folded in
        bias = None if mask is None else attention_bias(mask, q.dtype)
        y = attend(q, kv[0], kv[1], bias, _uses_matmul(q, False))
        return linear_add(attn.out, y.transpose(1, 2).reshape(b, n, d), residual)


class FusedBertSelfAttention(nn.Module):
    """A swap for ``pixlm.text.bert.BertSelfAttention``: query, key and value as one :class:`PackedLinear` in
    ``dtype`` with 1/√d folded into the query rows, then SDPA. Same call: ``(x, bias) → (B, T, C)``."""

    def __init__(self, att: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.heads = att.heads
        scale = (att.query.weight.shape[0] // self.heads) ** -0.5
        self.qkv = PackedLinear(torch.cat([att.query.weight * scale, att.key.weight, att.value.weight]),
                                torch.cat([att.query.bias * scale, att.key.bias, att.value.bias]), dtype=dtype)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        bias = None if bias is None else bias.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        return y.transpose(1, 2).reshape(b, t, d)
