"""pixlm.inference: swaps on the same modules (packed/fused linears and convolutions, attention processors, int8)
agree with the reference network; optimize validates its argument and picks the path by what the CPU supports."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.inference import PRECISIONS, optimize, recommended_precision
from pixlm.inference import attention as attn_mod
from pixlm.inference.attention import FoldedCrossAttnProcessor, FoldedText, FusedSelfAttnProcessor
from pixlm.inference.linear import (PackedConv2d, PackedLinear, PackedMLP, UpsampleConv2d, fuse_upsample_convs,
                                   packing_supported, swap_layers)
from pixlm.inference.precision import set_fused_processors
from pixlm.models.layers import AttnProcessor
from pixlm.models.masked import MaskedConfig, MaskedTransformer
from pixlm.testing import tiny_pipeline, tiny_pipeline_for

BF16, FP32 = torch.bfloat16, torch.float32
NO_BF16 = pytest.mark.skipif(not packing_supported(BF16), reason="no oneDNN bf16 arithmetic on this CPU/build")
DTYPES = [pytest.param(FP32, id="fp32"), pytest.param(BF16, id="bf16", marks=NO_BF16)]
TOL = {FP32: 1e-4, BF16: 0.02}  # relative error: float32 summation order, or bf16 rounding
PROMPTS = ["a red circle", "a blue square above a green triangle"]


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def _pixels(out) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.stack([np.asarray(im) for im in out.images]).astype("int16"))


def _gen(pipe, seed: int = 3, **kw):
    return pipe.generate(PROMPTS, num_images_per_prompt=2, seed=seed, **kw)


# ---------------------------------------------------------------------------------------------- optimize
def test_reference_changes_nothing():
    ref = _gen(tiny_pipeline())
    pipe = optimize(tiny_pipeline(), "reference", threads=1)
    out = _gen(pipe)
    assert torch.get_num_threads() == 1 and pipe.inference_settings["precision"] == "reference"
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(_pixels(out), _pixels(ref))
    assert all(type(m.processor) is AttnProcessor for m in pipe.generator.modules() if hasattr(m, "processor"))


def test_optimize_validates_its_arguments():
    with pytest.raises(ValueError, match=r"precision='fast' is not one of \('auto', 'reference', 'fp32'"):
        optimize(tiny_pipeline(), "fast")
    with pytest.raises(ValueError, match="threads"):
        optimize(tiny_pipeline(), threads=0)
    with pytest.raises(TypeError, match="compile='yes'"):
        optimize(tiny_pipeline(), compile="yes")
    with pytest.raises(ValueError, match="this generator is 'autoregressive'"):
        optimize(tiny_pipeline_for("autoregressive"), "fp32")
    pipe = optimize(tiny_pipeline(), "fp32")
    with pytest.raises(ValueError, match="already optimised"):
        optimize(pipe, "int8")
    with pytest.raises(RuntimeError, match="save the pipeline before"):
        pipe.save_pretrained("/nonexistent/never-written")
    from pixlm.pipelines.text_to_image import load_pipeline

    with pytest.raises(ValueError, match="precision='fast'"):  # refused before anything loads
        load_pipeline("/nonexistent/model", precision="fast")


def test_auto_follows_what_the_cpu_computes(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr("pixlm.inference.precision.packing_supported", lambda dtype=BF16, n=native: n or dtype == FP32)
        assert recommended_precision(tiny_pipeline()) == ("bf16" if native else "fp32")
    assert recommended_precision(tiny_pipeline_for("autoregressive")) == "reference"  # fast paths unmeasured there
    monkeypatch.setattr("pixlm.inference.precision.packing_supported", lambda dtype=BF16: dtype == FP32)
    pipe = optimize(tiny_pipeline())
    assert pipe.inference_settings["precision"] == "fp32" and pipe.inference_settings["requested"] == "auto"
    with pytest.warns(RuntimeWarning, match="without bf16 arithmetic"):
        optimize(tiny_pipeline(), "bf16")
    assert set(PRECISIONS) == {"auto", "reference", "fp32", "bf16", "int8"}


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=NO_BF16), "int8"])
def test_each_precision_generates_close_to_reference(precision):
    ref, pipe = tiny_pipeline(), optimize(tiny_pipeline(), precision)
    g = ref.generator
    tokens = torch.randint(0, g.config.vocab_size + 1, (4, g.config.num_tokens), generator=torch.Generator().manual_seed(0))
    text, mask = torch.randn(4, 5, 16), torch.ones(4, 5, dtype=torch.bool)
    with torch.inference_mode():
        a, b = g(tokens, text, mask), pipe.generator(tokens, text, mask).float()
    assert _rel(b, a) < {"fp32": 1e-3, "bf16": 0.03, "int8": 0.1}[precision]
    a, b = _gen(ref), _gen(pipe)
    assert b.tokens.shape == (4, 8, 8) and int(b.tokens.max()) < g.config.vocab_size
    assert (a.tokens == b.tokens).float().mean() > (0.9 if precision == "fp32" else 0.3)
    assert torch.equal(_gen(pipe).tokens, b.tokens)  # seeded: repeatable
    if precision == "fp32":  # the decoder only changed layout: pixels within rounding for equal tokens
        same = (a.tokens == b.tokens).flatten(1).all(1)
        assert (_pixels(b)[same] - _pixels(a)[same]).abs().max() <= 1


def test_compile_compiles_the_generator_blocks(monkeypatch):
    real, modes = torch.compile, []

    def eager_compile(fn, mode=None, **kw):  # the eager backend: no C++ toolchain needed
        modes.append(mode)
        return real(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    a = _gen(optimize(tiny_pipeline(), "fp32"), seed=5)
    b = _gen(optimize(tiny_pipeline(), "fp32", compile=True), seed=5)
    assert modes == [None] and torch.equal(a.tokens, b.tokens)  # one block; the default mode on CPU


@NO_BF16
def test_compile_keeps_bf16_weights_dense_for_inductor(monkeypatch):
    """Inductor cannot lower oneDNN's opaque packed weights (it packs its own): compiled swaps stay dense."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # the layout is the point here, not compiling
    gen = optimize(tiny_pipeline(), "bf16", compile=True).generator
    assert gen.head.packed is None and gen.blocks[0].attn.processor.qkv.packed is None
    assert optimize(tiny_pipeline(), "bf16").generator.head.packed is not None


