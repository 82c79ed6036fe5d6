"""Distil an 8-step guided masked generator into a student that draws in 1, 2 or 4 steps with guidance built in.

    python -m pixlm.train.distill --teacher shapes-teacher --out runs/distill/k2 --steps-student 2 --resume
    python -m pixlm.train.distill --teacher shapes-teacher --init runs/distill/k4/pipeline --own-states 4096 \
        --temperature 0.25 --out runs/distill/k2 --steps-student 2 --resume   # the bundled default (sizes: README)

writes ``OUT/pipeline``: the teacher's tokenizer, text encoder, expander, captioner, retrieval index and licence
files with the student generator, whose ``model_index.json`` defaults are the teacher's with
``num_inference_steps = distilled_steps = k`` and ``guidance_scale = 1`` (no unconditional row), and whose
``distillation`` entry records the run and the teacher generator's sha256. Run the same command again to resume
(``--resume``). ``--install FOLDER`` then makes the student the default of the teacher's model folder and keeps
the teacher as its ``teacher/`` variant (``install_student``; the bundled models were made so).

Method: *trajectory distillation with Monte-Carlo targets* (sequence-level knowledge distillation on the
teacher's own sampling trajectories)
-----------------------------------------------------------------------------------------------------------
1. Rollouts. The teacher runs its own sampler at its own defaults (K = 8 MaskGIT steps, guidance, temperatures,
   revision) on P prompts, one seeded generator per prompt; every intermediate token grid is kept (``(P, K, N)``,
   cached in ``OUT/rollouts/`` chunk by chunk, a pure function of (seed, prompt index)). A teacher with a retrieval
   index (the emoji model) starts each rollout from the picture it retrieves, its kept tokens fixed, as
   ``generate`` does; that start is kept too and is the student's first state.
2. States. The student's k-step cosine schedule visits k states: all masked, then the grids with
   ``floor(N cos(pi/2 j/k))`` tokens still masked, j = 1 … k-1. Because the teacher uses the same cosine schedule,
   the teacher's grid after its step ``K j/k - 1`` has exactly that many masked tokens: those grids are the
   states a k-step sampler on the teacher's path goes through.
3. Loss. From each of those states the student predicts, at every masked position, the teacher's *final* token of
   that rollout (cross-entropy). The final grid is one sample of what the teacher's remaining ``K (1 - j/k)`` guided
   steps make of the state, so the loss is an unbiased estimate of the KL from that multi-step guided
   distribution to the student's one-step prediction: the whole rest of the trajectory, guidance included, is
   folded into one forward. The student starts from the teacher's weights and sees only the prompt (no
   condition dropout), so guidance is built in and it samples with ``guidance_scale = 1``.

Why this and not the alternatives, for an 8×8-token, 8-step CFG teacher trained on a CPU in limited time:

* SDTT (Deschenaux & Gulcehre 2024, self-distillation through time) matches a student's one step to two teacher
  steps and halves the step count in rounds (8 → 4 → 2 → 1), each round a training run. Taking the targets from
  the *full* rollout instead reaches any k in one run, and each rollout is reused for all k student states of a
  step: the rollouts, not the student's updates, are what costs here (16 row-forwards of the teacher per picture).
  The same rollouts serve several runs (k = 1, 2, 4) when they share ``--rollouts`` and ``--seed``.
* Di[M]O (Zhu et al. 2025) distils into one step by on-policy token-level distribution matching: it needs an
  auxiliary "fake" model trained on the student's samples next to the student and a random-token initial state,
  i.e. two trained networks and many optimisation steps (GPU-hours in the paper). That is the route for a true
  one-step student with diverse samples; on a few CPU minutes the simpler sample-based objective is what trains.
  Its known weakness, which this recipe shares: with k = 1 every token is drawn independently from the student's
  per-position marginals, so scenes whose layout the prompt leaves open mix modes. The first smoke run (today's
  shapes model, 4-12 CPU-minutes per student) showed it plainly: on a dev-set slice the 1-step student drew every
  prompt that fixes the position and none of the single-object prompts that leave it open ("a diamond": scattered
  fragments); a lower sampling temperature did not help. With k = 2 the first step commits 19 of 64 tokens, mostly
  blank canvas, so the layout is still open when the remaining 45 are drawn at once; k = 4 fares best. A student
  that settles the layout in one step needs the noise in its input (Di[M]O's random-token start) and a
  distribution-matching loss, or a sampler schedule that commits a few layout tokens first.
* Guidance distillation (Meng et al. 2023, used by LCM and SD-Turbo): the student is trained on the *guided*
  teacher's outputs and run without an unconditional row, halving the rows per step on top of the step saving.
  The guidance scale is fixed at the teacher's default (no scale embedding: the architecture stays the teacher's,
  so every inference swap in ``pixlm.inference`` applies unchanged).
* MaskGIT's own sampler stays the student's sampler: same schedule, commit noise and revision, just k steps, and
  the teacher's temperature unless ``--temperature`` sets the student's own.
* Own states (``--own-states P``, k ≥ 2). A student's first step is one parallel draw, so the grids it hands its
  later steps are not the teacher's (exposure bias). On the first P rollouts' prompts the *initial* student (the
  teacher's weights, or ``--init``) runs its own k-step sampler at the teacher's temperature; the teacher completes
  each of its intermediate grids at its own defaults (the grid's tokens kept, as an inpainting call does); every
  training step adds ``batch_size`` such (state, completion) rows, k - 1 per prompt, to the teacher-path rows.
  Cached in ``OUT/own-states/``. This is the on-policy half of SDTT/Di[M]O's idea at the cost of one more rollout
  pass, with targets still the teacher's own samples.
* ``--init`` starts the student from an earlier student instead of the teacher (same architecture): the bundled
  2-step shapes student started from the 4-step one, whose guidance-free drawing it only has to compress further.

What that bought on the shapes model (dev + paraphrase, 2 images per prompt, seed 0): a 2-step student from the
teacher's weights on teacher-path states reached 94.2% / 93.6% (2,000 steps); from the 4-step student with 4,096
own-state prompts, 96.7% / 93.8% (1,500 steps); the same at temperature 0.25 instead of the teacher's 0.5,
96.3% / 96.2%: with two steps the last step draws 45 of 64 tokens at once, each independently from its marginal, and a
colder draw keeps an object's tokens from mixing two shapes or sizes. The teacher: 97.5% / 97.3%.

The student keeps the teacher's size; its speed comes from ``k`` steps of one row instead of ``K`` steps of two.
Asking a distilled model for another step count is an error (``TextToImagePipeline.sampling_settings``).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from tqdm.auto import tqdm

from pixlm.checkpoint import atomic_write_dir, read_json, write_json
from pixlm.models.masked import MaskedTransformer
from pixlm.pipelines.common import VARIANT_BASE, model_folder
from pixlm.pipelines.retrieval import sentence_embeddings
from pixlm.pipelines.text_to_image import TextToImagePipeline, load_pipeline
from pixlm.sampling.registry import make_sampler
from pixlm.train.common import config_parser, save_tensors_atomic
from pixlm.train.generator import _append, _encode_texts, gather_text, save_samples
from pixlm.train.loop import TrainLoop, param_groups


@dataclass
class DistillConfig:
    teacher: str = "shapes"  # a model folder, or a bundled model's name (shapes, emoji)
    out: str = "runs/distill"
    steps_student: int = 2  # the student's sampling steps (a divisor of the teacher's, smaller than it)
    prompts: str = ""  # a text file of prompts (one per line) or a JSONL with "prompt"/"text", taken in an order
    # drawn from the seed (cycled when the rollouts outnumber them); empty = shapes prompts
    rollouts: int = 2048  # teacher rollouts (prompt, trajectory) to distil from
    rollout_batch: int = 64  # prompts per teacher sampling call (and per cached chunk)
    own_states: int = 0  # of those rollouts' prompts, how many the initial student also draws itself, each of its
    # intermediate grids completed by the teacher: the states its own sampler visits, with their targets (0 = none)
    init: str = ""  # start the student from this generator (a model or generator folder with the teacher's
    # config, e.g. an earlier student) instead of the teacher's weights
    temperature: float = -1.0  # the student's sampling temperature (its defaults and evals); < 0: the teacher's.
    # Own states are drawn at the teacher's, whatever this is
    steps: int = 1000
    batch_size: int = 32  # rollouts per step; each gives steps_student student rows
    lr: float = 1e-4
    warmup: int = 20
    weight_decay: float = 0.01
    ema: float = 0.998
    seed: int = 0
    log_every: int = 25
    eval_every: int = 250  # judged accuracy of the student on a slice of the dev and paraphrase sets (and samples)
    eval_stride: int = 10  # that slice: every eval_stride-th prompt of each set (30 + 23 prompts at 10)
    judge: bool = True  # False: skip the shapes judge (a teacher of another world), log sample grids only
    ckpt_every: int = 100
    max_minutes: float = 0.0  # wall-clock limit counted from the start (rollouts included); 0 = none
    stop_after: int = 0  # stop after this step (0 = run to ``steps``); the schedule still spans ``steps``
    resume: bool = False
    install: str = ""  # at the end, make the student the default of this model folder (the teacher's; see install_student)


# ---------------------------------------------------------------------------------------------- prompts
def shapes_prompt(seed: int, i: int) -> str:
    """Prompt ``i`` of the shapes world, a pure function of (seed, i), drawn like the teacher's training pool:
    canonical captions, group relations, informal wording and the weak categories' phrasings."""
    from pixlm.data import loose, phrasing
    from pixlm.data.shapes import caption, group_relation_scene, random_scene

    rng = random.Random(seed * 1_000_003 + i)
    kind = rng.random()
    if kind < 0.4:
        return caption(random_scene(rng), rng)
    if kind < 0.55:
        return group_relation_scene(rng)[1]
    if kind < 0.75:
        return loose.loose(loose.intent_from_scene(random_scene(rng), rng), rng)
    return phrasing.training_pair(rng)[1]


