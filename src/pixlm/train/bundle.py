"""Rebuild the bundled shapes model in one command::

    python -m pixlm.train.bundle --work runs/bundle --out src/pixlm/assets/shapes-masked

Stages (each resumable; a finished stage is skipped): (1) the tokenizer; (2) its decoder alone is fine-tuned —
the encoder, hence every token, stays fixed; (3) the generator is trained on the stage-1 tokens; (4) the pipeline
is assembled with the fine-tuned decoder and written in float16. Each stage uses every core: on a 2-core machine
two single-threaded stages side by side ran ~3× slower per step than one stage with both cores.

The shipped model: tokenizer 1000 steps (31.8 dB), decoder fine-tune stopped at its step-800 checkpoint of the
1500-step schedule (33.8 dB; pass ``--decoder-checkpoint 800`` to reproduce), generator 21,000 steps of batch 64 in
the default ``--generator-steps`` phases: a 5000-step cosine schedule, resumed on a 15000-step one up to step 6250,
on a 13000-step one to its end, then on a 21000-step one (split at 13750 and 15000 only because the pool grew
there). From step 13,750 the pool also pairs 20,000 of its scenes with informal prompts (``--loose-pool``), from
step 15,000 it adds 10,000 scenes captioned by a relation between groups (``--relation-pool``). The plan changed
between sessions to fit the CPU time each had; the defaults replay what was run.

Fine-tuning the shipped generator instead (issue 22: the weak categories and free phrasing), resumable, on one
low-priority thread so it can run in the background for days::

    nohup nice -n 19 env OMP_NUM_THREADS=1 python -m pixlm.train.bundle --finetune-from src/pixlm/assets/shapes-masked/teacher \
        --work runs/shapes22 --threads 1 > runs/shapes22/train.log 2>&1 &

It seeds ``WORK/generator`` with the given model's generator as checkpoint step 0 (``start_from``), trains on a pool
of canonical captions, informal prompts, group relations and ``--phrase-pool`` weak-category pairs
(``pixlm.data.phrasing``) and, at the end of the schedule, assembles ``WORK/shapes-masked`` (never the shipped
folder unless ``--out`` names it). Run the same command again to resume; ``--finetune-stop`` ends early.

``runs/`` is not committed. ``--export-weights DIR`` copies the newest checkpoint's weights (EMA ``model/`` and
``raw/``, float32 safetensors, and ``state.json``) to ``DIR``; on another machine, adding ``--resume-weights DIR``
to the command above starts the run at that checkpoint's step (the optimizer's moments start afresh).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


def _tokenizer(work: Path, steps: int) -> Path:
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    out = work / "tokenizer"
    if not (out / "model" / ".complete").exists():
        train_tokenizer(TokenizerTrainConfig(out=str(out), steps=steps, batch_size=24, ckpt_every=100, resume=True))
    return out / "model"


def _decoder(work: Path, tokenizer: Path, steps: int) -> Path:
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    out = work / "decoder"
    if not (out / "model" / ".complete").exists():
        train_tokenizer(TokenizerTrainConfig(out=str(out), steps=steps, batch_size=24, lr=5e-4, warmup=20,
                                             init_from=str(tokenizer), freeze_encoder=True, seed=1,
                                             ckpt_every=100, resume=True))
    return out / "model"


def _decoder_until(work: Path, tokenizer: Path, steps: int, stop: int) -> None:
    """Run the decoder fine-tune's ``steps``-long schedule only up to checkpoint ``stop``."""
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    train_tokenizer(TokenizerTrainConfig(out=str(work / "decoder"), steps=steps, batch_size=24, lr=5e-4, warmup=20,
                                         init_from=str(tokenizer), freeze_encoder=True, seed=1, ckpt_every=100,
                                         resume=True, stop_at=stop))


def _generator(work: Path, tokenizer: Path, phases: list[tuple[int, int]], pool: int, loose_pool: int = 0,
               loose_from: int = 0, relation_pool: int = 0, relation_from: int = 0) -> Path:
    """Run the phases in order; those starting at or after step ``loose_from`` add ``loose_pool`` informal prompts
    to the pool, those from ``relation_from`` on also ``relation_pool`` group-relation scenes."""
    from pixlm.train.generator import GeneratorTrainConfig, train_phases

    cfg = GeneratorTrainConfig(out=str(work / "generator"), tokenizer=str(tokenizer), pool=pool)
    return train_phases(cfg, phases, lambda start: {"loose_pool": loose_pool if start >= loose_from else 0,
                                                    "relation_pool": relation_pool if start >= relation_from else 0})