# ---------------------------------------------------------------------------------------------- layers
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24)])
def test_packed_linear_matches_linear(shape, dtype):
    torch.manual_seed(0)
    lin = nn.Linear(24, 40)
    x = torch.randn(*shape)
    ref = F.linear(x.to(dtype), lin.weight.to(dtype), lin.bias.to(dtype))
    p = PackedLinear.from_linear(lin, dtype=dtype)
    assert p(x).dtype == dtype and _rel(p(x), ref) < TOL[dtype] / 2  # float32 input cast to the layer's dtype
    other = torch.randn_like(ref)
    assert _rel(p(x, add=other), ref + other) < TOL[dtype] / 2  # fused residual add
    for approximate in ("none", "tanh"):
        g = PackedLinear.from_linear(lin, activation="gelu", approximate=approximate, dtype=dtype)
        assert _rel(g(x), F.gelu(ref.float(), approximate=approximate)) < TOL[dtype]
    q = copy.deepcopy(p)  # the opaque packed weight has no storage: rebuilt from the dense copy
    assert torch.equal(p(x), q(x)) and set(p.state_dict()) == {"weight", "bias"}


def test_packed_linear_refuses_bad_settings():
    lin = nn.Linear(8, 8)
    with pytest.raises(ValueError, match="fused add"):
        PackedLinear.from_linear(lin, activation="gelu", dtype=FP32)(torch.randn(2, 8), add=torch.randn(2, 8))
    with pytest.raises(ValueError, match="activation='relu'"):
        PackedLinear.from_linear(lin, activation="relu", dtype=FP32)
    with pytest.raises(ValueError, match="dtype=torch.float16 is not one of"):
        PackedLinear.from_linear(lin, dtype=torch.float16)
    with pytest.raises(ValueError, match="dtype=torch.float64 is not one of"):
        packing_supported(torch.float64)


