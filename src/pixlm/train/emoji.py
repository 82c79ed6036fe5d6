"""Build the emoji model in one command::

    python -m pixlm.train.emoji --work runs/emoji [--node-modules /path/to/node_modules]

Sequential stages, each resumable and skipped once finished: (1) the dataset (``pixlm data emoji``) in
``WORK/data``; (2) the FSQ tokenizer on the training pictures; (3) the masked generator on the training
captions (``GeneratorTrainConfig.data``); (4) the contrastive text–image scorer used by the evaluation
(``pixlm.eval.clip_score``, in ``WORK/clip_score/model``); (5) the captioner on the training pictures and
captions (``CaptionerTrainConfig.data``, in ``WORK/captioner/model``; the held-out splits' loss, BLEU-4 and
CIDEr are only logged, never trained on); (6) the pipeline, float16, in ``WORK/pipeline`` (``--out``) with the
captioner as ``captioner/``, and with ``--scorer-out`` a float16 copy of the scorer. Only the ``train`` split is
ever trained on. Evaluate with ``python benchmarks/emoji.py --model WORK/pipeline --data WORK/data --scorer
WORK/clip_score/model`` (add ``--captions`` for the captioner). The shipped model and scorer were written by
``--out src/pixlm/assets/emoji-masked --scorer-out src/pixlm/assets/emoji-clip``.

The defaults are the shipped model's run: tokenizer 300 steps; generator a 500-step schedule stopped at step 400,
then resumed on a 2000-step one up to step 1600; scorer 200 steps (what a shared 2-core CPU allowed); captioner
2000 steps with label smoothing 0.1 (7 minutes on one thread; longer schedules only lowered the held-out
scores). The captioner came after the rest; it was trained with the stage's settings and attached by::

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

import argparse
import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pixlm.data.emoji import EmojiDataConfig, build_emoji_dataset, npm_sources


@dataclass
class EmojiRecipeConfig:
    work: str = "runs/emoji"
    out: str = ""  # assembled pipeline folder; empty = WORK/pipeline
    scorer_out: str = ""  # also write the scorer here in float16 (empty = only WORK/clip_score/model)
    node_modules: str = ""  # npm packages openmoji / emoji-datasource-google (names, tags, sequences)
    seed: int = 0
    tokenizer_steps: int = 300
    tokenizer_batch: int = 24
    generator_phases: str = "500:400,2000:1600"  # STEPS[:STOP],...: cosine schedules, each resuming the last
    generator_batch: int = 64
    generator_dim: int = 192
    generator_layers: int = 4
    scorer_steps: int = 200
    captioner_steps: int = 2000
    captioner_dim: int = 128  # with ~2300 caption words this is ~1.4M parameters, 2.7 MB in float16
    threads: int = 0  # torch threads; 0 = every core


def load_pictures(folder: str | Path) -> torch.Tensor:
    """Each distinct picture of an imagefolder once: (P, 3, H, W) in [-1, 1]."""
    from pixlm.data.folder import ImageFolder

    ds = ImageFolder(folder)
    return torch.stack([ds[rows[0]]["image"] for rows in ds.pictures()])


@contextlib.contextmanager
def tokenizer_on_pictures(pictures: torch.Tensor) -> Iterator[None]:
    """Make ``pixlm.train.tokenizer`` draw its batches from ``pictures`` instead of shapes scenes."""
    import pixlm.train.tokenizer as tokenizer

    def batch(seed: int, step: int, batch_size: int, size: int = 64) -> tuple[torch.Tensor, list, list]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = pictures[torch.randint(0, len(pictures), (batch_size,), generator=gen)]
        flip = torch.rand(batch_size, generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        return x, [], []

    original = tokenizer.shapes_batch
    tokenizer.shapes_batch = batch
    try:
        yield
    finally:
        tokenizer.shapes_batch = original


def stage_data(cfg: EmojiRecipeConfig) -> Path:
    data = Path(cfg.work) / "data"
    if not (data / "splits.json").is_file():
        sources = ("noto", *npm_sources(cfg.node_modules or None))
        summary = build_emoji_dataset(EmojiDataConfig(out=str(data), sources=sources, node_modules=cfg.node_modules,
                                                      seed=cfg.seed))
        print(f"dataset: {summary['counts']} from {sources}", flush=True)
    return data


def stage_tokenizer(cfg: EmojiRecipeConfig, data: Path) -> Path:
    from pixlm.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    out = Path(cfg.work) / "tokenizer"
    if not (out / "model" / ".complete").exists():
        with tokenizer_on_pictures(load_pictures(data / "train")):
            train_tokenizer(TokenizerTrainConfig(out=str(out), steps=cfg.tokenizer_steps,
                                                 batch_size=cfg.tokenizer_batch, seed=cfg.seed, ckpt_every=100,
                                                 resume=True))
    return out / "model"


def stage_generator(cfg: EmojiRecipeConfig, data: Path, tokenizer: Path) -> Path:
    from pixlm.train.generator import GeneratorTrainConfig, parse_phases, train_phases

    phases = parse_phases(cfg.generator_phases)
    # eval_every past the end: the trainer's built-in quick check draws shapes prompts, meaningless here; it runs
    # once at the end of each phase. The emoji evaluation is benchmarks/emoji.py.
    return train_phases(GeneratorTrainConfig(out=str(Path(cfg.work) / "generator"), tokenizer=str(tokenizer),
                                             data=str(data / "train"), batch_size=cfg.generator_batch,
                                             dim=cfg.generator_dim, layers=cfg.generator_layers, seed=cfg.seed,
                                             eval_every=max(s for s, _ in phases) + 1, ckpt_every=200), phases)


def stage_scorer(cfg: EmojiRecipeConfig, data: Path) -> Path:
    from pixlm.eval.clip_score import ScorerTrainConfig, train_scorer

    out = Path(cfg.work) / "clip_score"
    if not (out / "model" / ".complete").exists():
        train_scorer(ScorerTrainConfig(data=str(data / "train"), out=str(out), steps=cfg.scorer_steps, seed=cfg.seed))
    return out / "model"


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


def assemble(generator_pipeline: Path, data: Path, out: Path) -> Path:
    """The trained pipeline in float16 with the data's licence and attribution files."""
    from pixlm.checkpoint import atomic_write_dir, write_json
    from pixlm.pipelines.text_to_image import TextToImagePipeline

    pipe = TextToImagePipeline.from_pretrained(generator_pipeline)
    pipe.defaults.update(SAMPLING_DEFAULTS)

    def write(tmp: Path) -> None:
        pipe.vq.save_pretrained(tmp / "vq", dtype=torch.float16)
        pipe.text_encoder.save_pretrained(tmp / "text_encoder")
        pipe.generator.save_pretrained(tmp / "generator", dtype=torch.float16)
        write_json(tmp / "model_index.json", {"pipeline": "TextToImagePipeline", "generator": pipe.generator.kind,
                                              "defaults": pipe.defaults})
        for f in ("ATTRIBUTION.md", "LICENSE-noto-color-emoji.txt", "LICENSE-openmoji.txt",
                  "LICENSE-emoji-datasource.txt"):  # the model is derived from this data: keep its notices
            src = data / f
            if src.is_file():
                shutil.copyfile(src, tmp / f)

    return atomic_write_dir(out, write)


def run_recipe(cfg: EmojiRecipeConfig) -> Path:
    from pixlm.train.captioner import attach_captioner

    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    data = stage_data(cfg)
    tok = stage_tokenizer(cfg, data)
    gen = stage_generator(cfg, data, tok)
    scorer = stage_scorer(cfg, data)
    captioner = stage_captioner(cfg, data, tok)
    if cfg.scorer_out:
        from pixlm.eval.clip_score import ContrastiveScorer

        ContrastiveScorer.from_pretrained(scorer).save_pretrained(cfg.scorer_out, dtype=torch.float16)
    out = assemble(gen, data, Path(cfg.out or Path(cfg.work) / "pipeline"))
    attach_captioner(captioner, out)  # float16; refuses a captioner of another tokenizer
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in EmojiRecipeConfig.__dataclass_fields__.values():
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    print(run_recipe(EmojiRecipeConfig(**vars(ap.parse_args(argv)))))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
