"""pixlm.packed: oneDNN-packed linears and the packed masked transformer (CPU fast path), in bfloat16 where the
CPU has bf16 arithmetic and in float32 everywhere oneDNN runs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.fast import Autocast, FastGenerator, optimize
from pixlm.models.masked import MaskedConfig, MaskedTransformer
from pixlm.packed import (MATMUL_FROM_ROWS, PackedBertModel, PackedConv2d, PackedLinear, PackedMaskedTransformer,
                          bert_packable, pack_layers, pack_module, packing_supported)
from pixlm.testing import tiny_pipeline

pytestmark = pytest.mark.skipif(not packing_supported(torch.float32), reason="no oneDNN in this PyTorch build")
BF16 = torch.bfloat16
FP32 = torch.float32
NO_BF16 = pytest.mark.skipif(not packing_supported(BF16), reason="no oneDNN bf16 support on this CPU/build")
DTYPES = [pytest.param(FP32, id="fp32"), pytest.param(BF16, id="bf16", marks=NO_BF16)]
# relative error allowed against the float32 reference: bf16 rounding, or float32 summation order
TOL = {FP32: 1e-4, BF16: 0.02}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24), (3, 1, 24)])
def test_packed_linear_matches_linear(shape, dtype):
    torch.manual_seed(0)
    lin = nn.Linear(24, 40)
    x = torch.randn(*shape).to(dtype)
    ref = F.linear(x, lin.weight.to(dtype), lin.bias.to(dtype))
    p = PackedLinear.from_linear(lin, dtype=dtype)
    out = p(x)
    assert out.shape == ref.shape and out.dtype == dtype
    assert _rel(out, ref) < TOL[dtype] / 2
    other = torch.randn_like(ref)
    assert _rel(p(x, add=other), ref + other) < TOL[dtype] / 2  # fused residual add
    for approximate in ("none", "tanh"):
        g = PackedLinear.from_linear(lin, activation="gelu", approximate=approximate, dtype=dtype)
        assert _rel(g(x), F.gelu(ref.float(), approximate=approximate)) < TOL[dtype]
    no_bias = PackedLinear(lin.weight, None, dtype=dtype)
    assert _rel(no_bias(x), F.linear(x, lin.weight.to(dtype))) < TOL[dtype] / 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_linear_copies_and_refuses_bad_settings(dtype):
    lin = nn.Linear(8, 8)
    p = PackedLinear.from_linear(lin, activation="gelu", dtype=dtype)
    q = copy.deepcopy(p)  # the opaque packed weight has no storage: rebuilt from the dense copy
    x = torch.randn(3, 8).to(dtype)
    assert q.weight.dtype == dtype and torch.equal(p(x), q(x))
    assert set(p.state_dict()) == {"weight", "bias"}
    with pytest.raises(ValueError, match="fused add"):
        p(x, add=x)
    with pytest.raises(ValueError, match="activation='relu'"):
        PackedLinear.from_linear(lin, activation="relu")
    with pytest.raises(ValueError, match="approximate='fast'"):
        PackedLinear.from_linear(lin, activation="gelu", approximate="fast")
    with pytest.raises(ValueError, match="dtype=torch.float16 is not one of"):
        PackedLinear.from_linear(lin, dtype=torch.float16)
    with pytest.raises(ValueError, match="dtype=torch.float64 is not one of"):
        packing_supported(torch.float64)


def _tiny_masked(conditioning: str = "cross") -> MaskedTransformer:
    torch.manual_seed(0)
    return MaskedTransformer(MaskedConfig(vocab_size=64, dim=32, layers=2, heads=2, text_dim=16,
                                          conditioning=conditioning)).eval()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("matmul_attention", [False, True])
@pytest.mark.parametrize("text_len", [6, 40])
def test_packed_transformer_matches_fp32_network(text_len, matmul_attention, dtype, monkeypatch):
    # both attention paths for both attentions: two matmuls forced at this small batch, or SDPA forced; the
    # short text takes the folded cross-attention (PackedBlock.fold_text), the long one (S·(H − 1) > C) k and v
    monkeypatch.setitem(MATMUL_FROM_ROWS, dtype, (1, 1) if matmul_attention else (math.inf, math.inf))
    model = _tiny_masked()
    for p in model.parameters():  # larger-than-init weights so the blocks do real work
        p.data.normal_(0, 0.2)
    packed = PackedMaskedTransformer(model, dtype)
    tokens = torch.randint(0, 65, (3, 64), generator=torch.Generator().manual_seed(1))
    text = torch.randn(3, text_len, 16)
    mask = torch.ones(3, text_len, dtype=torch.bool)
    mask[1, 3:] = False  # padded text positions must be ignored
    mask[2, :] = False  # a fully masked row gives finite logits (no NaN)
    with torch.no_grad():
        ref = model(tokens, text, mask)
        out = packed(tokens, text, mask)
        prepared = packed.prepare_text(text, mask)
        again = packed(tokens, prepared=prepared)
        unused = "kv" if text_len == 6 else "cross"  # the form this text length does not take: zeroed, no effect
        zeroed = dict(prepared, **{unused: [tuple(torch.zeros_like(t) for t in pair) for pair in prepared[unused]]})
        assert torch.equal(packed(tokens, prepared=zeroed), again)
    assert out.dtype == torch.float32 and out.shape == ref.shape and torch.isfinite(out).all()
    # float32: only summation order and the erf GELU (the network's MLPs use the tanh form) differ
    assert _rel(out[:2], ref[:2]) < (1e-3 if dtype == FP32 else 0.03)
    assert (out[:2].argmax(-1) == ref[:2].argmax(-1)).float().mean() > (0.99 if dtype == FP32 else 0.9)
    assert torch.equal(out, again)
    changed = text.clone()
    changed[1, 4:] = 100.0  # only padded positions change: same logits
    with torch.no_grad():
        assert torch.equal(packed(tokens, changed, mask)[1], out[1])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the source network is untouched
    with pytest.raises(RuntimeError, match="save the pipeline before"):
        packed.save_pretrained("/nonexistent")


def test_packed_transformer_refuses_prefix_conditioning():
    with pytest.raises(ValueError, match="conditioning='prefix'"):
        PackedMaskedTransformer(_tiny_masked("prefix"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_layers_copies_and_converts(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 4)))
    packed = pack_layers(net, dtype)
    assert isinstance(packed[0], PackedLinear) and isinstance(packed[2][1], PackedLinear)
    assert packed[0].weight.dtype == dtype and packed[2][0].weight.dtype == dtype
    assert isinstance(net[0], nn.Linear) and net[0].weight.dtype == torch.float32
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert _rel(packed(x.to(dtype)), net(x)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=1, bias=False), dict(padding=(0, 2))])
def test_packed_conv_matches_conv_at_any_input_size(kwargs, dtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, **kwargs)
    packed = PackedConv2d.from_conv(conv, dtype)
    with torch.no_grad():
        for shape in [(1, 6, 8, 8), (3, 6, 13, 9)]:  # one packed weight serves every batch and map size
            x = torch.randn(shape)
            assert _rel(packed(x.to(dtype)), conv(x)) < TOL[dtype]
            x_cl = x.to(dtype).contiguous(memory_format=torch.channels_last)
            assert _rel(packed(x_cl), conv(x)) < TOL[dtype]
        twin = copy.deepcopy(packed)
        assert twin.weight.data_ptr() != packed.weight.data_ptr() and twin.weight.dtype == dtype
        assert torch.equal(twin(x.to(dtype)), packed(x.to(dtype)))
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        PackedConv2d.from_conv(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    net = pack_layers(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding="same")), dtype)
    # "same" padding stays a Conv2d; so does every float32 conv (packed ones measured slower there)
    assert isinstance(net[0], PackedConv2d) == (dtype == BF16) and type(net[1]) is nn.Conv2d
    assert net[0].weight.dtype == dtype


def _tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=24)).eval()


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_bert_matches_transformers_bert_with_padding(dtype):
    bert = _tiny_bert()
    packed = pack_module(bert, dtype)
    tol = 1e-3 if dtype == FP32 else 0.03
    assert isinstance(packed, PackedBertModel) and packed.config is bert.config
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0  # a shorter prompt, right-padded as the tokenizer pads
    ids[1, 5:] = 0
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        out = packed(input_ids=ids, attention_mask=mask).last_hidden_state
        assert out.dtype == dtype
        for i, n in enumerate(mask.sum(1).tolist()):  # padded positions are never read
            assert _rel(out[i, :n], ref[i, :n]) < tol
        alone = packed(input_ids=ids[1:2, :5]).last_hidden_state  # the same prompt unpadded: same states
        assert _rel(alone[0], out[1, :5]) < tol
        types = torch.zeros_like(ids)
        types[:, 4:] = 1
        ref_t = bert(input_ids=ids[:1], token_type_ids=types[:1]).last_hidden_state
        assert _rel(packed(input_ids=ids[:1], token_type_ids=types[:1]).last_hidden_state, ref_t) < tol
        with pytest.raises(ValueError, match="30 tokens exceed the encoder's 24 positions"):
            packed(input_ids=torch.ones(1, 30, dtype=torch.long))


def test_pack_module_falls_back_to_packed_layers_for_other_encoders():
    bert = _tiny_bert()
    bert.config.hidden_act = "relu"  # a variant PackedBertModel does not reproduce
    assert not bert_packable(bert)
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        PackedBertModel(bert)
    packed = pack_module(bert, FP32)
    assert not isinstance(packed, PackedBertModel)
    assert isinstance(packed.encoder.layer[0].intermediate.dense, PackedLinear)


@NO_BF16
def test_optimize_bf16_on_cpu_packs_by_default_and_generates():
    pipe = optimize(tiny_pipeline(), bf16=True, fixed_loop=True)
    assert isinstance(pipe.generator, FastGenerator)
    assert isinstance(pipe.generator.inner, PackedMaskedTransformer)
    assert pipe.fast_settings["packed_generator"] and pipe.fast_settings["packed_text_encoder"]
    assert isinstance(pipe.text_encoder.model, Autocast) and pipe.text_encoder.model.packed
    assert pipe.fast_settings["packed_decoder"] and isinstance(pipe.vq.decoder.module[0], PackedConv2d)
    a = pipe.generate(["a red circle", "a blue square"], num_images_per_prompt=2, seed=5)
    b = pipe.generate(["a red circle", "a blue square"], num_images_per_prompt=2, seed=5)
    c = pipe.generate(["a red circle", "a blue square"], num_images_per_prompt=2, seed=6)
    assert a.tokens.shape == (4, 8, 8) and int(a.tokens.max()) < pipe.generator.config.vocab_size
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    states, _ = pipe.text_encoder.encode(["a red circle"])
    assert states.dtype == torch.float32
    ref = optimize(tiny_pipeline(), bf16=True, fixed_loop=True, packed=False)
    assert not isinstance(ref.generator.inner, PackedMaskedTransformer)
    assert not ref.fast_settings["packed_generator"]


def test_optimize_packed_float32_matches_the_reference_pipeline():
    """packed=True without bf16: float32 copies, the reference sampler's tokens and pixels up to rounding."""
    ref = tiny_pipeline()
    pipe = optimize(tiny_pipeline(), packed=True)
    assert isinstance(pipe.generator, FastGenerator) and not pipe.generator.fixed_loop
    inner = pipe.generator.inner
    assert isinstance(inner, PackedMaskedTransformer) and inner.head.weight.dtype == FP32
    assert pipe.fast_settings["packed_dtype"] == "float32" and pipe.fast_settings["packed_text_encoder"]
    assert isinstance(pipe.text_encoder.model, Autocast) and pipe.text_encoder.model.dtype == FP32
    assert not pipe.fast_settings["packed_decoder"] and not isinstance(pipe.vq.decoder, Autocast)
    prompts = ["a red circle", "a blue square above a green triangle"]
    a = ref.generate(prompts, seed=3, guidance_scale=2.0)
    b = pipe.generate(prompts, seed=3, guidance_scale=2.0)
    # same seed, same sampler: tokens agree except where float rounding flips a near-tie draw
    assert (a.tokens == b.tokens).float().mean() > 0.9
    states, mask = pipe.text_encoder.encode(prompts)
    ref_states, ref_mask = ref.text_encoder.encode(prompts)
    assert states.dtype == FP32 and torch.equal(mask, ref_mask) and _rel(states, ref_states) < 1e-5
    with pytest.raises(ValueError, match="already optimised"):
        optimize(pipe, packed=True)


