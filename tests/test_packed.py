"""pixlm.packed: oneDNN-packed bfloat16 linears and the packed masked transformer (CPU bf16 fast path)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm.fast import Autocast, FastGenerator, optimize
from pixlm.models.masked import MaskedConfig, MaskedTransformer
from pixlm.packed import (PackedBertModel, PackedConv2d, PackedLinear, PackedMaskedTransformer, bert_packable,
                          pack_layers, pack_module, packing_supported)
from pixlm.testing import tiny_pipeline

pytestmark = pytest.mark.skipif(not packing_supported(), reason="no oneDNN bf16 support on this CPU/build")
BF16 = torch.bfloat16


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24), (3, 1, 24)])
def test_packed_linear_matches_bf16_linear(shape):
    torch.manual_seed(0)
    lin = nn.Linear(24, 40)
    x = torch.randn(*shape).to(BF16)
    ref = F.linear(x, lin.weight.to(BF16), lin.bias.to(BF16))
    p = PackedLinear.from_linear(lin)
    out = p(x)
    assert out.shape == ref.shape and out.dtype == BF16
    assert _rel(out, ref) < 1e-2
    other = torch.randn_like(ref)
    assert _rel(p(x, add=other), ref + other) < 1e-2  # fused residual add
    for approximate in ("none", "tanh"):
        g = PackedLinear.from_linear(lin, activation="gelu", approximate=approximate)
        assert _rel(g(x), F.gelu(ref.float(), approximate=approximate)) < 2e-2
    no_bias = PackedLinear(lin.weight, None)
    assert _rel(no_bias(x), F.linear(x, lin.weight.to(BF16))) < 1e-2


def test_packed_linear_copies_and_refuses_bad_settings():
    lin = nn.Linear(8, 8)
    p = PackedLinear.from_linear(lin, activation="gelu")
    q = copy.deepcopy(p)  # the opaque packed weight has no storage: rebuilt from the dense copy
    x = torch.randn(3, 8).to(BF16)
    assert torch.equal(p(x), q(x))
    assert set(p.state_dict()) == {"weight", "bias"}
    with pytest.raises(ValueError, match="fused add"):
        p(x, add=x)
    with pytest.raises(ValueError, match="activation='relu'"):
        PackedLinear.from_linear(lin, activation="relu")
    with pytest.raises(ValueError, match="approximate='fast'"):
        PackedLinear.from_linear(lin, activation="gelu", approximate="fast")


def _tiny_masked(conditioning: str = "cross") -> MaskedTransformer:
    torch.manual_seed(0)
    return MaskedTransformer(MaskedConfig(vocab_size=64, dim=32, layers=2, heads=2, text_dim=16,
                                          conditioning=conditioning)).eval()


@pytest.mark.parametrize("matmul_attention", [False, True])
def test_packed_transformer_matches_fp32_network(matmul_attention, monkeypatch):
    if matmul_attention:  # the large-batch attention path (two matmuls), forced at this small batch
        monkeypatch.setattr("pixlm.packed.MATMUL_SELF_ROWS", 1)
        monkeypatch.setattr("pixlm.packed.MATMUL_CROSS_ROWS", 1)
    model = _tiny_masked()
    for p in model.parameters():  # larger-than-init weights so the blocks do real work
        p.data.normal_(0, 0.2)
    packed = PackedMaskedTransformer(model)
    tokens = torch.randint(0, 65, (3, 64), generator=torch.Generator().manual_seed(1))
    text = torch.randn(3, 6, 16)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 3:] = False  # padded text positions must be ignored
    mask[2, :] = False  # a fully masked row gives finite logits (no NaN)
    with torch.no_grad():
        ref = model(tokens, text, mask)
        out = packed(tokens, text, mask)
        again = packed(tokens, prepared=packed.prepare_text(text, mask))
    assert out.dtype == torch.float32 and out.shape == ref.shape and torch.isfinite(out).all()
    assert _rel(out[:2], ref[:2]) < 0.03
    assert (out[:2].argmax(-1) == ref[:2].argmax(-1)).float().mean() > 0.9
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


def test_pack_layers_copies_and_converts():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 4)))
    packed = pack_layers(net)
    assert isinstance(packed[0], PackedLinear) and isinstance(packed[2][1], PackedLinear)
    assert isinstance(net[0], nn.Linear) and net[0].weight.dtype == torch.float32
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert _rel(packed(x.to(BF16)), net(x)) < 0.02


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=1, bias=False), dict(padding=(0, 2))])
def test_packed_conv_matches_conv_at_any_input_size(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, **kwargs)
    packed = PackedConv2d.from_conv(conv)
    with torch.no_grad():
        for shape in [(1, 6, 8, 8), (3, 6, 13, 9)]:  # one packed weight serves every batch and map size
            x = torch.randn(shape)
            assert _rel(packed(x.to(BF16)), conv(x)) < 0.02
            x_cl = x.to(BF16).contiguous(memory_format=torch.channels_last)
            assert _rel(packed(x_cl), conv(x)) < 0.02
        twin = copy.deepcopy(packed)
        assert twin.weight.data_ptr() != packed.weight.data_ptr() and torch.equal(twin(x.to(BF16)), packed(x.to(BF16)))
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        PackedConv2d.from_conv(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    net = pack_layers(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding="same")))
    assert isinstance(net[0], PackedConv2d) and isinstance(net[1], nn.Conv2d)  # "same" padding stays a Conv2d


def _tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=24)).eval()


def test_packed_bert_matches_transformers_bert_with_padding():
    bert = _tiny_bert()
    packed = pack_module(bert)
    assert isinstance(packed, PackedBertModel) and packed.config is bert.config
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0  # a shorter prompt, right-padded as the tokenizer pads
    ids[1, 5:] = 0
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        out = packed(input_ids=ids, attention_mask=mask).last_hidden_state
        assert out.dtype == BF16
        for i, n in enumerate(mask.sum(1).tolist()):  # padded positions are never read
            assert _rel(out[i, :n], ref[i, :n]) < 0.03
        alone = packed(input_ids=ids[1:2, :5]).last_hidden_state  # the same prompt unpadded: same states
        assert _rel(alone[0], out[1, :5]) < 0.02
        types = torch.zeros_like(ids)
        types[:, 4:] = 1
        ref_t = bert(input_ids=ids[:1], token_type_ids=types[:1]).last_hidden_state
        assert _rel(packed(input_ids=ids[:1], token_type_ids=types[:1]).last_hidden_state, ref_t) < 0.03
        with pytest.raises(ValueError, match="30 tokens exceed the encoder's 24 positions"):
            packed(input_ids=torch.ones(1, 30, dtype=torch.long))


def test_pack_module_falls_back_to_packed_layers_for_other_encoders():
    bert = _tiny_bert()
    bert.config.hidden_act = "relu"  # a variant PackedBertModel does not reproduce
    assert not bert_packable(bert)
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        PackedBertModel(bert)
    packed = pack_module(bert)
    assert not isinstance(packed, PackedBertModel)
    assert isinstance(packed.encoder.layer[0].intermediate.dense, PackedLinear)


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


def test_optimize_packed_refusals():
    with pytest.raises(ValueError, match="bf16=True"):
        optimize(tiny_pipeline(), packed=True)
    with pytest.raises(TypeError, match="packed='yes'"):
        optimize(tiny_pipeline(), bf16=True, packed="yes")
    pipe = optimize(tiny_pipeline(), int8=True, bf16=True, fixed_loop=True, packed=True)  # int8 generator kept
    assert not isinstance(pipe.generator.inner, PackedMaskedTransformer) and pipe.fast_settings["packed_text_encoder"]


def test_packed_minilm_text_encoder_matches_float32():
    from pixlm.text.encoder import TextEncoder, TextEncoderConfig

    enc = TextEncoder(TextEncoderConfig())  # the pretrained all-MiniLM-L6-v2, offline
    prompts = ["a red circle", "two blue squares above a green triangle"]  # padded batch: different lengths
    ref, mask = enc.encode(prompts)
    enc.model = Autocast(enc.model, "cpu", packed=True)
    enc._cache.clear()
    assert isinstance(enc.model.module, PackedBertModel)
    out, mask2 = enc.encode(prompts)
    assert out.dtype == torch.float32 and torch.equal(mask, mask2)
    for i, n in enumerate(mask.sum(1).tolist()):
        cos = F.cosine_similarity(out[i, :n], ref[i, :n], dim=-1)
        assert float(cos.min()) > 0.999, cos
