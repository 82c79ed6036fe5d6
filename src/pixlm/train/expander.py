"""Train the built-in prompt expander (``models/expander_lm.py``) on (loose prompt → canonical caption) pairs.

One command::

    python -m pixlm.train.expander --out runs/expander

Pairs are made on the fly by ``data/loose.py`` from random shapes scenes; the batch of step ``s`` is a pure
function of (seed, s), so ``--resume`` continues exactly. Every ``eval_every`` steps the model rewrites a held-out
set of loose prompts (a seed the training stream never uses) and the log records how many rewrites parse to
the intended scene. The finished model is written to ``OUT/model`` in float16 (what ships).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pixlm.checkpoint import write_json
from pixlm.data.loose import expansion_correct, loose_prompt_set, training_pair, vocabulary_words
from pixlm.models.expander_lm import ExpanderConfig, ExpanderLM, build_vocab, caption_loss
from pixlm.train.common import config_parser, step_rng
from pixlm.train.loop import TrainLoop, param_groups

DEV_SEED = 99_999_989  # held-out prompts for the training log (the benchmark uses loose.BENCHMARK_SEED)


@dataclass
class ExpanderTrainConfig:
    out: str = "runs/expander"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    dim: int = 128
    layers: int = 4
    heads: int = 4
    vague: float = 0.15  # share of pairs whose loose side is vague ("a few blue things")
    identity: float = 0.1  # share of pairs that are already canonical
    log_every: int = 25
    eval_every: int = 500
    eval_n: int = 200
    ckpt_every: int = 250
    resume: bool = False
    max_minutes: float = 0.0  # stop early (and still save the model) after this much wall time; 0 = no limit


def pair_batch(cfg: ExpanderTrainConfig, step: int) -> list[tuple[str, str]]:
    """The (loose, canonical) pairs of training step ``step``."""
    rng = step_rng(cfg.seed, step)
    return [training_pair(rng, cfg.vague, cfg.identity) for _ in range(cfg.batch_size)]


def dev_accuracy(model: ExpanderLM, rows: list[dict]) -> dict[str, float]:
    """Share of held-out loose prompts rewritten into a caption with the intended spec, and exact matches."""
    model.eval()
    outs: list[str] = []
    for i in range(0, len(rows), 64):
        outs += model.rewrite([r["prompt"] for r in rows[i:i + 64]])
    model.train()
    return {"dev_spec_acc": sum(expansion_correct(o, r["specs"]) for o, r in zip(outs, rows)) / len(rows),
            "dev_exact": sum(o == r["canonical"] for o, r in zip(outs, rows)) / len(rows)}


def train_expander(cfg: ExpanderTrainConfig) -> Path:
    """Run (or resume) training in ``pixlm.train.loop.TrainLoop``; returns the folder of the finished model."""
    for name in ("steps", "batch_size", "dim", "layers", "heads", "eval_n"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    loop = TrainLoop(cfg)
    model = ExpanderLM(ExpanderConfig(vocab=build_vocab(vocabulary_words()), dim=cfg.dim, layers=cfg.layers,
                                      heads=cfg.heads))
    # decay on every matrix, embeddings included (the split is part of the checkpoints' optimizer state)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, no_decay_names=()), lr=cfg.lr, betas=(0.9, 0.98))
    (model,) = loop.prepare({"model": model}, opt)
    raw: ExpanderLM = loop.unwrap("model")
    dev = loose_prompt_set(DEV_SEED, cfg.eval_n)

    def step_fn(step: int) -> dict:
        b = {k: v.to(loop.accelerator.device) for k, v in raw.packed_batch(pair_batch(cfg, step)).items()}
        loss = caption_loss(model(b["idx"], b["positions"], b["segments"]), b["targets"])
        loop.accelerator.backward(loss)
        return {"loss": loss.detach()}

    done = loop.fit(step_fn, clip_norm=1.0, evaluate=lambda done: dev_accuracy(raw, dev), eval_every=cfg.eval_every,
                    plot=("loss", "dev_spec_acc"), stop=loop.stop_when(cfg.max_minutes))

    def write() -> None:
        raw.eval().save_pretrained(loop.run / "model", dtype=torch.float16)
        write_json(loop.run / "model_info.json", {"steps_done": done, "params": raw.num_params(), **asdict(cfg)})

    loop.finish(write)
    return loop.run / "model"


def main(argv: list[str] | None = None) -> None:
    print(train_expander(ExpanderTrainConfig(**vars(config_parser(ExpanderTrainConfig, __doc__).parse_args(argv)))))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
