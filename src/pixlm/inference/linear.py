"""Linear and convolution swaps: oneDNN-packed (bfloat16) or dense float32 layers with fused post-ops.

At pixlm's CPU sizes (batch 1 with CFG is 128 rows of width 192) every op is small, so a step costs what its
ops cost to launch more than what they compute. Measured on a 2-core Xeon with AMX (torch 2.13): a
128×192 → 768 ``nn.Linear`` takes 261 µs in float32, 171 µs under bfloat16 autocast (which re-casts the weight
and lets oneDNN re-block it on every call) and 56 µs as ``torch.ops.mkldnn._linear_pointwise`` on a weight
reordered once. :class:`PackedLinear` is that layer, with the GELU or a residual add fused in (oneDNN post-ops).

In float32 (CPUs without bf16 arithmetic) the weights stay dense and run through ``F.linear`` (MKL), the
post-ops applied after it, and convolutions stay ``nn.Conv2d``: on an AVX2 Zen 3 oneDNN's packed float32
kernels lost to those at these sizes (192→192 with a fused add 139 against 100 µs; the float32 VQ decoder
with packed convolutions 27 against 14 ms with channels-last ``nn.Conv2d``). On CUDA the layers are plain
``F.linear`` in their dtype. Every swapped layer takes any float input and casts it to its own dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

BF16 = torch.bfloat16
PACK_DTYPES = (torch.bfloat16, torch.float32)
ROWS_HINT = 128  # oneDNN picks its blocking for this many rows; any row count works (batch 1 with CFG: 2 × 64)


def packing_supported(dtype: torch.dtype = BF16) -> bool:
    """Whether this PyTorch build and CPU run oneDNN's kernels in ``dtype`` (float32: any build with oneDNN;
    bfloat16: also a CPU with native bf16 dot products, AVX512-BF16 or AMX — elsewhere bf16 is emulated)."""
    _check_dtype(dtype)
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        return dtype == torch.float32 or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in PACK_DTYPES:
        raise ValueError(f"dtype={dtype} is not one of {PACK_DTYPES}")


class PackedLinear(nn.Module):
    """``activation(x Wᵀ + b)`` (+ ``add``) in ``dtype``; on the CPU in bfloat16, W reordered once into oneDNN's
    blocked layout. ``activation``: ``"none"`` or ``"gelu"`` (``approximate`` ``"none"`` or ``"tanh"``, as
    ``F.gelu``). ``forward(x, add=t)`` returns ``x Wᵀ + b + t`` (one kernel when packed; no activation then).
    The state dict keeps ``weight`` and ``bias``, as ``nn.Linear``'s. ``prepack=False`` keeps the weight dense
    (``F.linear`` then the post-op) for ``torch.compile``, whose Inductor packs weights itself and cannot lower
    the opaque packed one."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none",
                 approximate: str = "none", dtype: torch.dtype = BF16, prepack: bool = True) -> None:
        super().__init__()
        _check_dtype(dtype)
        if activation not in ("none", "gelu"):
            raise ValueError(f"activation={activation!r} is not one of ('none', 'gelu')")
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate={approximate!r} is not one of ('none', 'tanh')")
        self.register_buffer("weight", weight.detach().to(dtype).contiguous())  # kept dense: state_dict, copies
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype).contiguous())
        self.activation, self.approximate = activation, approximate
        # an opaque oneDNN tensor (no storage): a plain attribute, rebuilt by __deepcopy__
        packed = prepack and dtype == BF16 and self.weight.device.type == "cpu"
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, ROWS_HINT) if packed else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs: Any) -> "PackedLinear":
        return cls(linear.weight, linear.bias, **kwargs)

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        if add is not None and self.activation != "none":
            raise ValueError("a fused add follows no activation")
        if x.dtype != self.weight.dtype:  # (a no-op .to still costs a dispatch: this runs ~200 times a picture)
            x = x.to(self.weight.dtype)
        if self.packed is None:  # dense GEMM, then the post-op
            y = F.linear(x, self.weight, self.bias)
            if add is not None:
                return y.add_(add)
            return F.gelu(y, approximate=self.approximate) if self.activation == "gelu" else y
        if add is not None:
            add = add if add.dtype == x.dtype else add.to(x.dtype)
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, self.packed, self.bias, "add")
        algorithm = self.approximate if self.activation == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.activation, [], algorithm)

    def __deepcopy__(self, memo: dict) -> "PackedLinear":
        return PackedLinear(self.weight.clone(), None if self.bias is None else self.bias.clone(),
                            self.activation, self.approximate, self.weight.dtype, self.packed is not None)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape
        return f"in={inp}, out={out}, dtype={self.weight.dtype}, activation={self.activation}" + (
            f" ({self.approximate})" if self.activation == "gelu" else "")


