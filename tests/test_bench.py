"""``pixlm bench`` on tiny random models: one run writes bench.json (documented keys), bench.md and bench.png."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pixlm.eval.bench import ROW_KEYS, BenchConfig, PeakRSS, measure_memory_subprocess, parse_model_arg, run_bench
from pixlm.cli import app
from pixlm.data.specs import load_specs
from pixlm.testing import tiny_pipeline_for


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {k: tiny_pipeline_for(k).save_pretrained(root / k) for k in ("masked", "autoregressive", "gan", "vae",
                                                                         "diffusion")}


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 distinct dev prompts: 21 for latency (1 warm-up + 20) and 2 × 4 for throughput, plus one spare."""
    rows, seen = [], set()
    for r in load_specs(None):
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            rows.append(r)
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_writes_rows_table_and_plot(model_dirs: dict[str, Path], prompt_file: Path, tmp_path: Path) -> None:
    cfg = BenchConfig(warmup=1, throughput_batch=4, throughput_repeats=2, memory="inprocess",
                      steps={"masked": (2, 3), "diffusion": (2,)})
    models = [str(model_dirs[k]) for k in ("masked", "autoregressive", "gan", "vae")]
    models.append(f"dm={model_dirs['diffusion']}")
    rows = run_bench(models, str(prompt_file), tmp_path / "out", cfg)
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert saved == json.loads(json.dumps(rows))
    assert [(r["model"], r["generator"], r["steps"]) for r in saved] == [
        ("masked", "masked", 2), ("masked", "masked", 3), ("autoregressive", "autoregressive", 64),
        ("gan", "gan", 1), ("vae", "vae", 1), ("dm", "diffusion", 2)]
    for r in saved:
        assert set(ROW_KEYS) <= set(r)
        assert r["latency_ms_bs1"] > 0 and r["images_per_s_bs64"] > 0 and r["peak_mem_mb"] >= 0
        assert 0 <= r["accuracy"] <= 1 and r["fid"] >= 0 and r["eval_images"] == 30
        assert r["latency_ms_bs1_p10"] <= r["latency_ms_bs1"] <= r["latency_ms_bs1_p90"]
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "| model | generator | steps | latency ms (bs 1) |" in md and md.count("\n| ") == 1 + len(rows)
    with Image.open(tmp_path / "out" / "bench.png") as im:
        assert im.format == "PNG" and im.size[0] > 600
    assert (tmp_path / "out" / "eval" / "masked-2" / "report.json").is_file()


def test_cli_bench_takes_several_model_dirs_after_one_flag(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--models", str(model_dirs["gan"]), str(model_dirs["masked"]),
                                      "--masked-steps", "2", "--no-quality", "--memory", "off",
                                      "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [(r["generator"], r["steps"]) for r in rows] == [("gan", 1), ("masked", 2)]
    assert rows[0]["accuracy"] is None and rows[0]["peak_mem_mb"] is None
    assert (tmp_path / "b" / "bench.md").is_file() and (tmp_path / "b" / "bench.png").is_file()
    bad = CliRunner().invoke(app, ["bench", "--models", str(model_dirs["gan"]), "--masked-steps", "4,x",
                                   "--out", str(tmp_path / "c")])
    assert bad.exit_code == 1 and "--masked-steps" in bad.output


def test_bench_refuses_too_few_prompts(model_dirs: dict[str, Path], prompt_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct prompts"):
        run_bench([str(model_dirs["gan"])], str(prompt_file), tmp_path, BenchConfig())  # needs 23 + 3 × 64
    with pytest.raises(ValueError, match="repeats=5"):
        BenchConfig(repeats=5)


def test_memory_is_measured_in_a_fresh_process(model_dirs: dict[str, Path]) -> None:
    mb = measure_memory_subprocess(str(model_dirs["gan"]), ["a red circle"] * 32, None, 1)
    assert 0 <= mb < 2000
    with PeakRSS() as peak:
        block = bytearray(64 * 2**20)  # touch 64 MB
        block[::4096] = b"x" * len(block[::4096])
    assert peak.delta_mb >= 32


def test_parse_model_arg() -> None:
    assert parse_model_arg("runs/baselines/gan/pipeline") == ("gan", "runs/baselines/gan/pipeline")
    assert parse_model_arg("fast=runs/x") == ("fast", "runs/x")
    assert parse_model_arg("bundled") == ("bundled", "bundled")
    with pytest.raises(ValueError, match="LABEL=DIR"):
        parse_model_arg("=runs/x")