def test_optimize_packed_refusals():
    if not packing_supported(BF16):
        with pytest.raises(ValueError, match="oneDNN support for torch.bfloat16"):
            optimize(tiny_pipeline(), bf16=True, packed=True)
    with pytest.raises(TypeError, match="packed='yes'"):
        optimize(tiny_pipeline(), bf16=True, packed="yes")
    pipe = optimize(tiny_pipeline(), int8=True, fixed_loop=True, packed=True)  # int8 generator kept
    assert not isinstance(pipe.generator.inner, PackedMaskedTransformer) and pipe.fast_settings["packed_text_encoder"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_minilm_text_encoder_matches_float32(dtype):
    from pixlm.text.encoder import TextEncoder, TextEncoderConfig

    enc = TextEncoder(TextEncoderConfig())  # the pretrained all-MiniLM-L6-v2, offline
    prompts = ["a red circle", "two blue squares above a green triangle"]  # padded batch: different lengths
    ref, mask = enc.encode(prompts)
    enc.model = Autocast(enc.model, "cpu", packed=True, dtype=dtype)
    enc._cache.clear()
    assert isinstance(enc.model.module, PackedBertModel)
    out, mask2 = enc.encode(prompts)
    assert out.dtype == torch.float32 and torch.equal(mask, mask2)
    for i, n in enumerate(mask.sum(1).tolist()):
        cos = F.cosine_similarity(out[i, :n], ref[i, :n], dim=-1)
        assert float(cos.min()) > (0.99999 if dtype == FP32 else 0.999), cos
