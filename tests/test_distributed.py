"""Data-parallel training: 2 gloo processes, gradient accumulation and one big batch take the same steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixlm.train.common import complete_checkpoints
from pixlm.train.generator import GeneratorTrainConfig, train_generator
from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

TINY = dict(text_encoder="tiny", pool=32, dim=16, layers=1, log_every=1, eval_every=1000, ckpt_every=3, steps=3,
            lr=3e-3, warmup=1)


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(complete_checkpoints(run)[-1] / "raw" / "model.safetensors"))


@pytest.fixture(scope="module")
def big_batch_run(vq_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process, batch 8."""
    run = tmp_path_factory.mktemp("big") / "run"
    train_generator(GeneratorTrainConfig(out=str(run), tokenizer=str(vq_dir), batch_size=8, **TINY))
    return run


def assert_same_training(a: Path, b: Path) -> None:
    assert losses(a) == pytest.approx(losses(b), rel=1e-5)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6, msg=k)


def test_gradient_accumulation_matches_one_big_batch(big_batch_run: Path, vq_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "accum"
    train_generator(GeneratorTrainConfig(out=str(run), tokenizer=str(vq_dir), batch_size=4, grad_accum=2, **TINY))
    assert_same_training(big_batch_run, run)
    # and differs from plain batch 4, so the comparison above can fail
    small = tmp_path / "small"
    train_generator(GeneratorTrainConfig(out=str(small), tokenizer=str(vq_dir), batch_size=4, **TINY))
    assert losses(small) != pytest.approx(losses(run), rel=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_gloo_processes_match_one_process(big_batch_run: Path, vq_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pixlm.train", "generator", "--out", str(run), "--tokenizer", str(vq_dir),
           "--batch-size", "4", "--num-processes", "2"]  # re-launched as 2 processes by torch.distributed.run
    for k in ("text_encoder", "pool", "dim", "layers", "log_every", "ckpt_every", "steps", "lr", "warmup"):
        cmd += [f"--{k.replace('_', '-')}", str(TINY[k])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((complete_checkpoints(run)[-1] / "state.json").read_text())
    assert state["world_size"] == 2
    assert_same_training(big_batch_run, run)
    ckpt = complete_checkpoints(run)[-1]
    opt0 = torch.load(ckpt / "rank-0.pt", weights_only=True)["optimizer"]["state"]
    opt1 = torch.load(ckpt / "rank-1.pt", weights_only=True)["optimizer"]["state"]
    for k in opt0:  # DDP all-reduced the gradients: both ranks hold the same Adam moments, hence the same weights
        torch.testing.assert_close(opt0[k]["exp_avg"], opt1[k]["exp_avg"], rtol=0, atol=0)


def test_bf16_mixed_precision_trains_and_bad_values_are_named(vq_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "bf16"
    train_generator(GeneratorTrainConfig(out=str(run), tokenizer=str(vq_dir), batch_size=4, mixed_precision="bf16",
                                         **{**TINY, "steps": 2, "ckpt_every": 2}))
    assert all(torch.isfinite(torch.tensor(losses(run))))
    with pytest.raises(ValueError, match="mixed_precision='fp8'"):
        train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "t"), mixed_precision="fp8"))
    with pytest.raises(ValueError, match="grad_accum=0"):
        train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "t"), grad_accum=0))
