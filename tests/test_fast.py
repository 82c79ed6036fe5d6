"""pixlm.fast.optimize, the fixed-shape MaskGIT loop, size presets, and the speed benchmark's Amused builder."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch

from pixlm.fast import (FastGenerator, fixed_maskgit_loop, optimize, pad_prepared, use_erf_gelu,
                        use_matmul_attention)
from pixlm.models.layers import Attention
from pixlm.models.masked import MaskedConfig, MaskedTransformer
from pixlm.models.presets import PARAM_RANGES, PRESETS, build, forward_flops, get_preset, param_count
from pixlm.sampling.maskgit import MaskGITSampler
from pixlm.testing import tiny_pipeline, tiny_pipeline_for

PROMPTS = ["a red circle", "a blue square above a green triangle"]


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _gen(pipe, seed: int = 3, **kw):
    return pipe.generate(PROMPTS, num_images_per_prompt=2, seed=seed, **kw)


def _pixels(out) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.stack([np.asarray(im) for im in out.images]).astype("int16"))


# ---------------------------------------------------------------------------------------------- optimize
def test_fp32_path_changes_nothing():
    ref = _gen(tiny_pipeline())
    pipe = optimize(tiny_pipeline(), threads=1)
    out = _gen(pipe)
    assert torch.get_num_threads() == 1
    assert torch.equal(out.tokens, ref.tokens)
    assert torch.equal(_pixels(out), _pixels(ref))
    assert pipe.fast_settings["fixed_loop"] is False


def test_channels_last_decoder_same_tokens_pixels_within_rounding():
    ref = _gen(tiny_pipeline())
    out = _gen(optimize(tiny_pipeline(), channels_last=True))
    assert torch.equal(out.tokens, ref.tokens)
    assert (_pixels(out) - _pixels(ref)).abs().max() <= 1


def test_int8_close_to_fp32():
    ref_pipe, q_pipe = tiny_pipeline(), optimize(tiny_pipeline(), int8=True)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in q_pipe.generator.modules())
    g = ref_pipe.generator
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, g.config.vocab_size + 1, (4, g.config.num_tokens), generator=gen)
    text, mask = torch.randn(4, 5, 16), torch.ones(4, 5, dtype=torch.bool)
    with torch.inference_mode():
        a = g(tokens, text, mask)
        b = q_pipe.generator(tokens, text, mask)
    assert a.shape == b.shape and torch.isfinite(b).all()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
    assert (b - a).norm() / a.norm() < 0.1
    ref, out = _gen(ref_pipe), _gen(q_pipe)
    assert out.tokens.shape == ref.tokens.shape and int(out.tokens.max()) < g.config.vocab_size
    assert (out.tokens == ref.tokens).float().mean() > 0.5
    with pytest.raises(RuntimeError, match="save the pipeline before"):
        q_pipe.generator.save_pretrained("/nonexistent")


def test_bf16_cpu_autocast_close():
    ref_pipe, pipe = tiny_pipeline(), optimize(tiny_pipeline(), bf16=True, packed=False)
    assert isinstance(pipe.generator, FastGenerator)
    g = ref_pipe.generator
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, g.config.vocab_size + 1, (4, g.config.num_tokens), generator=gen)
    text, mask = torch.randn(4, 5, 16), torch.ones(4, 5, dtype=torch.bool)
    with torch.inference_mode():
        a, b = g(tokens, text, mask), pipe.generator(tokens, text, mask)
    assert b.dtype == torch.bfloat16 and torch.isfinite(b.float()).all()
    assert (b.float() - a).norm() / a.norm() < 0.05
    out = _gen(pipe)
    assert out.tokens.shape == (4, 8, 8) and int(out.tokens.max()) < g.config.vocab_size
    assert len(out.images) == 4 and out.images[0].size == (64, 64)


def test_erf_gelu_swap_is_close():
    model = build(MaskedConfig(vocab_size=64, dim=32, layers=2, heads=2, text_dim=16))
    tokens, text, mask = torch.randint(0, 65, (2, 64)), torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        before = model(tokens, text, mask)
        assert use_erf_gelu(model) == 2
        after = model(tokens, text, mask)
    assert not torch.equal(before, after) and torch.allclose(before, after, atol=1e-3)


def test_matmul_attention_matches_sdpa_with_padding_masks():
    model = build(MaskedConfig(vocab_size=64, dim=32, layers=2, heads=2, text_dim=16))
    tokens, text = torch.randint(0, 65, (2, 64)), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])  # second prompt padded
    with torch.no_grad():
        before = model(tokens, text, mask)
        assert use_matmul_attention(model) == 4  # self- and cross-attention in each of 2 blocks
        after = model(tokens, text, mask)
    assert torch.allclose(before, after, atol=1e-5)
    pipe = optimize(tiny_pipeline(), int8=True)
    assert all(m.matmul for m in pipe.generator.modules() if isinstance(m, Attention))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="threads"):
        optimize(tiny_pipeline(), threads=0)
    with pytest.raises(ValueError, match="CUDA"):
        optimize(tiny_pipeline(), cuda_graphs=True)
    with pytest.raises(TypeError, match="int8"):
        optimize(tiny_pipeline(), int8="yes")
    with pytest.raises(ValueError, match="masked"):
        optimize(tiny_pipeline_for("autoregressive"), fixed_loop=True)
    pipe = optimize(tiny_pipeline(), fixed_loop=True)
    with pytest.raises(ValueError, match="already optimised"):
        optimize(pipe, int8=True)
    with pytest.raises(RuntimeError, match="save the pipeline before"):
        pipe.save_pretrained("/nonexistent/never-written")


def test_int8_works_for_other_generator_families():
    pipe = optimize(tiny_pipeline_for("autoregressive"), int8=True)
    out = pipe.generate("a red circle", seed=0)
    assert out.tokens.shape == (1, 8, 8)


# ---------------------------------------------------------------------------------------------- fixed loop
def test_fixed_loop_equals_reference_when_greedy():
    """With temperature → 0 and no choice noise both loops are deterministic: they must agree exactly."""
    ref, fast = tiny_pipeline(), optimize(tiny_pipeline(), fixed_loop=True)
    for p in (ref, fast):
        p.defaults["choice_temperature"] = 0.0
    a, b = _gen(ref, temperature=0.0), _gen(fast, temperature=0.0)
    assert torch.equal(a.tokens, b.tokens)


def test_fixed_loop_seeded_complete_and_falls_back_for_callbacks():
    pipe = optimize(tiny_pipeline(), fixed_loop=True)
    a, b, c = _gen(pipe, seed=1), _gen(pipe, seed=1), _gen(pipe, seed=2)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    assert int(a.tokens.max()) < pipe.generator.config.vocab_size  # nothing left masked
    seen = []
    pipe.generate("a red circle", seed=1, callback=lambda i, k, t: seen.append((i, int((t == 64).sum()))))
    assert [s[1] for s in seen] == MaskGITSampler().schedule(64)  # the reference loop ran, on schedule


def test_fixed_loop_samples_the_softmax_distribution():
    """One step, fixed logits: token frequencies follow softmax(logits / temperature)."""

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = torch.tensor([0.0, 1.0, 2.0, -1.0])

        def forward(self, x, prepared):
            return self.logits.expand(*x.shape, 4)

    b, n = 256, 64
    u1, u2 = torch.rand(2, 1, b, n, generator=torch.Generator().manual_seed(0)).clamp(1e-7, 1 - 1e-7)
    tokens = torch.full((b, n), 4)
    out = fixed_maskgit_loop(Fixed(), {}, tokens, u1, u2, mask_id=4, steps=1, guidance_scale=1.0, use_cfg=False,
                             temperature=1.0, choice_temperature=0.0)
    freq = torch.bincount(out.flatten(), minlength=5).float() / out.numel()
    assert freq[4] == 0
    assert torch.allclose(freq[:4], torch.softmax(Fixed().logits, 0), atol=0.02)


@pytest.mark.parametrize("use_cfg", [True, False])
def test_fixed_loop_guides_hidden_states_like_logits(use_cfg):
    """Guidance on the final hidden states, then one head call, gives the tokens of guidance on the logits
    (the head is affine): the same loop with the head split off and without."""
    g = MaskedTransformer(MaskedConfig(vocab_size=64, dim=32, layers=2, heads=2, text_dim=16)).eval()
    for p in g.parameters():  # larger-than-init weights so the logits are far from uniform
        p.data.normal_(0, 0.3)

    class Unsplit(torch.nn.Module):  # the same network, seen only through forward()
        def __init__(self) -> None:
            super().__init__()
            self.g = g

        def forward(self, x, prepared):
            return self.g(x, prepared=prepared)

    rows = 6 if use_cfg else 3
    with torch.no_grad():
        text = torch.cat([torch.randn(3, 5, 16), torch.randn(1, 5, 16).expand(rows - 3, 5, 16)])  # one negative
        prep = g.prepare_text(text, torch.ones(rows, 5, dtype=torch.bool))
        u1, u2 = torch.rand(2, 4, 3, 64, generator=torch.Generator().manual_seed(2)).clamp(1e-7, 1 - 1e-7)
        opts = dict(mask_id=64, steps=4, guidance_scale=3.0, use_cfg=use_cfg, temperature=1.0, choice_temperature=1.0)
        start = torch.full((3, 64), 64)
        split = fixed_maskgit_loop(g, prep, start, u1, u2, **opts)
        whole = fixed_maskgit_loop(Unsplit(), prep, start, u1, u2, **opts)
        h = g.hidden(torch.cat([start, start]) if use_cfg else start, prepared=prep)
        first = fixed_maskgit_loop(g, prep, start, u1, u2, **opts, first_uncond=h[3:4]) if use_cfg else split
    assert g.splits_head and torch.equal(split, whole) and torch.equal(first, split)
    assert int(split.max()) < 64  # all committed


def test_pad_prepared_keeps_outputs():
    g = MaskedTransformer(MaskedConfig(vocab_size=64, dim=32, layers=1, heads=2, text_dim=16)).eval()
    text, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    tokens = torch.randint(0, 65, (2, 64))
    with torch.no_grad():
        prep = g.prepare_text(text, mask)
        padded = pad_prepared(prep, 16)
        assert padded["mask"].shape == (2, 16) and padded["kv"][0][0].shape[2] == 16
        assert torch.allclose(g(tokens, prepared=prep), g(tokens, prepared=padded), atol=1e-5)


def test_compile_flag_traces_the_whole_loop(monkeypatch):
    """compile=True goes through torch.compile over the K-step loop (eager backend here: no C++ build)."""
    real, calls = torch.compile, []

    def eager_compile(fn, mode=None, dynamic=None, **kw):
        calls.append(mode)
        return real(fn, backend="eager", fullgraph=True, dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", eager_compile)
    a = _gen(optimize(tiny_pipeline(), fixed_loop=True), seed=5)
    b = _gen(optimize(tiny_pipeline(), compile=True), seed=5)
    assert calls == [None] and torch.equal(a.tokens, b.tokens)


# ---------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_param_counts(name):
    cfg = get_preset(name)
    with torch.device("meta"):
        model = MaskedTransformer(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == param_count(cfg)
    lo, hi = PARAM_RANGES[name]
    assert lo <= n <= hi
    if name == "base":
        assert cfg.grid == 16 and cfg.dim % cfg.heads == 0
    with pytest.raises(ValueError, match="not one of"):
        get_preset("huge")


def test_build_small_preset_runs():
    model = build("small")
    assert sum(p.numel() for p in model.parameters()) == param_count(get_preset("small"))
    assert model.config.grid == 8 and model.config.vocab_size == 1000 and model.config.text_dim == 384


@pytest.mark.parametrize("conditioning", ["cross", "prefix"])
def test_forward_flops_match_the_flop_counter(conditioning):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = MaskedConfig(vocab_size=64, dim=32, layers=2, heads=2, text_dim=16, conditioning=conditioning)
    model = build(cfg)
    text, mask = torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fc:
            prep = model.prepare_text(text, mask)
        prepare = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            model(torch.randint(0, 64, (3, 64)), prepared=prep)
    assert forward_flops(cfg, 3, 5) == {"step": fc.get_total_flops(), "prepare": prepare}


# ---------------------------------------------------------------------------------------------- speed script
def _speed_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
    spec = importlib.util.spec_from_file_location("pixlm_bench_speed", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_speed_script_builds_a_matched_tiny_amused(tmp_path):
    pytest.importorskip("diffusers")
    speed = _speed_module()
    cfg = MaskedConfig(vocab_size=256, grid=8, dim=64, layers=2, heads=2, text_dim=128)  # ~0.19 M parameters
    target = param_count(cfg)
    pipe, info = speed.build_amused(cfg, target, text_layers=1, text_dim=128, text_heads=2, vq_channels=(8, 8, 8, 8),
                                    tokenizer_dir=tmp_path / "tok")
    assert abs(info["transformer_params"] - target) <= 0.10 * target
    assert info["transformer_config"]["hidden_size"] == 64 and info["transformer_config"]["num_hidden_layers"] == 2
    ids = pipe.tokenizer("a red circle", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == 0
    with torch.inference_mode():
        images = pipe(["a red circle", "a blue square"], num_inference_steps=2, guidance_scale=3.0,
                      generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].size == (64, 64)


def test_speed_script_helpers():
    speed = _speed_module()
    hw = speed.cpu_peak()
    assert hw["peak_fp32_gflops"] > 0 and hw["basis"]
    take = speed.prompt_stream()
    a, b = take(3), take(3)
    assert len(set(a + b)) == 6
    cfg = MaskedConfig(vocab_size=64, dim=32, layers=1, heads=2, text_dim=16)
    bare = speed.BareTransformer(cfg, 16).eval()
    with torch.no_grad():
        logits = bare(torch.full((2, 64), 64), bare.text_proj(torch.randn(2, 5, 16)))
    assert logits.shape == (2, 64, 64)
    assert speed.count_flops(lambda: bare(torch.full((1, 64), 64), torch.randn(1, 5, 32)))["total"] > 0


def test_speed_script_paired_ratios_time_both_systems_per_round():
    import time

    speed = _speed_module()
    calls: list[tuple[str, int]] = []

    class FakePipe:
        def generate(self, prompts, **kw):
            calls.append(("pixlm", len(prompts)))
            time.sleep(0.002)

    def amused(b: int) -> None:
        calls.append(("amused", b))
        time.sleep(0.008)

    out = speed.paired_ratios(FakePipe(), amused, speed.prompt_stream(), [1, 2], 5, 2, 2.5, "cpu")
    assert out["rounds"] == 5 and set(out) == {"rounds", "bs1", "bs2"}
    assert calls[4:6] == [("pixlm", 1), ("amused", 1)]  # after 2 warm-up pairs, strictly alternating
    assert len(calls) == 2 * (2 + 5) * 2
    for key in ("bs1", "bs2"):
        lo, hi = out[key]["p10_p90"]
        assert 1.5 < lo <= out[key]["median_ratio"] <= hi < 6  # ~4x: 8 ms against 2 ms, with scheduling slack


def test_fixed_loop_equals_reference_when_greedy_with_revision():
    """Re-masking committed tokens follows one rule (``commit_step``) in both loops."""
    ref, fast = tiny_pipeline(), optimize(tiny_pipeline(), fixed_loop=True)
    for p in (ref, fast):
        p.defaults.update(choice_temperature=0.0, revise_margin=1.0)
    a, b = _gen(ref, temperature=0.0), _gen(fast, temperature=0.0)
    assert torch.equal(a.tokens, b.tokens)
    assert int(a.tokens.max()) < ref.generator.config.vocab_size  # every token committed at the end


def test_bf16_text_encoder_copy_leaves_the_shared_module_float32():
    """optimize(bf16=True) runs the text encoder from a bfloat16 copy; the float32 module it came from is untouched."""
    pipe = tiny_pipeline()
    original = pipe.text_encoder.model
    optimize(pipe, bf16=True)
    assert all(p.dtype == torch.float32 for p in original.parameters())
    assert all(p.dtype == torch.bfloat16 for p in pipe.text_encoder.model.module.parameters())
    states, _ = pipe.text_encoder.encode(["a red circle"])
    assert states.dtype == torch.float32


def test_optimize_recommended_and_generate_fast_cli(tmp_path):
    from typer.testing import CliRunner

    from pixlm.cli import app
    from pixlm.fast import optimize_recommended

    from pixlm.packed import packing_supported

    pipe = optimize_recommended(tiny_pipeline())
    assert pipe.fast_settings["fixed_loop"] and pipe.fast_settings["channels_last"]
    # bf16 only where the CPU has bf16 arithmetic (emulated bf16 is slower than float32); packed where oneDNN runs
    assert pipe.fast_settings["bf16"] == packing_supported(torch.bfloat16)
    assert pipe.fast_settings["packed_generator"] == packing_supported(torch.float32)
    tiny_pipeline().save_pretrained(tmp_path / "m")
    runner = CliRunner()
    outs = []
    for run in ("a", "b"):
        result = runner.invoke(app, ["generate", "a red circle", "--model", str(tmp_path / "m"), "--fast", "-n", "2",
                                     "--seed", "1", "--steps", "2", "--out", str(tmp_path / run)])
        assert result.exit_code == 0, result.output
        outs.append(sorted((tmp_path / run).glob("*-0?.png")))
    assert len(outs[0]) == 2
    assert [p.read_bytes() for p in outs[0]] == [p.read_bytes() for p in outs[1]]  # same seed, same images


def test_optimize_recommended_keeps_float32_on_cpus_without_bf16(monkeypatch):
    """Where bf16 would be emulated (AVX2-only CPUs, 5-6x slower than float32), --fast stays in float32."""
    from pixlm.fast import optimize_recommended

    monkeypatch.setattr("pixlm.packed.packing_supported", lambda dtype=torch.bfloat16: dtype == torch.float32)
    pipe = optimize_recommended(tiny_pipeline())
    settings = pipe.fast_settings
    assert not settings["bf16"] and settings["packed_dtype"] == "float32" and settings["fixed_loop"]
    assert pipe.generator.inner.dtype == torch.float32 and not pipe.generator.bf16
    images = pipe.generate(["a red circle"], num_images_per_prompt=2, seed=1)
    assert images.tokens.shape == (2, 8, 8) and int(images.tokens.max()) < pipe.generator.config.vocab_size


def test_optimize_warns_that_bf16_is_emulated_on_cpus_without_it(monkeypatch):
    monkeypatch.setattr("pixlm.packed.packing_supported", lambda dtype=torch.bfloat16: dtype == torch.float32)
    with pytest.warns(RuntimeWarning, match="bf16=True on a CPU without bf16 arithmetic"):
        pipe = optimize(tiny_pipeline(), bf16=True)
    assert pipe.fast_settings["bf16"] and pipe.fast_settings["packed_dtype"] is None  # still done, under autocast
    monkeypatch.setattr("pixlm.packed.packing_supported", lambda dtype=torch.bfloat16: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        optimize(tiny_pipeline(), bf16=True, packed=False)  # a CPU with bf16: no warning


def test_fixed_loop_reuses_the_unconditional_first_step(monkeypatch):
    """Step 0's unconditional rows (all tokens masked, the same negative prompt) are computed once and reused;
    the tokens equal those of a loop that recomputes them."""
    pipe = optimize(tiny_pipeline(), fixed_loop=True)
    gen = pipe.generator
    a = _gen(pipe, seed=4)
    assert len(gen._first_uncond) == 1
    kept = next(iter(gen._first_uncond.values()))[1]
    assert kept.shape == (1, gen.config.num_tokens, gen.config.dim)  # hidden states: the head runs after guidance
    b = _gen(pipe, seed=4)  # the same (default, empty) negative prompt: a cache hit
    assert torch.equal(a.tokens, b.tokens) and next(iter(gen._first_uncond.values()))[1] is kept
    _gen(pipe, seed=4, negative_prompt="blurry")  # another negative prompt: recomputed, kept instead
    assert len(gen._first_uncond) == 1 and next(iter(gen._first_uncond.values()))[1] is not kept
    monkeypatch.setattr(gen, "first_uncond_outputs", lambda *args: None)  # recompute step 0 in full
    assert torch.equal(_gen(pipe, seed=4).tokens, a.tokens)
    monkeypatch.undo()
    with torch.no_grad():  # a negative prompt per image: the unconditional rows differ, nothing to reuse
        states, mask = pipe.text_encoder.encode(["blurry", "dark"])
        assert gen.first_uncond_outputs(pad_prepared(gen.prepare_text(states, mask), 16), 64) is None
