"""Build the emoji model in one command::

    python -m pixlm.train.emoji --work runs/emoji [--node-modules /path/to/node_modules]

Sequential stages, each resumable and skipped once finished: (1) the dataset (``pixlm data emoji``: four styles,
from the npm packages under ``--node-modules``) in ``WORK/data``; (2) the FSQ tokenizer on the training pictures
(``--stop-after tokenizer`` ends the recipe there; rerun the same command to resume it); (2b) its decoder
alone, fine-tuned on the same tokens (``WORK/decoder``; it does not change the tokens, so it may run beside the
generator: ``--stop-after decoder`` in a second process); (3) the masked generator on the training captions
(``GeneratorTrainConfig.data``); (4) the contrastive text–image scorer used by the evaluation
(``pixlm.eval.clip_score``, in ``WORK/clip_score/model``); (5) the captioner on the training pictures and captions
(``CaptionerTrainConfig.data``, in ``WORK/captioner/model``; the held-out splits' loss, BLEU-4 and CIDEr are only
logged, never trained on); (6) the pipeline, float16, drawing with the fine-tuned decoder, in ``WORK/pipeline``
(``--out``) with the captioner as ``captioner/`` and a retrieval index of the training pictures as ``retrieval/``
(``pixlm.train.retrieval``; ``--no-retrieval`` leaves it out), and with ``--scorer-out`` a float16 copy of the
scorer with the data's licences (``--stop-after scorer --scorer-out DIR`` writes it and stops). Only the
``train`` split is ever trained on. Evaluate with ``python benchmarks/emoji.py --model WORK/pipeline --data
WORK/data --scorer WORK/clip_score/model`` (add ``--captions`` for the captioner). The shipped model and scorer
were written by ``--out src/pixlm/assets/emoji-masked --scorer-out src/pixlm/assets/emoji-clip``.

The tokenizer of the multi-style world (issue 23) uses a 16×16 token grid (three channel entries: 64, 32 and 16
px) with FSQ levels (8, 5, 5, 5) = 1000 codes: 256 tokens of 10 bits. The earlier 8×8 grid with 4375 codes (64
tokens of 12.1 bits, 256 channels at 8 px) stalled near 19-22 dB on held-out emoji after 3300 steps, far from the
26 dB asked, and the generator's cost on 4× the tokens is what the speed budget pays for it. It trains under bf16
autocast (the CPU's native bf16 halves the step time; FSQ rounds in float32). ``tokenizer_report`` measures the
round trip per style on the held-out emoji with codebook usage (``--report-tokenizer CHECKPOINT``).

The generator of the 16×16 tokenizer trains under bf16 autocast on batches of 32 (a 3000-step schedule, then a
warm restart on a 20,000-step one, run across sessions: ``--generator-phases 3000,20000:8000`` stops a session at
step 8,000, and ``--export-weights``/``--weights-from`` carry the run to another machine; the 8×8 model had a
500-step schedule stopped at step 400, then a 2000-step one up to step 1600, at batch 64). The defaults of the
other stages are the shipped model's run: scorer 3,000 steps (11 minutes on two quiet threads; the first 4-style
scorer had 200, which found a held-out emoji's real picture in the top 5 only 15% of the time); captioner 2000
steps with label smoothing 0.1 (7 minutes on one thread; longer schedules only lowered the held-out scores). The
captioner came after the rest; it was trained with the stage's settings and attached by::

    python -m pixlm.train.captioner --out runs/emoji/captioner --tokenizer runs/emoji/tokenizer/model \
        --data runs/emoji/data/train --eval-data runs/emoji/data/test_variant,runs/emoji/data/test_emoji \
        --steps 2000 --dim 128 --encoder-layers 1 --decoder-layers 2 --max-length 24 --vocab-min-count 2 \
        --label-smoothing 0.1 --eval-every 250 --ckpt-every 250 --log-every 50 --eval-n 300
    python -m pixlm.train.captioner --attach-only runs/emoji/captioner/model --attach src/pixlm/assets/emoji-masked

(``python -m pixlm.train.emoji --work runs/emoji --threads 1`` does the same: it skips the finished stages, trains
the captioner and attaches it to a freshly assembled ``WORK/pipeline``.)

The tokenizer trainer draws shapes scenes; here its batch function is pointed at the emoji pictures for the
duration of stage 2 (random pictures, mirrored half of the time; batches a function of (seed, step) as before).
The captioner's pictures are never mirrored: captions such as "facing right" would turn false.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pixlm.data.emoji import EmojiDataConfig, build_emoji_dataset, npm_sources

if TYPE_CHECKING:
    from pixlm.pipelines.text_to_image import TextToImagePipeline

STAGES = ("data", "tokenizer", "decoder", "generator", "scorer", "captioner", "pipeline")


@dataclass
class EmojiRecipeConfig:
    work: str = "runs/emoji"
    out: str = ""  # assembled pipeline folder; empty = WORK/pipeline
    scorer_out: str = ""  # also write the scorer here in float16 (empty = only WORK/clip_score/model)
    node_modules: str = "node_modules"  # the npm emoji sets and name data (`pixlm data emoji --help`)
    stop_after: str = "pipeline"  # one of STAGES: end the recipe after this stage
    seed: int = 0
    tokenizer_steps: int = 16000  # length of the cosine schedule; --tokenizer-stop-at ends a session earlier
    tokenizer_stop_at: int = 0
    tokenizer_batch: int = 16
    tokenizer_lr: float = 1e-3
    tokenizer_levels: str = "8,5,5,5"  # FSQ levels: 1000 codes
    tokenizer_channels: str = "32,64,128"  # encoder/decoder channels at 64, 32 and 16 px: a 16x16 token grid
    tokenizer_res_blocks: int = 1
    tokenizer_mixed_precision: str = "bf16"  # "no" trains in float32 (about twice as slow on a bf16 CPU)
    tokenizer_ckpt_every: int = 100  # 5-15 minutes on one nice'd thread of a shared 2-core CPU
    tokenizer_init_from: str = ""  # a tokenizer folder to start from when WORK has no checkpoint (committed weights)
    weights_from: str = ""  # committed weights (``--export-weights``) to continue from on a machine without WORK
    decoder_steps: int = 3000  # the tokenizer's decoder alone, fine-tuned on (fixed) tokens; 0 = skip
    decoder_lr: float = 3e-4
    generator_phases: str = "3000,20000"  # STEPS[:STOP],...: cosine schedules, each resuming the last
    generator_batch: int = 32  # 256 tokens a picture: 1.3 s a step in bf16 on one thread (64: 2.7 s)
    generator_mixed_precision: str = "bf16"
    generator_dim: int = 192
    generator_layers: int = 4
    scorer_steps: int = 3000
    captioner_steps: int = 2000
    captioner_dim: int = 128  # with ~2300 caption words this is ~1.4M parameters, 2.7 MB in float16
    retrieval: bool = True  # the pipeline stage also writes a retrieval index of the training pictures
    threads: int = 0  # torch threads; 0 = every core


def load_pictures(folder: str | Path) -> torch.Tensor:
    """Each distinct picture of an imagefolder once: (P, 3, H, W) uint8 (13k emoji: 160 MB, a quarter of float)."""
    import numpy as np

    from pixlm.data.folder import ImageFolder

    ds = ImageFolder(folder)
    arr = np.stack([np.asarray(ds.load_image(rows[0])) for rows in ds.pictures()])  # (P, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2)


@contextlib.contextmanager
def tokenizer_on_pictures(pictures: torch.Tensor) -> Iterator[list[tuple[int, int]]]:
    """Make ``pixlm.train.tokenizer`` draw its batches from ``pictures`` (uint8) instead of shapes scenes.

    Yields the list of (seed, step) batches drawn, so a caller can check the trainer really drew them here. Its
    held-out check (``shapes_batch(seed + 10000, 0, 64)``) then also draws training pictures: its ``val_psnr`` is on
    64 training emoji; ``tokenizer_report`` measures the held-out splits."""
    import pixlm.train.tokenizer as tokenizer

    drawn: list[tuple[int, int]] = []

    def batch(seed: int, step: int, batch_size: int, size: int = 64) -> tuple[torch.Tensor, list, list]:
        drawn.append((seed, step))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = pictures[torch.randint(0, len(pictures), (batch_size,), generator=gen)].float().div(127.5).sub(1.0)
        flip = torch.rand(batch_size, generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        return x, [], []

    original = tokenizer.shapes_batch
    tokenizer.shapes_batch = batch
    try:
        yield drawn
    finally:
        tokenizer.shapes_batch = original


def stage_data(cfg: EmojiRecipeConfig) -> Path:
    data = Path(cfg.work) / "data"
    if not (data / "splits.json").is_file():
        names = npm_sources(cfg.node_modules)
        summary = build_emoji_dataset(EmojiDataConfig(out=str(data), node_modules=cfg.node_modules,
                                                      name_sources=names, seed=cfg.seed))
        print(f"dataset: {summary['counts']} emoji, pictures {summary['pictures']}; names from {names}", flush=True)
    return data


def stage_tokenizer(cfg: EmojiRecipeConfig, data: Path) -> Path:
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    out = Path(cfg.work) / "tokenizer"
    if not (out / "model" / ".complete").exists():
        with tokenizer_on_pictures(load_pictures(data / "train")) as drawn:
            train_tokenizer(TokenizerTrainConfig(
                out=str(out), steps=cfg.tokenizer_steps, stop_at=cfg.tokenizer_stop_at, batch_size=cfg.tokenizer_batch,
                lr=cfg.tokenizer_lr, seed=cfg.seed, ckpt_every=cfg.tokenizer_ckpt_every, resume=True,
                levels=_ints(cfg.tokenizer_levels), channels=_ints(cfg.tokenizer_channels),
                res_blocks=cfg.tokenizer_res_blocks, mixed_precision=cfg.tokenizer_mixed_precision,
                init_from=cfg.tokenizer_init_from))
        if not any(seed == cfg.seed for seed, _ in drawn):
            raise RuntimeError("pixlm.train.tokenizer no longer draws its batches through shapes_batch, so the emoji "
                               "pictures were not used: update tokenizer_on_pictures")
    return out / "model"


def stage_decoder(cfg: EmojiRecipeConfig, data: Path, tokenizer: Path) -> Path:
    """Fine-tune the tokenizer's decoder alone (``freeze_encoder``): the tokens stay those the generator trains
    on, the pictures come back sharper. Returns the tokenizer itself when ``decoder_steps`` is 0."""
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    if not cfg.decoder_steps:
        return tokenizer
    out = Path(cfg.work) / "decoder"
    if not (out / "model" / ".complete").exists():
        with tokenizer_on_pictures(load_pictures(data / "train")):
            train_tokenizer(TokenizerTrainConfig(
                out=str(out), steps=cfg.decoder_steps, batch_size=cfg.tokenizer_batch, lr=cfg.decoder_lr, warmup=50,
                seed=cfg.seed + 1, ckpt_every=cfg.tokenizer_ckpt_every, resume=True, init_from=str(tokenizer),
                freeze_encoder=True, mixed_precision=cfg.tokenizer_mixed_precision))
    return out / "model"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} must be comma-separated integers, e.g. 7,5,5,5,5") from None


def tokenizer_report(model: str | Path, data: str | Path, splits: tuple[str, ...] = ("test_emoji", "test_variant"),
                     batch: int = 256, sheet: str | Path | None = None) -> dict[str, dict]:
    """Round trip of a tokenizer (a model folder or a training checkpoint's ``model``) on the pictures of each
    split, per style: PSNR (dB, over all pixels of the style's pictures), pictures, and the share of the codebook
    its tokens use; ``"codebook_usage"``: the share over all of them. ``sheet``: a PNG of the first 12 pictures of
    each split and style, originals above their round trips."""
    import numpy as np

    from pixlm.data.folder import ImageFolder
    from pixlm.models.vq import VQModel
    from pixlm.train.common import psnr, save_grid, tensor_to_uint8

    vq = VQModel.from_pretrained(model).eval()
    report: dict[str, dict] = {}
    used = torch.zeros(vq.vocab_size, dtype=torch.bool)
    grid: list[np.ndarray] = []  # (N, H, W, 3) blocks of the sheet
    for split in splits:
        ds = ImageFolder(Path(data) / split)
        by_style: dict[str, list[torch.Tensor]] = {}
        for rows in ds.pictures():  # files are STYLE/HEXCODE.png
            by_style.setdefault(Path(ds.rows[rows[0]].file_name).parent.name, []).append(ds[rows[0]]["image"])
        report[split] = {}
        for style, pictures in sorted(by_style.items()):
            x = torch.stack(pictures)
            with torch.no_grad():
                tokens = torch.cat([vq.encode(x[i:i + batch]) for i in range(0, len(x), batch)])
                recon = torch.cat([vq.decode(tokens[i:i + batch]) for i in range(0, len(x), batch)])
            style_used = torch.zeros(vq.vocab_size, dtype=torch.bool)
            style_used[tokens.flatten()] = True
            used |= style_used
            report[split][style] = {"psnr": round(psnr(recon, x), 2), "pictures": len(x),
                                    "codebook_usage": round(float(style_used.float().mean()), 4)}
            for block in (tensor_to_uint8(x[:12]), tensor_to_uint8(recon[:12])):  # one row each, white-padded
                grid += [block, np.full((12 - len(block), *block.shape[1:]), 255, dtype=np.uint8)]
    report["codebook_usage"] = round(float(used.float().mean()), 4)
    if sheet:
        save_grid(np.concatenate(grid), Path(sheet), cols=12)
    return report


def stage_generator(cfg: EmojiRecipeConfig, data: Path, tokenizer: Path) -> Path:
    from pixlm.train.generator import GeneratorTrainConfig, parse_phases, train_phases

    phases = parse_phases(cfg.generator_phases)
    # eval_every past the end: the trainer's built-in quick check draws shapes prompts, meaningless here; it runs
    # once at the end of each phase. The emoji evaluation is benchmarks/emoji.py.
    return train_phases(GeneratorTrainConfig(out=str(Path(cfg.work) / "generator"), tokenizer=str(tokenizer),
                                             data=str(data / "train"), batch_size=cfg.generator_batch,
                                             dim=cfg.generator_dim, layers=cfg.generator_layers, seed=cfg.seed,
                                             mixed_precision=cfg.generator_mixed_precision,
                                             eval_every=max(s for s, _ in phases) + 1, ckpt_every=200), phases)


def stage_scorer(cfg: EmojiRecipeConfig, data: Path) -> Path:
    from pixlm.train.clip_score import ScorerTrainConfig, train_scorer

    out = Path(cfg.work) / "clip_score"
    if not (out / "model" / ".complete").exists():
        train_scorer(ScorerTrainConfig(data=str(data / "train"), out=str(out), steps=cfg.scorer_steps, seed=cfg.seed))
    return out / "model"


def export_scorer(scorer: Path, data: Path, out: Path) -> Path:
    """A float16 copy of the trained scorer in ``out`` with the dataset's attribution and licence files (it is
    derived from that art, as the model is)."""
    from pixlm.checkpoint import atomic_write_dir, save_module
    from pixlm.eval.clip_score import ContrastiveScorer

    model = ContrastiveScorer.from_pretrained(scorer)

    def write(tmp: Path) -> None:
        save_module(model, model.config, tmp, model.kind, torch.float16)
        copy_notices(data, tmp)

    return atomic_write_dir(out, write)


def copy_notices(data: Path, folder: Path) -> None:
    """The dataset's ATTRIBUTION.md and LICENSE files into ``folder``: what is derived from that art keeps them."""
    for src in [data / "ATTRIBUTION.md", *sorted(data.glob("LICENSE-*.txt"))]:
        shutil.copyfile(src, folder / src.name)


def stage_captioner(cfg: EmojiRecipeConfig, data: Path, tokenizer: Path) -> Path:
    from pixlm.train.captioner import CaptionerTrainConfig, train_captioner

    out = Path(cfg.work) / "captioner"
    if not (out / "model" / ".complete").exists():
        # words seen once (rare names) map to <unk>: 30% fewer words, a smaller embedding and head, for ~1% of text
        train_captioner(CaptionerTrainConfig(
            out=str(out), tokenizer=str(tokenizer), data=str(data / "train"),
            eval_data=f"{data / 'test_variant'},{data / 'test_emoji'}", vocab_min_count=2, steps=cfg.captioner_steps,
            batch_size=64, lr=2e-3, label_smoothing=0.1, dim=cfg.captioner_dim, encoder_layers=1, decoder_layers=2,
            heads=4, max_length=24, eval_every=250, ckpt_every=250, log_every=50, eval_n=300, seed=cfg.seed,
            resume=True))
    return out / "model"


# Sampling defaults of the emoji model, the best CLIP-score on 192 TRAINING names (`python benchmarks/emoji.py --data
# runs/emoji/data --sweep --sweep-only --sweep-n 192`: 58.1 against 56.3 for the earlier 12 steps / guidance 3 /
# temperature 1; choice temperature and re-masking made no difference there; benchmarks/results/emoji_sweep.json).
SAMPLING_DEFAULTS = {"num_inference_steps": 8, "guidance_scale": 1.5, "temperature": 0.5, "choice_temperature": 4.5}
# Retrieval (pixlm.pipelines.retrieval): keep 70% of a retrieved training picture's tokens and redraw the rest;
# the nearest 8 by meaning, near-ties (styles, variants) drawn about equally. Chosen on training names (seeds 0/1 of
# `pixlm eval --emoji-data`: keep 0.5 / temperature 0.03 gave top-5 0.77 over 4 styles, 0.7 / 0.02 gave 0.85, with
# cleaner pictures). On a fresh draw (seeds 7/8) 41 of noto's 43 misses were skin tones retrieved wrong (the
# sentence embedding hears "light" and "medium-light" alike), hence the word-overlap term (lexical 0.3), then
# checked on another fresh draw (README).
RETRIEVAL_SETTINGS = {"top_k": 8, "temperature": 0.02, "keep": 0.7, "lexical": 0.3}


def checkpoint_pipeline(work: Path) -> TextToImagePipeline:
    """The pipeline of the generator stage's newest checkpoint (EMA weights), its tokenizer and MiniLM: to measure
    a run that has not finished (``--assemble-checkpoint``)."""
    from pixlm.models.masked import MaskedTransformer
    from pixlm.models.vq import VQModel
    from pixlm.pipelines.text_to_image import TextToImagePipeline
    from pixlm.train.common import complete_checkpoints, load_text_encoder

    ckpts = complete_checkpoints(work / "generator")
    if not ckpts:
        raise FileNotFoundError(f"{work / 'generator'} has no complete checkpoint yet")
    return TextToImagePipeline(VQModel.from_pretrained(work / "tokenizer" / "model"), load_text_encoder("minilm"),
                               MaskedTransformer.from_pretrained(ckpts[-1] / "model"))


def assemble(generator_pipeline: Path | TextToImagePipeline, data: Path, out: Path,
             decoder: Path | None = None) -> Path:
    """The trained pipeline (a folder or a pipeline) in float16 with the data's licence and attribution files;
    ``decoder``: a decoder fine-tune of the generator's tokenizer (:func:`stage_decoder`) to draw the pictures with."""
    from pixlm.checkpoint import atomic_write_dir, write_json
    from pixlm.models.vq import VQModel
    from pixlm.pipelines.text_to_image import TextToImagePipeline

    pipe = generator_pipeline if isinstance(generator_pipeline, TextToImagePipeline) else \
        TextToImagePipeline.from_pretrained(generator_pipeline)
    if decoder is not None:
        pipe.vq = pipe.vq.with_decoder_of(VQModel.from_pretrained(decoder)).eval()
    pipe.defaults.update(SAMPLING_DEFAULTS)

    def write(tmp: Path) -> None:
        pipe.vq.save_pretrained(tmp / "vq", dtype=torch.float16)
        pipe.text_encoder.save_pretrained(tmp / "text_encoder")
        pipe.generator.save_pretrained(tmp / "generator", dtype=torch.float16)
        write_json(tmp / "model_index.json", {"pipeline": "TextToImagePipeline", "generator": pipe.generator.kind,
                                              "defaults": pipe.defaults})
        copy_notices(data, tmp)

    return atomic_write_dir(out, write)


WEIGHT_PARTS = ("tokenizer", "decoder", "generator")


def export_weights(work: Path, dest: Path) -> Path:
    """What a later session needs to continue without ``work``: the finished tokenizer (float32: it encodes the
    generator's pool, so its tokens must not move) and decoder (float16), and the generator's newest checkpoint
    (``bundle.export_weights``: EMA weights float32, raw weights float16, its step; no optimizer). ``work/data`` is
    rebuilt from the npm packages byte for byte."""
    from pixlm.models.masked import MaskedTransformer
    from pixlm.models.vq import VQModel
    from pixlm.train.bundle import export_weights as export_generator
    from pixlm.train.common import complete_checkpoints

    dest.mkdir(parents=True, exist_ok=True)
    for part, dtype in (("tokenizer", None), ("decoder", torch.float16)):
        model = work / part / "model"
        if (model / ".complete").exists():
            VQModel.from_pretrained(model).save_pretrained(dest / part, dtype=dtype)
    if complete_checkpoints(work / "generator"):
        export_generator(work / "generator", dest / "generator")
        raw = dest / "generator" / "raw"
        MaskedTransformer.from_pretrained(raw).save_pretrained(raw, dtype=torch.float16)
    return dest


def import_weights(source: Path, work: Path, weight_decay: float, seed: int) -> list[str]:
    """Put weights written by :func:`export_weights` into an empty ``work``: finished stages as finished (float32)
    model folders, the generator as a checkpoint at its step (a fresh optimizer) that the generator stage resumes.
    Parts ``work`` already has are left alone; returns the parts imported."""
    from pixlm.models.masked import MaskedTransformer
    from pixlm.models.vq import VQModel
    from pixlm.train.bundle import start_from

    if not any((source / part).is_dir() for part in WEIGHT_PARTS):
        raise FileNotFoundError(f"weights_from={str(source)!r} holds none of {WEIGHT_PARTS}")
    done = []
    for part in ("tokenizer", "decoder"):
        target = work / part / "model"
        if (source / part).is_dir() and not (target / ".complete").exists():
            VQModel.from_pretrained(source / part).float().save_pretrained(target)
            done.append(part)
    if (source / "generator").is_dir():
        step = json.loads((source / "generator" / "state.json").read_text())["step"]
        raw = MaskedTransformer.from_pretrained(source / "generator" / "raw").float()
        if start_from(work / "generator", MaskedTransformer.from_pretrained(source / "generator" / "model"),
                      weight_decay, seed, step, raw):
            done.append(f"generator (step {step})")
    return done


def run_recipe(cfg: EmojiRecipeConfig) -> Path:
    from pixlm.train.captioner import attach_captioner
    from pixlm.train.retrieval import attach_index

    if cfg.stop_after not in STAGES:
        raise ValueError(f"stop_after={cfg.stop_after!r} must be one of {STAGES}")
    _ints(cfg.tokenizer_levels), _ints(cfg.tokenizer_channels)  # bad values fail here, not after the data stage
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    data = stage_data(cfg)
    if cfg.weights_from:
        from pixlm.train.generator import GeneratorTrainConfig

        parts = import_weights(Path(cfg.weights_from), Path(cfg.work), GeneratorTrainConfig.weight_decay, cfg.seed)
        print(f"from {cfg.weights_from}: {', '.join(parts) or 'nothing new (WORK has them)'}", flush=True)
    if cfg.stop_after == "data":
        return data
    tok = stage_tokenizer(cfg, data)
    if cfg.stop_after == "tokenizer":
        return tok
    dec = stage_decoder(cfg, data, tok)
    if cfg.stop_after == "decoder":
        return dec
    gen = stage_generator(cfg, data, tok)
    if cfg.stop_after == "generator":
        return gen
    scorer = stage_scorer(cfg, data)
    if cfg.scorer_out:
        export_scorer(scorer, data, Path(cfg.scorer_out))
    if cfg.stop_after == "scorer":
        return scorer
    captioner = stage_captioner(cfg, data, tok)
    if cfg.stop_after == "captioner":
        return captioner
    # the newest checkpoint's EMA weights, not gen/pipeline: that folder is only written when a phase ends, so after
    # a run that was stopped between checkpoints and then skipped (its checkpoint already past the stop) it is stale
    out = assemble(checkpoint_pipeline(Path(cfg.work)), data, Path(cfg.out or Path(cfg.work) / "pipeline"),
                   None if dec == tok else dec)
    attach_captioner(captioner, out)  # float16; refuses a captioner of another tokenizer
    if cfg.retrieval:
        attach_index(out, data / "train", group_field="style", settings=RETRIEVAL_SETTINGS)
    return out


def main(argv: list[str] | None = None) -> None:
    from pixlm.train.common import config_parser

    ap = config_parser(EmojiRecipeConfig, __doc__)  # one flag per field; booleans as --flag/--no-flag
    ap.add_argument("--export-weights", default="", metavar="DIR",
                    help="only copy what a later session needs to continue (finished tokenizer and decoder, the "
                         "generator's newest checkpoint without optimizer) from WORK to DIR; continue elsewhere with "
                         "--weights-from DIR")
    ap.add_argument("--assemble-checkpoint", default="", metavar="DIR",
                    help="only write the pipeline of the generator's newest checkpoint (with the decoder fine-tune "
                         "when finished; no captioner) to DIR, to measure an unfinished run")
    ap.add_argument("--report-tokenizer", default="", metavar="MODEL",
                    help="only measure this tokenizer (a model folder or a checkpoint's model/) on WORK/data's "
                         "held-out emoji, per style, and print JSON")
    ap.add_argument("--report-sheet", default="", metavar="PNG",
                    help="with --report-tokenizer: also write originals above round trips, 12 per split and style")
    args = vars(ap.parse_args(argv))
    report, sheet, export = args.pop("report_tokenizer"), args.pop("report_sheet"), args.pop("export_weights")
    partial = args.pop("assemble_checkpoint")
    if partial:
        work = Path(args["work"])
        torch.set_num_threads(args["threads"] or 1)
        dec = work / "decoder" / "model"
        print(assemble(checkpoint_pipeline(work), work / "data", Path(partial),
                       dec if (dec / ".complete").exists() else None))
        return
    if export:
        print(export_weights(Path(args["work"]), Path(export)))
        return
    if report:
        torch.set_num_threads(args["threads"] or 1)
        print(json.dumps(tokenizer_report(report, Path(args["work"]) / "data", sheet=sheet or None), indent=1))
        return
    print(run_recipe(EmojiRecipeConfig(**args)))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