@NO_BF16
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=1, bias=False)])
def test_packed_conv_matches_conv_at_any_input_size(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, **kwargs)
    packed = PackedConv2d.from_conv(conv)
    with torch.no_grad():
        for shape in [(1, 6, 8, 8), (3, 6, 13, 9)]:  # one packed weight serves every batch and map size
            x = torch.randn(shape)
            assert _rel(packed(x), conv(x)) < TOL[BF16]
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        PackedConv2d.from_conv(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding="same"))
    swap_layers(net, BF16, convs=True)
    assert isinstance(net[0], PackedConv2d) and type(net[1]) is nn.Conv2d  # "same" padding stays a Conv2d


def _tiny_masked(conditioning: str = "cross") -> MaskedTransformer:
    torch.manual_seed(0)
    model = MaskedTransformer(MaskedConfig(vocab_size=64, dim=32, layers=2, heads=2, text_dim=16,
                                           conditioning=conditioning)).eval()
    for p in model.parameters():  # larger-than-init weights so the blocks do real work
        p.data.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("matmul", [False, True])
@pytest.mark.parametrize("text_len", [6, 40])
def test_swapped_generator_matches_the_reference_network(text_len, matmul, dtype, monkeypatch):
    # both attention kernels: batched matmuls forced at this small batch, or SDPA forced; the short text takes the
    # folded cross-attention, the long one (S·(H − 1) > C) keys and values
    monkeypatch.setitem(attn_mod.MATMUL_FROM_ROWS, dtype, (1, 1) if matmul else (math.inf, math.inf))
    model = _tiny_masked()
    ref_model = copy.deepcopy(model)
    assert set_fused_processors(model, dtype) == 4 and swap_layers(model, dtype) > 0
    assert isinstance(model.blocks[0].mlp, PackedMLP) and set(model.state_dict()) == set(ref_model.state_dict())
    tokens = torch.randint(0, 65, (3, 64), generator=torch.Generator().manual_seed(1))
    text, mask = torch.randn(3, text_len, 16), torch.ones(3, text_len, dtype=torch.bool)
    mask[1, 3:] = False  # padded text positions must be ignored
    mask[2, :] = False  # a fully masked row gives finite outputs (no NaN)
    with torch.no_grad():
        ref = ref_model(tokens, text, mask)
        prepared = model.prepare_text(text, mask)
        out = model(tokens, prepared=prepared).float()
        changed = text.clone()
        changed[1, 4:] = 100.0  # only padded positions change: same logits
        again = model(tokens, changed, mask).float()
    assert isinstance(prepared["kv"][0], FoldedText) == (text_len == 6)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    # float32: only summation order and the erf GELU (the reference MLPs use the tanh form) differ
    assert _rel(out[:2], ref[:2]) < (1e-3 if dtype == FP32 else 0.03)
    assert (out[:2].argmax(-1) == ref[:2].argmax(-1)).float().mean() > (0.99 if dtype == FP32 else 0.9)
    assert torch.equal(again[1], out[1])


def test_processors_agree_with_the_reference_attention():
    """Each processor against AttnProcessor on the same Attention module, float32 (no linear swaps)."""
    model = _tiny_masked()
    blk = model.blocks[0]
    x, text = torch.randn(3, 64, 32), torch.randn(3, 7, 16)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 2:] = False
    with torch.no_grad():
        ref_self = blk.attn(x, residual=x)
        ref_cross = blk.cross_attn(x, mask=mask, kv=blk.cross_attn.prepare_context(text), residual=x)
        blk.attn.set_processor(FusedSelfAttnProcessor(blk.attn, FP32))
        blk.cross_attn.set_processor(FoldedCrossAttnProcessor(blk.cross_attn, FP32))
        folded = blk.cross_attn.prepare_context(text)
        assert isinstance(folded, FoldedText) and folded.dims == (3, 2)
        assert _rel(blk.attn(x, residual=x), ref_self) < 1e-5
        assert _rel(blk.cross_attn(x, mask=mask, kv=folded, residual=x), ref_cross) < 1e-5
        blk.attn.set_processor(attn_mod.MatmulAttnProcessor())
        assert _rel(blk.attn(x, residual=x), ref_self) < 1e-5
    with pytest.raises(ValueError, match="bidirectional self-attention"):
        FusedSelfAttnProcessor(blk.attn, FP32)(blk.attn, x, context=x)