# Chosen on tuning prompts drawn with seed 1 (none in the dev set), 2 images each, for the 21,000-step generator:
# `python benchmarks/tune_sampling.py --per-category 30 --guidance 1.5,2,3 --temperature 0.3,0.5 --choice-temperature
# 0.5,1` picked temperature 0.5 and choice temperature 0.5 (benchmarks/results/tune_sampling_21k.json); then
# `... --per-category 80 --guidance 2.5 --temperature 0.5 --choice-temperature 0.5 --revise-margin none,4,6,8` picked
# re-masking doubted tokens with margin 6 (89.6% there against 81.4% without; with the rule's first, constant margin,
# guidance 2 and 2.5 tied at 88.8 / 88.6%): benchmarks/results/tune_sampling_revise.json.
# ``scene_grammar``: the pictures are shapes-world scenes, so edits may read them and prompts may name only what
# is new (``pixlm.pipelines.editing.inpaint``'s ``guided``), and free wording is read into the caption grammar
# (``TextToImagePipeline.read_prompts``); ``plan_layout``: that reading also gives each object a cell of its own.
SAMPLING_DEFAULTS = {"num_inference_steps": 8, "guidance_scale": 2.5, "temperature": 0.5, "choice_temperature": 0.5,
                     "revise_margin": 6.0, "scene_grammar": "shapes", "plan_layout": True}


def assemble(generator_pipeline: Path, decoder: Path, out: Path) -> Path:
    """Pipeline from stage 2 with the fine-tuned VQ of stage 3, weights stored as float16."""
    from pixlm.models.vq import VQModel
    from pixlm.pipelines.text_to_image import TextToImagePipeline

    pipe = TextToImagePipeline.from_pretrained(generator_pipeline)
    vq = pipe.vq.with_decoder_of(VQModel.from_pretrained(decoder))
    pipe.vq = vq.eval()
    pipe.defaults.update(SAMPLING_DEFAULTS)
    from pixlm.checkpoint import atomic_write_dir, write_json

    def write(tmp: Path) -> None:
        import shutil

        for extra in ("captioner", "expander"):  # optional parts trained by their own recipes: keep them
            if (out / extra).is_dir():
                shutil.copytree(out / extra, tmp / extra)
        pipe.vq.save_pretrained(tmp / "vq", dtype=torch.float16)
        pipe.text_encoder.save_pretrained(tmp / "text_encoder")
        pipe.generator.save_pretrained(tmp / "generator", dtype=torch.float16)
        write_json(tmp / "model_index.json", {"pipeline": "TextToImagePipeline", "generator": pipe.generator.kind,
                                              "defaults": pipe.defaults})

    return atomic_write_dir(out, write)


FINETUNE = {"steps": 40_000, "lr": 3e-4, "pool": 24_000, "loose_pool": 8_000, "relation_pool": 6_000,
            "phrase_pool": 24_000, "ckpt_every": 250, "eval_every": 2_000}


def start_from(run: Path, generator: torch.nn.Module, weight_decay: float, seed: int = 0, step: int = 0,
               raw: torch.nn.Module | None = None) -> bool:
    """Make a trained ``generator`` checkpoint ``step`` of ``run`` (EMA weights; raw weights ``raw`` or the same; a
    fresh optimizer), so that ``train_generator(resume=True)`` continues from it. Returns False (and writes
    nothing) when the run already has a checkpoint: resuming then continues that one."""
    from pixlm.train.common import complete_checkpoints, save_training_checkpoint
    from pixlm.train.loop import param_groups

    if complete_checkpoints(run):
        return False
    opt = torch.optim.AdamW(param_groups(raw or generator, weight_decay), lr=0.0, betas=(0.9, 0.98))
    save_training_checkpoint(run, step, {"model": generator, "raw": raw or generator}, opt, {"seed": seed})
    return True


def export_weights(run: Path, dest: Path) -> Path:
    """Copy the newest complete checkpoint's weights (``model/``, ``raw/``, ``state.json``; no optimizer) to ``dest``."""
    import shutil

    from pixlm.train.common import complete_checkpoints

    ckpts = complete_checkpoints(run)
    if not ckpts:
        raise FileNotFoundError(f"{run} has no complete checkpoint to export")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("model", "raw"):
        shutil.copytree(ckpts[-1] / name, dest / name)
    shutil.copy2(ckpts[-1] / "state.json", dest / "state.json")
    return dest


def model_vq(folder: Path) -> Path:
    """The tokenizer of a model folder, or of a variant folder's base (``shapes-masked/teacher``)."""
    from pixlm.checkpoint import read_json
    from pixlm.pipelines.common import component_finder

    return component_finder(folder, read_json(folder / "model_index.json"))("vq")