def linear_add(linear: nn.Module, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """``linear(x)`` plus ``residual`` (when given), fused when ``linear`` is a :class:`PackedLinear`."""
    if residual is None:
        return linear(x)
    if isinstance(linear, PackedLinear):
        return linear(x, add=residual)
    return residual + linear(x)


class PackedMLP(nn.Module):
    """``layers.MLP`` with its GELU fused into ``fc1`` (exact erf form: at most 5e-4 from the tanh form, and
    its fused kernel ran 83 against 141 µs for tanh, 128 × 192 → 768 bf16) and the residual add into ``fc2``."""

    def __init__(self, mlp: nn.Module, dtype: torch.dtype, prepack: bool = True) -> None:
        super().__init__()
        self.fc1 = PackedLinear.from_linear(mlp.fc1, activation="gelu", approximate="none", dtype=dtype,
                                            prepack=prepack)
        self.fc2 = PackedLinear.from_linear(mlp.fc2, dtype=dtype, prepack=prepack)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return linear_add(self.fc2, self.fc1(x), residual)


class PackedAddNorm(nn.Module):
    """A swap for a post-norm output block, ``LayerNorm(dense(h) + residual)`` (BERT's ``BertSelfOutput`` and
    ``BertOutput``), with the residual add fused into the packed ``dense``. Same call: ``(h, residual)``."""

    def __init__(self, block: nn.Module, dtype: torch.dtype, prepack: bool = True) -> None:
        super().__init__()
        self.dense = PackedLinear.from_linear(block.dense, dtype=dtype, prepack=prepack)
        self.LayerNorm = block.LayerNorm

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h, add=residual))


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


class PackedConv2d(nn.Module):
    """A 2-D convolution in bfloat16 on a weight reordered once for oneDNN (``nn.Conv2d`` under autocast
    re-casts and re-blocks its weight on every call: 184 against 127 µs for a 128-channel 3×3 conv on an 8×8
    map). Output is channels-last; any batch size and input size work. CPU only."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, dtype: torch.dtype = BF16) -> None:
        super().__init__()
        _check_dtype(dtype)
        self.register_buffer("weight", weight.detach().to(dtype).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype).contiguous())
        self.stride, self.padding, self.dilation = (_pair(v) for v in (stride, padding, dilation))
        self.groups = groups
        self.packed = self._pack()  # opaque, as PackedLinear.packed

    @staticmethod
    def supports(conv: nn.Module) -> bool:
        """Whether ``conv`` is an ``nn.Conv2d`` with the numeric zero padding oneDNN's packed convolution takes."""
        return isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, dtype: torch.dtype = BF16) -> "PackedConv2d":
        if not cls.supports(conv):
            raise ValueError(f"PackedConv2d needs numeric zero padding; got padding={conv.padding!r}, "
                             f"padding_mode={conv.padding_mode!r}")
        return cls(conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups, dtype)

    def _pack(self) -> torch.Tensor:  # input size None: a layout that serves every input size
        return torch._C._nn.mkldnn_reorder_conv2d_weight(self.weight.to_mkldnn(), self.padding, self.stride,
                                                         self.dilation, self.groups, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x.to(self.weight.dtype), self.packed, self.bias, self.padding,
                                                       self.stride, self.dilation, self.groups, "none", [], "")

    def __deepcopy__(self, memo: dict) -> "PackedConv2d":
        return PackedConv2d(self.weight.clone(), None if self.bias is None else self.bias.clone(), self.stride,
                            self.padding, self.dilation, self.groups, self.weight.dtype)

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return f"{i * self.groups}, {o}, kernel=({kh}, {kw}), stride={self.stride}, padding={self.padding}"