def test_prefix_conditioned_generator_swaps_too():
    model = _tiny_masked("prefix")
    ref_model = copy.deepcopy(model)
    assert set_fused_processors(model, FP32) == 2  # self-attention only, with the text prefix in its mask
    swap_layers(model, FP32)
    tokens, text = torch.randint(0, 65, (2, 64)), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    with torch.no_grad():
        assert _rel(model(tokens, text, mask), ref_model(tokens, text, mask)) < 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_swapped_minilm_matches_float32(dtype):
    from pixlm.inference.precision import swap_text_encoder
    from pixlm.text.encoder import TextEncoder, TextEncoderConfig

    enc = TextEncoder(TextEncoderConfig())  # the pretrained all-MiniLM-L6-v2 (pixlm.text.bert), offline
    prompts = ["a red circle", "two blue squares above a green triangle"]  # padded batch: different lengths
    ref, mask = enc.encode(prompts, use_cache=False)
    assert swap_text_encoder(enc.model, dtype)
    out, mask2 = enc.encode(prompts, use_cache=False)
    assert out.dtype == torch.float32 and torch.equal(mask, mask2)
    for i, n in enumerate(mask.sum(1).tolist()):
        cos = F.cosine_similarity(out[i, :n], ref[i, :n], dim=-1)
        assert float(cos.min()) > (0.99999 if dtype == FP32 else 0.999), cos
    assert not swap_text_encoder(tiny_pipeline().text_encoder.model, dtype)  # other encoders stay as they are


@NO_BF16
def test_bf16_pipeline_packs_every_network():
    pipe = optimize(tiny_pipeline(), "bf16")
    assert isinstance(pipe.generator.head, PackedLinear) and pipe.generator.head.packed is not None
    assert isinstance(pipe.vq.decoder[0], PackedConv2d)
    out = _gen(pipe)
    assert out.tokens.shape == (4, 8, 8) and out.images[0].size == (64, 64)
    assert pipe.vq.decode(out.tokens).dtype == torch.float32


def test_int8_works_for_other_generator_families():
    pipe = optimize(tiny_pipeline_for("autoregressive"), "int8")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in pipe.generator.modules())
    assert pipe.generate("a red circle", seed=0).tokens.shape == (1, 8, 8)


@pytest.mark.parametrize("channels_last", [False, True])
def test_an_upsampling_convolution_computed_at_low_resolution_is_the_pair(channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1)
    x = torch.randn(3, 6, 4, 7)  # any batch, non-square maps
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    fused = UpsampleConv2d(conv)
    with torch.no_grad():
        want = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        got = fused(x)
    assert got.shape == want.shape == (3, 5, 8, 14)
    assert (got - want).abs().max() < 1e-5
    with pytest.raises(ValueError, match="needs a 3x3, stride-1"):
        UpsampleConv2d(nn.Conv2d(6, 5, 3, padding=1, stride=2))
    seq = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0)), nn.Conv2d(6, 5, 3, padding=1),  # fused
                        nn.Upsample(scale_factor=3), nn.Conv2d(5, 5, 3, padding=1),  # not a doubling: kept
                        nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(5, 5, 3, padding=1))  # not nearest
    with torch.no_grad():
        want = seq(x)
        assert fuse_upsample_convs(seq) == 1 and isinstance(seq[1], UpsampleConv2d) and isinstance(seq[3], nn.Conv2d)
        assert (seq(x) - want).abs().max() < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_decoder_with_fused_upsampling_decodes_as_before(dtype):
    vq = tiny_pipeline().vq.eval()
    tokens = torch.randint(0, vq.vocab_size, (2, vq.config.grid, vq.config.grid), generator=torch.Generator().manual_seed(3))
    fused, plain = copy.deepcopy(vq), copy.deepcopy(vq)
    assert fuse_upsample_convs(fused.decoder) == len(vq.config.channels) - 1  # every halving, undone
    if dtype == BF16:
        for model in (fused, plain):
            swap_layers(model.decoder, BF16, convs=True)
        assert any(isinstance(m, UpsampleConv2d) and isinstance(m.conv, PackedConv2d) for m in fused.decoder)
    with torch.no_grad():
        want, got, unfused = vq.decode(tokens), fused.decode(tokens).float(), plain.decode(tokens).float()
    assert _rel(got, want) < (1e-5 if dtype == FP32 else 1.25 * _rel(unfused, want))  # no worse than bf16 itself