def finetune(work: Path, init: Path, threads: int = 0, stop_at: int = 0, weights: Path | None = None,
             **overrides: object) -> Path:
    """Fine-tune the generator of the model folder ``init`` (its ``vq`` encodes the pool) on the ``FINETUNE``
    settings updated by ``overrides``; resumable. ``weights`` (from ``export_weights``) starts a run without
    checkpoints at that step instead of at step 0. Returns the run's pipeline folder (written at the end)."""
    import json

    from pixlm.models.masked import MaskedTransformer
    from pixlm.train.generator import GeneratorTrainConfig, train_generator

    if threads:
        torch.set_num_threads(threads)
    unknown = set(overrides) - set(FINETUNE)
    if unknown:
        raise ValueError(f"unknown fine-tune settings {sorted(unknown)}; allowed: {sorted(FINETUNE)}")
    gen = MaskedTransformer.from_pretrained(init / "generator")
    c = gen.config
    cfg = GeneratorTrainConfig(out=str(work / "generator"), tokenizer=str(model_vq(init)), dim=c.dim, layers=c.layers,
                               heads=c.heads, conditioning=c.conditioning, resume=True, stop_at=stop_at,
                               **{**FINETUNE, **overrides})  # type: ignore[arg-type]
    if weights is not None:
        step = json.loads((weights / "state.json").read_text())["step"]
        start_from(Path(cfg.out), MaskedTransformer.from_pretrained(weights / "model"), cfg.weight_decay, cfg.seed,
                   step, MaskedTransformer.from_pretrained(weights / "raw"))
    else:
        start_from(Path(cfg.out), gen, cfg.weight_decay, cfg.seed)
    return train_generator(cfg)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/bundle")
    ap.add_argument("--out", default=None, help="where the assembled model goes (default: the shipped folder; "
                    "with --finetune-from: WORK/shapes-masked)")
    ap.add_argument("--tokenizer-steps", type=int, default=1000)
    ap.add_argument("--decoder-steps", type=int, default=1500)
    ap.add_argument("--decoder-checkpoint", type=int, default=0, help="use this step's checkpoint of the decoder "
                    "fine-tune instead of its end (0 = the end)")
    ap.add_argument("--generator-steps", default="5000,15000:6250,13000,21000:13750,21000:15000,21000",
                    help="generator phases STEPS[:STOP],...: each resumes the last on a new cosine schedule")
    ap.add_argument("--pool", type=int, default=40_000)
    ap.add_argument("--loose-pool", type=int, default=20_000, help="informal prompts added to the pool (0 = none)")
    ap.add_argument("--loose-from", type=int, default=13_750, help="phases starting at or after this step use them")
    ap.add_argument("--relation-pool", type=int, default=10_000, help="group-relation scenes added (0 = none)")
    ap.add_argument("--relation-from", type=int, default=15_000, help="phases starting at or after this step use them")
    ap.add_argument("--finetune-from", default="", help="fine-tune this model folder's generator instead of training "
                    "stages 1-3 (see the module docstring)")
    ap.add_argument("--finetune-steps", type=int, default=FINETUNE["steps"], help="length of the cosine schedule")
    ap.add_argument("--finetune-stop", type=int, default=0, help="stop after this step (0 = the schedule's end)")
    ap.add_argument("--finetune-lr", type=float, default=FINETUNE["lr"])
    ap.add_argument("--phrase-pool", type=int, default=FINETUNE["phrase_pool"],
                    help="fine-tune: weak-category pairs in varied wording (pixlm.data.phrasing)")
    ap.add_argument("--ckpt-every", type=int, default=FINETUNE["ckpt_every"], help="fine-tune: checkpoint interval")
    ap.add_argument("--eval-every", type=int, default=FINETUNE["eval_every"], help="fine-tune: quick-accuracy interval")
    ap.add_argument("--resume-weights", default="", help="fine-tune: start a run without checkpoints from these "
                    "exported weights (--export-weights) at their step")
    ap.add_argument("--export-weights", default="", help="copy the fine-tune's newest checkpoint weights to this "
                    "folder and exit")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = every core)")
    a = ap.parse_args(argv)
    from pixlm.train.generator import parse_phases

    torch.set_num_threads(a.threads or os.cpu_count() or 1)
    if a.export_weights:
        print(export_weights(Path(a.work) / "generator", Path(a.export_weights)))
        return
    if a.finetune_from:
        given = {k: getattr(a, k) for k in ("pool", "loose_pool", "relation_pool")
                 if getattr(a, k) != ap.get_default(k)}  # the full recipe's pool defaults are not the fine-tune's
        work, init = Path(a.work), Path(a.finetune_from)
        gen = finetune(work, init, a.threads, a.finetune_stop, Path(a.resume_weights) if a.resume_weights else None,
                       steps=a.finetune_steps, lr=a.finetune_lr,
                       phrase_pool=a.phrase_pool, ckpt_every=a.ckpt_every, eval_every=a.eval_every, **given)
        if not a.finetune_stop or a.finetune_stop >= a.finetune_steps:
            print(assemble(gen, model_vq(init), Path(a.out) if a.out else work / "shapes-masked"))
        return
    a.out = a.out or str(Path(__file__).resolve().parents[1] / "assets" / "shapes-masked")
    work = Path(a.work)
    tok = _tokenizer(work, a.tokenizer_steps)
    if a.decoder_checkpoint:
        dec = work / "decoder" / "checkpoints" / f"step-{a.decoder_checkpoint:07d}" / "model"
        if not dec.is_dir():
            _decoder_until(work, tok, a.decoder_steps, a.decoder_checkpoint)
    else:
        dec = _decoder(work, tok, a.decoder_steps)
    gen = _generator(work, tok, parse_phases(a.generator_steps), a.pool, a.loose_pool, a.loose_from,
                     a.relation_pool, a.relation_from)
    print(assemble(gen, dec, Path(a.out)))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
