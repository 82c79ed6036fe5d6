"""Crash safety: a process killed in the middle of writing a checkpoint resumes to the uninterrupted loss curve."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pixlm.data.shards import shard_imagefolder
from pixlm.train.common import (CRASH_ENV, CRASH_POINTS, LossLog, complete_checkpoints, resume_from_latest,
                                save_training_checkpoint)
from pixlm.train.generator import GeneratorTrainConfig, train_generator

TINY = dict(text_encoder="tiny", pool=32, dim=16, layers=1, log_every=1, eval_every=1000, ckpt_every=2, steps=6,
            batch_size=4, lr=3e-3, warmup=1)


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "pipeline" / "generator" / "model.safetensors"))


def test_killed_mid_checkpoint_resumes_to_the_same_loss_curve(vq_dir: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    train_generator(GeneratorTrainConfig(out=str(ref), tokenizer=str(vq_dir), **TINY))

    run = tmp_path / "crashed"
    cmd = [sys.executable, "-m", "pixlm.train", "generator", "--out", str(run), "--tokenizer", str(vq_dir)]
    for k in ("text_encoder", "pool", "dim", "layers", "log_every", "ckpt_every", "steps", "batch_size", "lr",
              "warmup"):
        cmd += [f"--{k.replace('_', '-')}", str(TINY[k])]
    proc = subprocess.run(cmd, env={**os.environ, CRASH_ENV: "4", "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 137, proc.stderr[-2000:]  # died like kill -9, weights of step 4 half written
    assert [p.name for p in complete_checkpoints(run)] == ["step-0000002"]
    half = run / "checkpoints" / ".step-0000004.tmp"
    assert (half / "model" / "model.safetensors").is_file() and not (half / ".complete").exists()
    assert [r["step"] for r in log_rows(run)] == [1, 2, 3, 4]

    train_generator(GeneratorTrainConfig(out=str(run), tokenizer=str(vq_dir), resume=True, **TINY))
    assert not half.exists()  # the interrupted write was cleared away
    assert [p.name for p in complete_checkpoints(run)] == ["step-0000002", "step-0000004", "step-0000006"]
    got, want = log_rows(run), log_rows(ref)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in got] == [r["loss"] for r in want]  # exactly: same data, masks, optimizer state
    # Weights to float rounding: with several threads a reduction's order can differ between processes (the killed
    # run was a subprocess), so the last bits may differ even though every logged loss above is identical.
    for k, v in final_weights(ref).items():
        torch.testing.assert_close(final_weights(run)[k], v, rtol=1e-5, atol=1e-7, msg=k)


class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing below the crash point runs, no cleanup handler catches it."""


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_kill_at_any_point_of_a_write_leaves_a_resumable_run(point: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from pixlm.models.masked import MaskedConfig, MaskedTransformer

    def make() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = MaskedTransformer(MaskedConfig(vocab_size=16, dim=8, layers=1, heads=2, text_dim=8))
        return model, torch.optim.AdamW(model.parameters())

    model, opt = make()
    saved = {}
    for step in range(1, 5):
        with torch.no_grad():
            next(model.parameters()).fill_(float(step))  # each checkpoint's weights say which step wrote them
        saved[step] = {k: v.clone() for k, v in model.state_dict().items()}
        if step == 4:
            monkeypatch.setenv(CRASH_ENV, f"4:{point}")
            monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(Killed()))
            with pytest.raises(Killed):
                save_training_checkpoint(tmp_path, step, {"model": model}, opt, {})
        else:
            save_training_checkpoint(tmp_path, step, {"model": model}, opt, {})
    fresh, fresh_opt = make()
    state = resume_from_latest(tmp_path, {"model": fresh}, fresh_opt)
    survived = 4 if point in ("renamed", "pruning") else 3  # before the rename, step 4 does not exist yet
    assert state["step"] == survived
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, saved[survived][k]), k
    assert not list((tmp_path / "checkpoints").glob(".*"))  # leftovers of the interrupted write are gone
    monkeypatch.delenv(CRASH_ENV)
    save_training_checkpoint(tmp_path, 5, {"model": fresh}, fresh_opt, {})  # and the run goes on checkpointing
    assert [p.name for p in complete_checkpoints(tmp_path)][-1] == "step-0000005"