class UpsampleConv2d(nn.Module):
    """``conv(upsample_nearest_2x(x))`` for a 3×3, stride-1, zero-padded ``conv``, computed at the low resolution.

    After a nearest 2× upsampling, each of the four output phases (row and column parity) sees only 2×2 distinct
    input pixels through the 3×3 window, so the pair is one 2×2 convolution of the small map (padded by 1) with
    the four phases' summed kernels as 4·C_out channels, then the phases interleaved: (4/9)(1 + 1/H)² of the
    FLOPs (the decoder's three upsampling convolutions: about half) and no upsampled copy. Exact up to rounding.
    ``conv`` stays a plain ``nn.Conv2d`` (2×2), so ``swap_layers(..., convs=True)`` packs it like any other."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not self.supports(conv):
            raise ValueError(f"UpsampleConv2d needs a 3x3, stride-1, padding-1, zero-padded, ungrouped nn.Conv2d; "
                             f"got {conv}")
        w = conv.weight.detach().float()  # (O, I, 3, 3)
        o, i = w.shape[:2]
        # phase 0 reads rows (r-1, r): taps k0 | k1 + k2; phase 1 reads rows (r, r+1): taps k0 + k1 | k2
        fold = torch.tensor([[[1.0, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], device=w.device)  # (phase, tap, k)
        phases = torch.einsum("apr,bqs,oirs->aboipq", fold, fold, w).reshape(4 * o, i, 2, 2)
        self.conv = nn.Conv2d(i, 4 * o, 2, padding=1, bias=conv.bias is not None).to(w.device)
        with torch.no_grad():
            self.conv.weight.copy_(phases)
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach().float().repeat(4))
        self.conv.to(conv.weight.dtype).requires_grad_(False)
        self.out_channels = o

    @staticmethod
    def supports(conv: nn.Module) -> bool:
        return (isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (3, 3) and tuple(conv.stride) == (1, 1)
                and tuple(conv.padding) == (1, 1) and tuple(conv.dilation) == (1, 1) and conv.groups == 1
                and conv.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        o = self.out_channels
        # (B, 4·O, H + 1, W + 1), channels last (oneDNN's output): phase (a, c) is rows a..a+H-1, columns c..c+W-1
        y = self.conv(x).permute(0, 2, 3, 1).contiguous().view(b, h + 1, w + 1, 2, 2, o)
        out = y.new_empty(b, h, 2, w, 2, o)  # channels last: row 2i + a, column 2j + c
        for a in (0, 1):
            for c in (0, 1):
                out[:, :, a, :, c].copy_(y[:, a:a + h, c:c + w, a, c])
        return out.view(b, 2 * h, 2 * w, o).permute(0, 3, 1, 2)  # (B, O, 2H, 2W) in channels-last memory


def fuse_upsample_convs(seq: nn.Sequential) -> int:
    """In place: every nearest 2× ``nn.Upsample`` directly followed by a 3×3 ``nn.Conv2d`` in ``seq`` becomes an
    ``nn.Identity`` and an :class:`UpsampleConv2d`. Returns how many pairs were fused."""
    def doubles(up: nn.Module) -> bool:
        if not isinstance(up, nn.Upsample) or up.mode != "nearest" or up.size is not None:
            return False
        factors = up.scale_factor if isinstance(up.scale_factor, (tuple, list)) else (up.scale_factor,) * 2
        return all(float(f) == 2.0 for f in factors)

    names = list(seq._modules)
    n = 0
    for first, second in zip(names, names[1:]):
        up, conv = seq._modules[first], seq._modules[second]
        if doubles(up) and UpsampleConv2d.supports(conv):
            seq._modules[first], seq._modules[second] = nn.Identity(), UpsampleConv2d(conv)
            n += 1
    return n


def swap_layers(module: nn.Module, dtype: torch.dtype, convs: bool = False, prepack: bool = True) -> int:
    """In place: ``module`` in ``dtype``, every ``layers.MLP`` replaced by a :class:`PackedMLP`, every other
    ``nn.Linear`` by a :class:`PackedLinear` (``prepack``: see there) and, when ``convs``, every zero-padded
    ``nn.Conv2d`` by a :class:`PackedConv2d` (bfloat16 on the CPU only). Returns how many modules were replaced."""
    from pixlm.models.layers import MLP

    _check_dtype(dtype)
    if convs and not (dtype == BF16 and packing_supported(BF16)):
        raise ValueError(f"packed convolutions need bfloat16 on a CPU with oneDNN bf16 support; got dtype={dtype}")
    module.to(dtype).requires_grad_(False).eval()
    n = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MLP):
                new: nn.Module | None = PackedMLP(child, dtype, prepack)
            elif isinstance(child, nn.Linear):
                new = PackedLinear.from_linear(child, dtype=dtype, prepack=prepack)
            elif convs and PackedConv2d.supports(child):
                new = PackedConv2d.from_conv(child, dtype)
            else:
                new = None
            if new is not None:
                setattr(parent, name, new)
                n += 1
    return n


def _cast_floats(x: Any, dtype: torch.dtype) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(dtype) if x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(_cast_floats(v, dtype) for v in x)
    return x


def cast_io(module: nn.Module, dtype: torch.dtype) -> None:
    """Forward hooks on ``module``: float inputs cast to ``dtype``, float outputs handed back in float32 (a network
    computing in bfloat16 behind a float32 interface: the text encoder, the VQ decoder)."""
    module.register_forward_pre_hook(lambda m, args: _cast_floats(args, dtype))
    module.register_forward_hook(lambda m, args, out: _cast_floats(out, torch.float32))
