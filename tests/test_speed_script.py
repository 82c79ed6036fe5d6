"""benchmarks/speed.py: the matched tiny AmusedPipeline, its helpers and the paired timing rounds."""

from __future__ import annotations

import pytest
import torch
from bench_helpers import load_benchmark

from pixlm.models.masked import MaskedConfig
from pixlm.models.presets import param_count


def _speed_module():
    return load_benchmark("speed")


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


def test_speed_script_paired_ratios_time_both_systems_per_round(monkeypatch):
    speed = _speed_module()
    calls: list[tuple[str, int]] = []
    cost_ms = {"pixlm": 2.0, "amused": 8.0}  # a fake clock: the ratio's arithmetic, not this machine's load

    class FakePipe:
        def generate(self, prompts, **kw):
            calls.append(("pixlm", len(prompts)))

    def amused(b: int) -> None:
        calls.append(("amused", b))

    def fake_time_ms(fn, repeats, warmup, device):
        fn()
        return [cost_ms[calls[-1][0]]]

    monkeypatch.setattr(speed, "time_ms", fake_time_ms)
    out = speed.paired_ratios(FakePipe(), amused, speed.prompt_stream(), [1, 2], 5, 2, 2.5, "cpu")
    assert out["rounds"] == 5 and set(out) == {"rounds", "bs1", "bs2"}
    assert calls[4:6] == [("pixlm", 1), ("amused", 1)]  # after 2 warm-up pairs, strictly alternating
    assert len(calls) == 2 * (2 + 5) * 2
    assert [b for _, b in calls[:14]] == [1] * 14 and [b for _, b in calls[14:]] == [2] * 14
    for key in ("bs1", "bs2"):
        assert out[key] == {"median_ratio": 4.0, "p10_p90": [4.0, 4.0]}


def test_a_students_rivals_run_at_its_teachers_guidance(tmp_path):
    import json

    speed = _speed_module()
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "model_index.json").write_text(json.dumps({"defaults": {"guidance_scale": 2.5}}))
    assert speed.teacher_guidance(str(tmp_path)) == 2.5
    with pytest.raises(SystemExit, match="without a teacher/ variant; pass --guidance"):
        speed.teacher_guidance(str(tmp_path / "teacher"))