def test_checkpoint_restores_the_rng_state(tmp_path: Path) -> None:
    from pixlm.models.masked import MaskedConfig, MaskedTransformer

    model = MaskedTransformer(MaskedConfig(vocab_size=16, dim=8, layers=1, heads=2, text_dim=8))
    opt = torch.optim.AdamW(model.parameters())
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_training_checkpoint(tmp_path, 1, {"model": model}, opt, {})
    after = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    assert resume_from_latest(tmp_path, {"model": model}, opt)["step"] == 1
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], again[0]) and np.array_equal(after[1], again[1]) and after[2] == again[2]


def test_keeps_the_last_three_and_survives_a_cut_log_line(tmp_path: Path) -> None:
    from pixlm.models.masked import MaskedConfig, MaskedTransformer

    model = MaskedTransformer(MaskedConfig(vocab_size=16, dim=8, layers=1, heads=2, text_dim=8))
    opt = torch.optim.AdamW(model.parameters())
    for step in range(1, 6):
        save_training_checkpoint(tmp_path, step, {"model": model}, opt, {})
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-0000003", "step-0000004", "step-0000005"]
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    LossLog(tmp_path, resume_step=2)
    assert (tmp_path / "log.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


def test_streaming_from_token_shards_resumes_where_it_stopped(vq_dir: Path, shapes_folder: Path,
                                                              tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shard_imagefolder(shapes_folder, shards, shard_size=6, tokenizer=str(vq_dir))
    cfg = {**TINY, "steps": 4, "data": f"{shards}/shard-{{000000..000003}}.tar", "shuffle_buffer": 5}
    ref, run = tmp_path / "ref", tmp_path / "run"
    train_generator(GeneratorTrainConfig(out=str(ref), tokenizer=str(vq_dir), **cfg))
    train_generator(GeneratorTrainConfig(out=str(run), tokenizer=str(vq_dir), **{**cfg, "steps": 2}))
    train_generator(GeneratorTrainConfig(out=str(run), tokenizer=str(vq_dir), resume=True, **cfg))
    assert not (run / "pool.safetensors").exists()  # streamed, not pre-encoded into a pool
    # (with warmup=1 the LR of steps 1-2 is the same under a 2- and a 4-step schedule)
    assert [r["step"] for r in log_rows(run)] == [1, 2, 3, 4]
    assert [r["loss"] for r in log_rows(run)] == [r["loss"] for r in log_rows(ref)]


def test_tokenizer_streams_image_shards_and_resumes(shapes_folder: Path, tmp_path: Path) -> None:
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    shards = tmp_path / "shards"
    shard_imagefolder(shapes_folder, shards, shard_size=6)
    cfg = dict(data=str(shards), shuffle_buffer=5, channels=(8, 8, 16, 16), levels=(4, 4, 4), batch_size=3,
               log_every=1, ckpt_every=2, steps=4)  # warmup 100: steps 1-4 have the same LR whatever `steps` is
    ref, run = tmp_path / "ref", tmp_path / "run"
    train_tokenizer(TokenizerTrainConfig(out=str(ref), **cfg))
    train_tokenizer(TokenizerTrainConfig(out=str(run), **{**cfg, "steps": 2}))
    train_tokenizer(TokenizerTrainConfig(out=str(run), resume=True, **cfg))
    assert [r["loss"] for r in log_rows(run)] == [r["loss"] for r in log_rows(ref)]
    with pytest.raises(ValueError, match="not a set of tar shards"):
        train_tokenizer(TokenizerTrainConfig(out=str(tmp_path / "x"), data=str(shapes_folder)))
