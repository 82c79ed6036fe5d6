"""CPU inference in bfloat16 with oneDNN-packed weights: an inference-only copy of a masked transformer.

At pixlm's CPU sizes (batch 1 with CFG is 128 rows of width 192) every op is small, so a step costs what its
ops cost to launch more than what they compute. Measured on the 2-core test machine (Xeon with AMX, torch
2.13): a 128×192 → 768 ``nn.Linear`` takes 261 µs in float32, 171 µs under bfloat16 autocast (which re-casts
the weight and lets oneDNN re-block it on every call) and 56 µs as ``torch.ops.mkldnn._linear_pointwise``
on a weight reordered once. This module builds that: :class:`PackedLinear` holds a packed bf16 weight, and
:class:`PackedMaskedTransformer` runs the same network as ``MaskedTransformer`` with fewer, fused ops:

* self-attention's q and kv projections as one linear, with the 1/√d attention scale folded into q's weights;
* the MLP's GELU fused into its first linear (in its exact erf form, as the other fast paths) and every
  residual add fused into the linear before it (oneDNN post-ops);
* the text's keys/values and its attention bias made once per generation (``prepare_text``).

Weights and activations are bfloat16 end to end (LayerNorm accumulates in float32 inside PyTorch's kernel);
logits are returned in float32. Needs oneDNN with bf16 support (:func:`packing_supported`); ``pixlm.fast``
falls back to autocast elsewhere. Results agree with the float32 network to bfloat16 rounding (tested).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.models.layers import resolve_prepared

BF16 = torch.bfloat16
ROWS_HINT = 128  # oneDNN picks its blocking for this many rows; any row count works (batch 1 with CFG: 2 × 64)


def packing_supported() -> bool:
    """Whether this PyTorch build and CPU run oneDNN bf16 linear layers on packed weights."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class PackedLinear(nn.Module):
    """``activation(x Wᵀ + b)`` (+ ``add``) in bfloat16, W reordered once into oneDNN's blocked layout.

    ``activation`` is ``"none"`` or ``"gelu"`` (with ``approximate`` ``"none"`` or ``"tanh"``, as
    ``F.gelu``). ``forward(x, add=t)`` returns ``x Wᵀ + b + t`` in one kernel (no activation then).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none",
                 approximate: str = "none") -> None:
        super().__init__()
        if activation not in ("none", "gelu"):
            raise ValueError(f"activation={activation!r} is not one of ('none', 'gelu')")
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate={approximate!r} is not one of ('none', 'tanh')")
        self.register_buffer("weight", weight.detach().to(BF16).contiguous())  # kept dense: state_dict, copies
        self.register_buffer("bias", None if bias is None else bias.detach().to(BF16).contiguous())
        self.activation, self.approximate = activation, approximate
        # an opaque oneDNN tensor (no storage): a plain attribute, rebuilt by __deepcopy__
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, ROWS_HINT)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs: Any) -> "PackedLinear":
        return cls(linear.weight, linear.bias, **kwargs)

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        if add is not None:
            if self.activation != "none":
                raise ValueError("a fused add follows no activation")
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, self.packed, self.bias, "add")
        algorithm = self.approximate if self.activation == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.activation, [], algorithm)

    def __deepcopy__(self, memo: dict) -> "PackedLinear":
        return PackedLinear(self.weight.clone(), None if self.bias is None else self.bias.clone(),
                            self.activation, self.approximate)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape
        return f"in={inp}, out={out}, activation={self.activation}" + (
            f" ({self.approximate})" if self.activation == "gelu" else "")


def _norm(ln: nn.LayerNorm) -> nn.LayerNorm:
    out = nn.LayerNorm(ln.normalized_shape, eps=ln.eps)
    out.load_state_dict(ln.state_dict())
    return out.to(BF16)


class PackedBlock(nn.Module):
    """``layers.Block`` (pre-norm self-attention, cross-attention to the text, MLP) with packed, fused linears."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        attn, cross, mlp = block.attn, block.cross_attn, block.mlp
        self.heads = attn.heads
        dim = attn.q.weight.shape[0]
        scale = (dim // self.heads) ** -0.5  # folded into q: scores need no extra multiply
        self.norm1, self.norm2, self.norm3 = _norm(block.norm1), _norm(block.norm2), _norm(block.norm3)
        self.qkv = PackedLinear(torch.cat([attn.q.weight * scale, attn.kv_proj.weight]), None)
        self.out1 = PackedLinear.from_linear(attn.out)
        self.cross_q = PackedLinear(cross.q.weight * scale, None)
        self.cross_kv = PackedLinear.from_linear(cross.kv_proj)
        self.out2 = PackedLinear.from_linear(cross.out)
        # erf GELU, not layers.MLP's tanh approximation (at most 5e-4 apart, as pixlm.fast.use_erf_gelu):
        # fused into the linear, the erf form ran 83 µs against 141 µs for tanh (128 × 192 → 768)
        self.fc1 = PackedLinear.from_linear(mlp.fc1, activation="gelu", approximate="none")
        self.fc2 = PackedLinear.from_linear(mlp.fc2)

    def project_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, Dt) text states → keys and values, each (B, H, S, Dh)."""
        b, s, _ = text.shape
        k, v = self.cross_kv(text).view(b, s, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, h, -1).permute(2, 0, 3, 1, 4)  # each (B, H, N, Dh)
        y = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, H, N, Dh); the scale is in q's weights
        x = self.out1(y.transpose(1, 2).reshape(b, n, d), add=x)
        q = self.cross_q(self.norm2(x)).view(b, n, h, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=bias, scale=1.0)
        x = self.out2(y.transpose(1, 2).reshape(b, n, d), add=x)
        return self.fc2(self.fc1(self.norm3(x)), add=x)


class PackedMaskedTransformer(nn.Module):
    """Inference copy of a cross-conditioned ``MaskedTransformer``: same ``config``, ``kind``,
    ``prepare_text`` and ``forward`` interface; bfloat16 inside, float32 logits out. Not trainable, not saved."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if getattr(model, "kind", None) != "masked" or model.config.conditioning != "cross":
            raise ValueError("PackedMaskedTransformer packs cross-conditioned masked transformers; got "
                             f"kind={getattr(model, 'kind', None)!r}, "
                             f"conditioning={getattr(getattr(model, 'config', None), 'conditioning', None)!r}")
        if not packing_supported():
            raise RuntimeError("this PyTorch build/CPU has no oneDNN bf16 support (pixlm.packed.packing_supported)")
        self.config = model.config
        self.kind = model.kind
        self.tok_emb = nn.Embedding.from_pretrained(model.tok_emb.weight.detach().to(BF16))
        self.pos_emb = nn.Parameter(model.pos_emb.detach().to(BF16), requires_grad=False)
        self.blocks = nn.ModuleList(PackedBlock(blk) for blk in model.blocks)
        self.norm = _norm(model.norm)
        self.head = PackedLinear.from_linear(model.head)
        self.requires_grad_(False).eval()

    def prepare_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> dict:
        """Per-layer text keys/values (bfloat16) and the mask, as ``MaskedTransformer.prepare_text``."""
        text = text.to(BF16)
        return {"kv": [blk.project_kv(text) for blk in self.blocks], "mask": text_mask}

    def forward(self, tokens: torch.Tensor, text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                prepared: dict | None = None) -> torch.Tensor:
        """tokens (B, N) → float32 logits (B, N, vocab_size)."""
        prepared = resolve_prepared(self, text, text_mask, prepared)
        mask = prepared["mask"]  # (B, S) True = attend
        # additive attention bias (B, 1, 1, S); a finite minimum so a fully masked row cannot give NaN
        bias = torch.zeros(mask.shape, dtype=BF16).masked_fill_(~mask, torch.finfo(BF16).min)[:, None, None, :]
        x = self.tok_emb(tokens) + self.pos_emb  # (B, N, C)
        for blk, kv in zip(self.blocks, prepared["kv"]):
            x = blk(x, kv, bias)
        return self.head(self.norm(x)).float()

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a packed generator is an inference copy (pixlm.fast.optimize); save the pipeline "
                           "before optimising it")


__all__ = ["PackedLinear", "PackedMaskedTransformer", "packing_supported"]


def pack_linears(module: nn.Module) -> nn.Module:
    """A bfloat16 copy of ``module`` with every ``nn.Linear`` replaced by a :class:`PackedLinear` (for any
    network whose linears are called as modules, e.g. a Hugging Face text encoder); ``module`` is unchanged."""
    import copy

    out = copy.deepcopy(module).to(BF16).requires_grad_(False).eval()
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, PackedLinear.from_linear(child))
    return out