def read_prompt_file(path: str) -> list[str]:
    """Prompts from a text file (one per line) or a JSONL file whose rows have ``prompt`` or ``text``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"prompts={path!r} is not a file")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in lines]
        lines = [r.get("prompt", r.get("text")) for r in rows]
        if not all(isinstance(t, str) and t for t in lines):
            raise ValueError(f"{path}: every row needs a non-empty 'prompt' (or 'text') string")
    if not lines:
        raise ValueError(f"prompts={path!r} holds no prompts")
    return lines


# ---------------------------------------------------------------------------------------------- rollouts
def check_steps(teacher_steps: int, student_steps: int) -> None:
    """The student's steps must divide the teacher's (so its states lie on the teacher's schedule) and be fewer."""
    if not isinstance(student_steps, int) or not 1 <= student_steps < teacher_steps \
            or teacher_steps % student_steps:
        allowed = [k for k in range(1, teacher_steps) if teacher_steps % k == 0]
        raise ValueError(f"steps_student={student_steps!r}: must divide the teacher's {teacher_steps} steps and be "
                         f"smaller; allowed: {allowed}")


@torch.no_grad()
def sampled_grids(pipe: TextToImagePipeline, prompts: list[str], seeds: list[int],
                  init_tokens: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``pipe``'s masked sampler at its own defaults on ``prompts`` (row i seeded ``seeds[i]``; ``init_tokens``
    where ``keep``, as an editing call keeps them): every intermediate grid, (B, K, N) int64, the last one the
    picture's tokens."""
    d = pipe.defaults
    scale = d["guidance_scale"]
    cond, uncond = pipe.text_conditioning(prompts, None, scale)
    given = {} if init_tokens is None else {"init_tokens": init_tokens, "keep": keep}
    grids: list[torch.Tensor] = []
    make_sampler("masked", d["num_inference_steps"], scale, d["temperature"], d).sample(
        pipe.generator, cond, uncond, len(prompts), generator=[torch.Generator().manual_seed(s) for s in seeds],
        callback=lambda i, k, tokens: grids.append(tokens.clone()), **given)
    return torch.stack(grids, 1)


@torch.no_grad()
def teacher_rollouts(teacher: TextToImagePipeline, prompts: list[str], seeds: list[int],
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's :func:`sampled_grids` on ``prompts``; and, on a teacher with a retrieval index, the grid it
    starts from (B, N): the retrieved picture's kept tokens, the rest masked (``generate``'s default path), else
    None (it starts fully masked)."""
    if teacher.retrieval is None:
        return sampled_grids(teacher, prompts, seeds), None
    init, keep, _ = teacher.retrieval.pick(prompts, lambda texts: sentence_embeddings(teacher.text_encoder, texts),
                                           seeds, teacher.defaults.get("retrieval", {}))
    first = torch.where(keep, init, teacher.generator.config.mask_id)
    return sampled_grids(teacher, prompts, seeds, init.to(teacher.device), keep.to(teacher.device)), first


def build_rollouts(cfg: DistillConfig, teacher: TextToImagePipeline, run: Path) -> dict[str, torch.Tensor]:
    """``cfg.rollouts`` teacher trajectories ``tokens`` (P, K, N) int16 with their prompts' ragged text states
    (``text``, ``offsets``, as the generator trainer's pool) and, for a teacher with a retrieval index, the grids
    they start from (``start`` (P, N)), cached chunk by chunk in ``run/rollouts/``."""
    file_prompts = read_prompt_file(cfg.prompts) if cfg.prompts else None
    if file_prompts:  # in an order drawn from the seed: a file sorted by name must not give only its first names
        random.Random(cfg.seed).shuffle(file_prompts)
    folder = run / "rollouts"
    folder.mkdir(parents=True, exist_ok=True)
    pool: dict[str, torch.Tensor] | None = None
    reader = student_pipeline(teacher, teacher.generator, cfg.steps_student)
    starts = range(0, cfg.rollouts, cfg.rollout_batch)
    for c, start in enumerate(tqdm(starts, desc="teacher rollouts")):
        path = folder / f"chunk-{c:05d}.safetensors"
        idx = range(start, min(start + cfg.rollout_batch, cfg.rollouts))
        if not path.is_file():
            prompts = [file_prompts[i % len(file_prompts)] if file_prompts else shapes_prompt(cfg.seed, i)
                       for i in idx]
            seeds = [cfg.seed * 1_000_003 + i for i in idx]
            prompts = reader.read_prompts(prompts, seeds)[0]  # as the student will read them (and lay them out)
            tokens, first = teacher_rollouts(teacher, prompts, seeds)
            chunk = {"tokens": tokens.to(torch.int16), **_encode_texts(teacher.text_encoder, prompts, None)}
            if first is not None:
                chunk["start"] = first.to(torch.int16)
            save_tensors_atomic(chunk, path, {"prompts": json.dumps(prompts)})
        chunk = load_file(str(path))
        if chunk["tokens"].shape[0] != len(idx):
            raise ValueError(f"{path} holds {chunk['tokens'].shape[0]} rollouts, expected {len(idx)}: it was made "
                             f"with another --rollout-batch; use that value or a new --out")
        pool = chunk if pool is None else _append(pool, chunk)
    assert pool is not None
    return pool


@torch.no_grad()
def own_state_rollouts(teacher: TextToImagePipeline, student: MaskedTransformer, k: int, prompts: list[str],
                       seeds: list[int], start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The states a k-step ``student`` visits on its own and what the teacher makes of them.

    The student runs its k-step sampler (at the student defaults, row i seeded ``seeds[i]``; from ``start`` (B, N)
    when given, its tokens kept); its grids after steps 1 … k-1 are the states (B, k-1, N). The teacher then
    completes each state at its own defaults (the state's tokens kept, the rest decoded on its schedule scaled
    to the masked count, as an inpainting call does), seeded ``seeds[i] + j``: the targets (B, k-1, N)."""
    mask_id = student.config.mask_id
    keep = None if start is None else start != mask_id
    own = sampled_grids(student_pipeline(teacher, student, k), prompts, seeds, start, keep)
    states = own[:, :-1]  # (B, k - 1, N): the last grid is the student's picture
    targets = torch.stack([sampled_grids(teacher, prompts, [s + j for s in seeds], states[:, j],
                                         states[:, j] != mask_id)[:, -1] for j in range(k - 1)], 1)
    return states, targets


def build_own_states(cfg: DistillConfig, teacher: TextToImagePipeline, student: MaskedTransformer, run: Path,
                     pool: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``own_state_rollouts`` of the initial student on the first ``cfg.own_states`` rollouts' prompts (their
    texts and starts), cached chunk by chunk in ``run/own-states/``: ``states`` and ``targets`` (P', k-1, N) int16
    and ``rollout`` (P',), the rollout each row belongs to (for its text)."""
    folder = run / "own-states"
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, torch.Tensor]] = []
    for c, first in enumerate(tqdm(range(0, cfg.own_states, cfg.rollout_batch), desc="own states")):
        path = folder / f"chunk-{c:05d}.safetensors"
        idx = list(range(first, min(first + cfg.rollout_batch, cfg.own_states)))
        if not path.is_file():
            with safe_open(str(run / "rollouts" / f"chunk-{c:05d}.safetensors"), "pt") as f:
                prompts = json.loads(f.metadata()["prompts"])[:len(idx)]
            start = pool["start"][idx].long() if "start" in pool else None
            seeds = [(cfg.seed + 1) * 1_000_003 + i for i in idx]  # not the teacher rollouts' seeds
            states, targets = own_state_rollouts(teacher, student, cfg.steps_student, prompts, seeds, start)
            save_tensors_atomic({"states": states.to(torch.int16), "targets": targets.to(torch.int16),
                                 "rollout": torch.tensor(idx)}, path)
        parts.append(load_file(str(path)))
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def init_weights_from(student: MaskedTransformer, init: str) -> None:
    """Load ``init`` (a model folder with a ``generator/``, a generator folder, or a bundled model's name) into
    ``student``, whose config it must share."""
    folder = model_folder(init)
    folder = folder / "generator" if (folder / "generator").is_dir() else folder
    other = MaskedTransformer.from_pretrained(folder)
    if other.config != student.config:
        raise ValueError(f"init={init!r}: its generator config {other.config} differs from the teacher's "
                         f"{student.config}; the student keeps the teacher's architecture")
    student.load_state_dict(other.state_dict())


def student_states(trajectories: torch.Tensor, k: int, mask_id: int, start: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k states a k-step sampler visits on each teacher trajectory (B, K, N), and their targets.

    Returns ``states`` (B·k, N) — rollout b's state j at row b·k + j: its start for j = 0 (``start`` (B, N), or
    all masked), the teacher's grid after step K·j/k - 1 otherwise — and ``targets`` (B·k, N), the rollout's final
    grid repeated. A start with given tokens (retrieval) scales the schedule to its masked count in both samplers,
    so the teacher's grid after step K·j/k - 1 is still the student's state j."""
    b, steps, n = trajectories.shape
    if start is None:
        first = torch.full((b, 1, n), mask_id, dtype=trajectories.dtype)
    else:
        first = start.to(trajectories.dtype).view(b, 1, n)
    later = trajectories[:, [steps * j // k - 1 for j in range(1, k)]]  # (B, k - 1, N)
    states = torch.cat([first, later], 1).reshape(b * k, n)
    targets = trajectories[:, -1:].expand(b, k, n).reshape(b * k, n)
    return states, targets


def student_defaults(teacher_defaults: dict, k: int, temperature: float | None = None) -> dict:
    """The teacher's sampling defaults for a k-step student with guidance built in, at ``temperature`` (None: the
    teacher's). A student of a model with a scene grammar lays out every scene, a lone object included
    (``plan_layout="all"``): a one- or two-step sampler cannot settle a position the prompt leaves open (see the
    module docstring), so the prompt reader settles it."""
    out = {**teacher_defaults, "num_inference_steps": k, "guidance_scale": 1.0, "distilled_steps": k}
    if temperature is not None:
        out["temperature"] = temperature
    if teacher_defaults.get("scene_grammar") == "shapes":
        out["plan_layout"] = "all"
    return out


def student_pipeline(teacher: TextToImagePipeline, student: MaskedTransformer, k: int,
                     temperature: float | None = None) -> TextToImagePipeline:
    """A pipeline of the teacher's components with ``student`` as its generator and the student's defaults."""
    return teacher.with_generator(student, student_defaults(teacher.defaults, k, temperature))


def generator_sha256(folder: Path) -> str:
    """The fingerprint of a generator folder's weights (its ``model.safetensors``)."""
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def install_student(student: Path, target: Path) -> Path:
    """Make the student pipeline folder ``student`` (this recipe's ``OUT/pipeline``) the default of the model
    folder ``target``, which holds its teacher: the teacher's generator and defaults move to ``target/teacher``, a
    variant folder that shares every other component with ``target`` (``load_pipeline("shapes-teacher")``, or the
    folder's path), and the student's generator and defaults take their place. Installing into a folder that
    already holds a student replaces that student and keeps ``teacher/``. The student must have been distilled
    from that teacher (its ``model_index.json`` records the teacher generator's sha256). Returns ``target``."""
    s_index, index = read_json(student / "model_index.json"), read_json(target / "model_index.json")
    source = s_index.get("distillation", {}).get("teacher_generator_sha256")
    teacher = target / "teacher" if "distilled_steps" in index.get("defaults", {}) else target
    if not (teacher / "generator").is_dir():
        raise ValueError(f"{target} holds a distilled student but no teacher/ folder to check the new one against")
    if source != generator_sha256(teacher / "generator"):
        raise ValueError(f"{student} was not distilled from the generator of {teacher}; distil from that model "
                         f"(--teacher {teacher}) before installing into {target}")
    if teacher == target:
        def write_teacher(tmp: Path) -> None:
            shutil.copytree(target / "generator", tmp / "generator")
            write_json(tmp / "model_index.json", {**index, VARIANT_BASE: ".."})

        atomic_write_dir(target / "teacher", write_teacher)
    with safe_open(str(teacher / "generator" / "model.safetensors"), "pt") as f:  # stored as the teacher was
        dtype = f.get_tensor(next(iter(f.keys()))).dtype
    MaskedTransformer.from_pretrained(student / "generator").save_pretrained(target / "generator", dtype=dtype)
    write_json(target / "model_index.json", {**index, "defaults": s_index["defaults"],
                                             "distillation": s_index["distillation"]})
    return target


# ---------------------------------------------------------------------------------------------- evaluation
def write_eval_specs(path: Path, stride: int) -> Path:
    """Every ``stride``-th row of the shipped dev set and of the paraphrase set, as one spec file."""
    from pixlm.data.specs import load_specs
    from pixlm.eval.paraphrase import paraphrase_prompts_path

    rows = load_specs(None)[::stride] + load_specs(paraphrase_prompts_path())[::stride]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def judged_accuracy(pipe: TextToImagePipeline, specs: Path, out: Path) -> dict:
    """The shapes judge's accuracy of one image per prompt of ``specs`` (seed 0): ``dev_acc`` over the dev
    categories, ``para_acc`` over the paraphrase rows (``pixlm eval``'s report in ``out``).

    Not the training pool's own captions: those are fully specified, and a few-step student that cannot settle a
    layout the prompt leaves open ("a diamond") still scores well on them."""
    from pixlm.eval.report import run_eval

    cats = run_eval(None, str(specs), 1, str(out), seed=0, pipeline=pipe)["categories"]
    dev = [v for name, v in cats.items() if name != "paraphrase"]
    row = {"dev_acc": sum(v["accuracy"] * v["n"] for v in dev) / max(1, sum(v["n"] for v in dev))}
    if "paraphrase" in cats:
        row["para_acc"] = cats["paraphrase"]["accuracy"]
    return row


# ---------------------------------------------------------------------------------------------- training
def distill(cfg: DistillConfig) -> Path:
    """Distil (or resume distilling) ``cfg.teacher`` into a ``cfg.steps_student``-step student; returns
    ``OUT/pipeline``."""
    teacher_root = model_folder(cfg.teacher)
    teacher = load_pipeline(teacher_root, precision="reference")  # plain float32 modules: the student trains on them
    d = teacher.defaults
    if teacher.generator.kind != "masked":
        raise ValueError(f"teacher {cfg.teacher!r} has a {teacher.generator.kind!r} generator; distillation needs a "
                         "masked one")
    if "distilled_steps" in d:
        variant = teacher_root / "teacher"
        hint = f" (its teacher/ variant: --teacher {variant})" if variant.is_dir() else ""
        raise ValueError(f"teacher {cfg.teacher!r} is itself a {d['distilled_steps']}-step student; distil from the "
                         f"model it came from{hint}")
    k = cfg.steps_student
    check_steps(d["num_inference_steps"], k)
    temperature = cfg.temperature if cfg.temperature >= 0 else None
    if temperature is not None and temperature > 10:
        raise ValueError(f"temperature={cfg.temperature} must be in [0, 10] (or negative for the teacher's)")
    for name in ("rollouts", "rollout_batch", "batch_size", "steps", "eval_stride"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    if cfg.own_states and not 0 < cfg.own_states <= cfg.rollouts:
        raise ValueError(f"own_states={cfg.own_states} must be in 1..rollouts={cfg.rollouts} (or 0 for none)")
    if cfg.own_states and k < 2:
        raise ValueError("own_states needs steps_student >= 2: a one-step student visits no state of its own")
    student = MaskedTransformer(teacher.generator.config)
    student.load_state_dict(teacher.generator.state_dict())  # start from the teacher
    if cfg.init:
        init_weights_from(student, cfg.init)
    loop = TrainLoop(cfg)
    if loop.accelerator.num_processes > 1:
        raise ValueError("distillation runs in one process (the rollouts are built and read by it alone)")
    run = loop.run
    pool = build_rollouts(cfg, teacher, run)
    own = build_own_states(cfg, teacher, student.eval(), run, pool) if cfg.own_states else None
    student.train()
    opt = torch.optim.AdamW(param_groups(student, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    (model,) = loop.prepare({"raw": student}, opt, ema=True)
    mask_id = student.config.mask_id
    stop = loop.stop_when(cfg.max_minutes, cfg.stop_after)

    def step_fn(step: int) -> dict:
        """``batch_size`` rollouts drawn from (seed, step), each giving the student its k states."""
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, pool["tokens"].shape[0], (cfg.batch_size,), generator=gen)
        start = pool["start"][idx].long() if "start" in pool else None
        states, targets = student_states(pool["tokens"][idx].long(), k, mask_id, start)
        texts = idx.repeat_interleave(k)
        if own is not None:  # as many rollouts again from the student's own states, k - 1 rows each
            j = torch.randint(0, own["states"].shape[0], (cfg.batch_size,), generator=gen)
            states = torch.cat([states, own["states"][j].long().flatten(0, 1)])
            targets = torch.cat([targets, own["targets"][j].long().flatten(0, 1)])
            texts = torch.cat([texts, own["rollout"][j].repeat_interleave(k - 1)])
        text, text_mask = gather_text(pool, texts)
        masked = states == mask_id
        logits = model(states, text, text_mask)  # (rows, N, V)
        loss = F.cross_entropy(logits[masked].float(), targets[masked])
        loop.accelerator.backward(loss)
        return {"loss": loss.detach()}

    eval_specs = write_eval_specs(run / "eval_prompts.jsonl", cfg.eval_stride) if cfg.judge else None

    def evaluate(done: int) -> dict:
        pipe = student_pipeline(teacher, loop.ema, k, temperature)
        save_samples(pipe, run / f"samples-{done:07d}.png")
        return judged_accuracy(pipe, eval_specs, run / "eval" / f"step-{done:07d}") if eval_specs else {}

    done = loop.fit(step_fn, ema_decay=cfg.ema, clip_norm=1.0, evaluate=evaluate, eval_every=cfg.eval_every,
                    log_extra=lambda n: {"rollouts_seen": n * cfg.batch_size}, plot=("loss", "dev_acc", "para_acc"),
                    stop=stop)
    loop.finish(lambda: save_student(student_pipeline(teacher, loop.ema, k, temperature), teacher_root, cfg, done,
                                     run / "pipeline"))
    if cfg.install:
        install_student(run / "pipeline", Path(cfg.install))
    return run / "pipeline"


def save_student(pipe: TextToImagePipeline, teacher_root: Path, cfg: DistillConfig, done: int, out: Path) -> Path:
    """Write the student pipeline, with the record of its distillation in ``model_index.json`` (the teacher
    generator's sha256, which ``install_student`` checks) and the teacher folder's licence and attribution files."""
    pipe.save_pretrained(out)
    index = read_json(out / "model_index.json")
    index["distillation"] = {"steps": cfg.steps_student, "teacher": cfg.teacher, "rollouts": cfg.rollouts,
                             "own_states": cfg.own_states, "init": cfg.init or None,
                             "schedule_steps": cfg.steps, "trained_steps": done,
                             "teacher_generator_sha256": generator_sha256(teacher_root / "generator")}
    write_json(out / "model_index.json", index)
    teacher_index = read_json(teacher_root / "model_index.json")
    roots = [teacher_root / teacher_index[VARIANT_BASE]] if VARIANT_BASE in teacher_index else []  # a variant's
    for root in [*roots, teacher_root]:  # licences are its base folder's
        for f in [*root.glob("ATTRIBUTION.md"), *root.glob("LICENSE*")]:
            shutil.copy2(f, out / f.name)
    return out


def main(argv: list[str] | None = None) -> Any:
    args = config_parser(DistillConfig, __doc__).parse_args(argv)
    path = distill(DistillConfig(**vars(args)))
    print(path)
    return path


if __name__ == "__main__":
    main()
