"""Train the image-token captioner on pictures encoded by the frozen tokenizer, in ``pixlm.train.loop``.

Shapes scenes (the default): a pool of scenes is rendered and encoded once (cached in the run folder as
``pool.safetensors``); each step draws a batch from it and, per picture, a target: with probability
``detailed_fraction`` the canonical detailed caption (control token ``<detailed>``), otherwise a fresh varied
caption from ``shapes.caption`` (``<free>``).

An imagefolder (``data``, ``--data DIR``): each distinct picture is encoded once (cached the same way, its
captions in the cache's metadata) and the vocabulary is the training captions' words; each step draws pictures
and, per picture, one of its captions at random, always as a ``<free>`` caption (folder data has no detailed
ones). Pictures are not mirrored: captions such as "facing right" would turn false. ``eval_data`` names
held-out folders whose loss, BLEU-4 and CIDEr are logged next to a training sample's, to watch overfitting.

Batches are a pure function of (seed, step), so a resumed run sees what the interrupted one would have seen.

One command trains it and ships it inside a model folder (float16). The shipped captioner ran the 1500-step
schedule, then was resumed on 3000-, 6000- and 9000-step ones (warm restarts); this reproduces it::

    python -m pixlm.train.captioner --tokenizer runs/tokenizer/model --out runs/captioner && \\
    python -m pixlm.train.captioner --tokenizer runs/tokenizer/model --out runs/captioner --resume --steps 3000 && \\
    python -m pixlm.train.captioner --tokenizer runs/tokenizer/model --out runs/captioner --resume --steps 6000 && \\
    python -m pixlm.train.captioner --tokenizer runs/tokenizer/model --out runs/captioner --resume --steps 9000 \\
        --attach src/pixlm/assets/shapes-masked
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pixlm.checkpoint import CheckpointError
from pixlm.data.detailed import detailed_caption, parse_detailed, same_scene
from pixlm.data.shapes import (_PLURAL, _PREFIXES, _SYNONYMS, COLORS, NUMBER_WORDS, POSITIONS, RELATION_WORDS,
                               SHAPES, SIZES, Scene, caption, random_scene, render)
from pixlm.models.captioner import (PAD, Captioner, CaptionerConfig, build_vocab, caption_loss, pad_ids,
                                    tokenizer_fingerprint)
from pixlm.models.vq import VQModel
from pixlm.sampling.captioning import caption_tokens
from pixlm.train.common import config_parser, encode_in_batches, encode_scenes, save_tensors_atomic, step_rng
from pixlm.train.loop import TrainLoop, param_groups

MAX_OBJECTS = 4


@dataclass
class CaptionerTrainConfig:
    out: str = "runs/captioner"
    tokenizer: str = "runs/tokenizer/model"
    data: str = ""  # an imagefolder (metadata.jsonl) to train on; empty = shapes scenes
    eval_data: str = ""  # folder data: comma-separated held-out imagefolders scored at every eval
    vocab_min_count: int = 1  # folder data: rarer caption words map to <unk> (a smaller embedding and head)
    pool: int = 12_000  # shapes scenes rendered and encoded once
    vocab_scenes: int = 20_000  # scenes whose captions make up the vocabulary (plus every canonical/synonym word)
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.05
    detailed_fraction: float = 0.7  # shapes only; folder data has free captions only
    label_smoothing: float = 0.0
    ema: float = 0.998
    seed: int = 0
    dim: int = 128
    encoder_layers: int = 1
    decoder_layers: int = 3
    heads: int = 4
    max_length: int = 48
    log_every: int = 25
    eval_every: int = 300
    eval_n: int = 200  # held-out scenes for the detailed accuracy (shapes), or training pictures scored (folder)
    ckpt_every: int = 200
    resume: bool = False
    max_minutes: float = 0.0  # stop early (checkpoint and model still written) after this long, pool included; 0 = off
    stop_after: int = 0  # stop after this step although the LR schedule spans ``steps``; 0 = run all ``steps``
    attach: str = ""  # model folder that receives the trained captioner as captioner/ (float16)
    init_from: str = ""  # start from this trained captioner (its vocabulary and size); a fresh run folder only
    # shapes only: pictures beyond clean renders, each pool built once and cached in the run folder
    generated_from: str = ""  # a pipeline folder whose generator draws ``generated`` pictures (same tokenizer)
    generated: int = 0  # generated pictures, labelled by the combined judge (what they show, not their prompt)
    degraded: int = 0  # renders blurred, noised and JPEG-compressed before encoding, labelled by their scene
    extra_fraction: float = 0.4  # share of each batch drawn from the generated and degraded pools together


# ---------------------------------------------------------------------------------------------- data
def scenes_to_array(scenes: list[Scene]) -> torch.Tensor:
    """(P, 4, 5) int8 object table (shape, colour, size, row, col indices; -1 = no object)."""
    arr = np.full((len(scenes), MAX_OBJECTS, 5), -1, dtype=np.int8)
    for i, s in enumerate(scenes):
        for j, o in enumerate(s.objects):
            arr[i, j] = (SHAPES.index(o.shape), COLORS.index(o.color), SIZES.index(o.size), o.row, o.col)
    return torch.from_numpy(arr)


def array_to_scene(row: torch.Tensor) -> Scene:
    """Inverse of :func:`scenes_to_array` for one scene."""
    objs = [{"shape": SHAPES[a], "color": COLORS[b], "size": SIZES[c], "row": int(r), "col": int(k)}
            for a, b, c, r, k in row.tolist() if a >= 0]
    return Scene.from_dicts(objs)


def build_pool(cfg: CaptionerTrainConfig, vq: VQModel, run: Path) -> dict[str, torch.Tensor]:
    """Tokens (P, N) and object tables (P, 4, 5), cached as ``run/pool.safetensors``."""
    cache = run / "pool.safetensors"
    if cache.is_file():
        pool = load_file(str(cache))
        if "objects" not in pool:
            raise ValueError(f"{cache} holds an imagefolder's pictures, not shapes scenes; use a fresh run folder")
        return pool
    rng = random.Random(cfg.seed + 999)
    scenes = [random_scene(rng) for _ in range(cfg.pool)]
    pool = {"tokens": encode_scenes(vq, scenes, desc="encoding pool"), "objects": scenes_to_array(scenes)}
    save_file(pool, str(cache))
    return pool


def build_extra_pool(cfg: CaptionerTrainConfig, vq: VQModel, run: Path) -> dict[str, torch.Tensor] | None:
    """Generated and degraded pictures (tokens and object tables like :func:`build_pool`), cached as
    ``run/extra.safetensors``; None when the config asks for neither.

    Generated: ``cfg.generated`` pictures drawn by ``cfg.generated_from`` (default sampling settings, a fresh seed
    per picture) from the captions of random scenes; each is labelled by ``pixlm eval``'s combined judge's reading of
    the decoded picture (the learned reader, the geometric one where it is unsure; the geometric reader alone
    misreads generated pictures more often), so the captioner learns to say what the generator drew (pictures read
    as empty or as more than ``MAX_OBJECTS`` objects are left out). Degraded: ``cfg.degraded`` renders passed through
    :func:`pixlm.eval.augment.degrade` (the learned judge's degradations), labelled by their scene."""
    if not (cfg.generated or cfg.degraded):
        return None
    cache = run / "extra.safetensors"
    if cache.is_file():
        return load_file(str(cache))
    from pixlm.eval.judge import default_judge
    from pixlm.train.common import images_to_tensor

    rng = random.Random(cfg.seed + 4242)
    tokens, tables = [], []
    if cfg.generated:
        if not cfg.generated_from:
            raise ValueError(f"generated={cfg.generated} needs generated_from=<a pipeline folder>")
        from pixlm.pipelines.text_to_image import load_pipeline

        pipe = load_pipeline(cfg.generated_from, precision="reference")
        judge = default_judge()
        if tokenizer_fingerprint(pipe.vq) != tokenizer_fingerprint(vq):
            raise ValueError(f"{cfg.generated_from} draws tokens of tokenizer {tokenizer_fingerprint(pipe.vq)}, but "
                             f"the captioner reads tokenizer {tokenizer_fingerprint(vq)} ({cfg.tokenizer})")
        made = drawn = 0
        while made < cfg.generated:
            if drawn >= 20 * cfg.generated + 64:
                raise RuntimeError(f"only {made} of {drawn} pictures drawn by {cfg.generated_from} read as 1 to "
                                   f"{MAX_OBJECTS} objects; is it a trained shapes model?")
            drawn += 32
            prompts = [caption(random_scene(rng), rng) for _ in range(32)]
            out = pipe.generate(prompts, seed=rng.randrange(2**40))
            readings = judge.read_many(out.images)  # images: the decoded tokens
            for row, reading in zip(out.tokens.flatten(1), readings):
                scene = reading.objects
                if 1 <= len(scene) <= MAX_OBJECTS and made < cfg.generated:  # the pool's scenes have 1-4
                    tokens.append(row.to(torch.int16))
                    tables.append(scenes_to_array([Scene.from_dicts(scene)])[0])
                    made += 1
    if cfg.degraded:
        from pixlm.eval.augment import degrade

        scenes = [random_scene(rng) for _ in range(cfg.degraded)]

        enc = encode_in_batches(vq, lambda i, j: images_to_tensor(np.stack([
            degrade(render(s), np.random.default_rng((cfg.seed, k))) for k, s in enumerate(scenes[i:j], i)
        ])), len(scenes))
        tokens += list(enc)
        tables += list(scenes_to_array(scenes))
    pool = {"tokens": torch.stack(tokens), "objects": torch.stack(tables)}
    save_tensors_atomic(pool, cache)
    return pool


def encode_folder(vq: VQModel, folder: str | Path, batch: int = 256,
                  desc: str | None = None) -> tuple[torch.Tensor, list[list[str]]]:
    """Each distinct picture of an imagefolder tokenized once → (P, N) int16, and every caption of each picture."""
    from pixlm.data.folder import ImageFolder

    ds = ImageFolder(folder, size=vq.config.image_size)
    groups = ds.pictures()
    tokens = encode_in_batches(vq, lambda i, j: torch.stack([ds[g[0]]["image"] for g in groups[i:j]]), len(groups),
                               desc, batch)
    return tokens, [[ds.rows[j].text for j in g] for g in groups]


def build_folder_pool(cfg: CaptionerTrainConfig, vq: VQModel, run: Path) -> tuple[torch.Tensor, list[list[str]]]:
    """Tokens (P, N) of ``cfg.data``'s distinct pictures and their captions, cached as ``run/pool.safetensors``
    (captions in its metadata, so tokens and captions cannot drift apart)."""
    cache = run / "pool.safetensors"
    if cache.is_file():
        with safe_open(str(cache), "pt") as f:
            meta = f.metadata() or {}
            if "captions" not in meta:
                raise ValueError(f"{cache} holds shapes scenes, not the pictures of {cfg.data}; use a fresh run folder")
            return f.get_tensor("tokens"), json.loads(meta["captions"])
    tokens, captions = encode_folder(vq, cfg.data, desc="encoding pictures")
    save_tensors_atomic({"tokens": tokens}, cache, {"captions": json.dumps(captions, ensure_ascii=False),
                                                    "data": str(cfg.data)})
    return tokens, captions


def vocabulary(seed: int = 0, n: int = 20_000) -> tuple[str, ...]:
    """Every word the training captions can use: sampled captions plus the whole canonical and synonym lists."""
    rng = random.Random(seed + 31337)
    texts = []
    for _ in range(n):
        s = random_scene(rng)
        texts += [caption(s, rng), detailed_caption(s)]
    words = [*COLORS, *SHAPES, *SIZES, *POSITIONS.values(), *RELATION_WORDS.values(), *NUMBER_WORDS.values(), "an",
             "one", *_PREFIXES, *(w for ws in _SYNONYMS.values() for w in ws), *_PLURAL.values(), "and", ","]
    return build_vocab(texts + words)


def training_ids(model: Captioner, scene: Scene, detailed: bool, rng: random.Random) -> list[int]:
    text = detailed_caption(scene) if detailed else caption(scene, rng)
    return model.encode_text(text, detailed=detailed)


# ---------------------------------------------------------------------------------------------- eval
def detailed_accuracy(model: Captioner, tokens: torch.Tensor, scenes: list[Scene], method: str = "greedy",
                      batch: int = 256) -> float:
    """Fraction of pictures whose detailed caption parses back into exactly their scene."""
    ok = 0
    for i in range(0, len(scenes), batch):
        texts = caption_tokens(model, tokens[i:i + batch].long(), detailed=True, method=method)
        for text, s in zip(texts, scenes[i:i + batch]):
            try:
                ok += same_scene(parse_detailed(text), s.to_dicts())
            except ValueError:
                pass
    return ok / max(1, len(scenes))


@torch.no_grad()
def folder_metrics(model: Captioner, tokens: torch.Tensor, captions: list[list[str]], batch: int = 256) -> dict:
    """Teacher-forced loss over every (picture, caption) pair, and corpus BLEU-4 / CIDEr of greedy captions
    against all of each picture's captions."""
    from pixlm.eval.caption_metrics import cider, corpus_bleu

    model.eval()
    pairs = [(i, model.encode_text(c)) for i, cs in enumerate(captions) for c in cs]
    loss_sum, n_words = 0.0, 0
    for k in range(0, len(pairs), batch):
        chunk = pairs[k:k + batch]
        words = pad_ids([ids for _, ids in chunk])
        n = int((words[:, 1:] != PAD).sum())
        loss_sum += float(caption_loss(model, tokens[[i for i, _ in chunk]].long(), words)) * n
        n_words += n
    texts = []
    for k in range(0, len(tokens), batch):
        texts += caption_tokens(model, tokens[k:k + batch].long())
    return {"loss": loss_sum / n_words, "bleu4": corpus_bleu(texts, captions), "cider": cider(texts, captions)}


def held_out(vq: VQModel, n: int, seed: int = 424242) -> tuple[torch.Tensor, list[Scene]]:
    """Scenes from a seed the pool never uses, and their tokens."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    return encode_scenes(vq, scenes), scenes


# ---------------------------------------------------------------------------------------------- train
def train_captioner(cfg: CaptionerTrainConfig) -> Path:
    """Train (or resume) a captioner in ``pixlm.train.loop.TrainLoop``; returns the folder of the final (EMA) model,
    ``OUT/model``."""
    if not 0.0 <= cfg.detailed_fraction <= 1.0:
        raise ValueError(f"detailed_fraction={cfg.detailed_fraction} must be in [0, 1]")
    loop = TrainLoop(cfg)  # max_minutes counts from here: pool building included
    run = loop.run
    vq = VQModel.from_pretrained(cfg.tokenizer)
    captions: list[list[str]] = []
    evals: dict[str, tuple[torch.Tensor, list[list[str]]]] = {}
    if cfg.data:
        tokens, captions = build_folder_pool(cfg, vq, run)
        pool = {"tokens": tokens}
        seen = np.linspace(0, len(captions) - 1, min(cfg.eval_n, len(captions))).astype(int).tolist()
        evals["train"] = tokens[seen], [captions[i] for i in seen]  # an even spread, to compare with held-out
        for folder in filter(None, (f.strip() for f in cfg.eval_data.split(","))):
            evals[Path(folder).name] = encode_folder(vq, folder)
    vocab_file = run / "vocab.json"
    if cfg.resume and vocab_file.is_file():
        vocab = tuple(json.loads(vocab_file.read_text()))
    else:
        vocab = (build_vocab([c for cs in captions for c in cs], cfg.vocab_min_count) if cfg.data
                 else vocabulary(cfg.seed, cfg.vocab_scenes))
        vocab_file.write_text(json.dumps(list(vocab)) + "\n")
    extra = None
    if not cfg.data:
        pool = build_pool(cfg, vq, run)
        extra = build_extra_pool(cfg, vq, run)
        eval_tokens, eval_scenes = held_out(vq, cfg.eval_n)
    elif cfg.generated or cfg.degraded:
        raise ValueError("generated/degraded pictures are shapes scenes; they do not mix with folder data")
    if not 0.0 <= cfg.extra_fraction <= 1.0:
        raise ValueError(f"extra_fraction={cfg.extra_fraction} must be in [0, 1]")

    if cfg.init_from:
        model = Captioner.from_pretrained(cfg.init_from).float()
        if model.config.tokenizer_id and model.config.tokenizer_id != tokenizer_fingerprint(vq):
            raise CheckpointError(f"init_from={cfg.init_from!r} was trained on tokenizer {model.config.tokenizer_id}, "
                                  f"not {tokenizer_fingerprint(vq)} ({cfg.tokenizer})")
        missing = sorted(set(vocab) - set(model.config.vocab))
        if missing:
            raise ValueError(f"init_from={cfg.init_from!r} lacks words the training captions use: {missing[:10]}")
        vocab = tuple(model.config.vocab)
        vocab_file.write_text(json.dumps(list(vocab)) + "\n")
    else:
        model = Captioner(CaptionerConfig(vocab=vocab, image_vocab_size=vq.vocab_size, grid=vq.config.grid,
                                          dim=cfg.dim, encoder_layers=cfg.encoder_layers,
                                          decoder_layers=cfg.decoder_layers, heads=cfg.heads,
                                          max_length=cfg.max_length, tokenizer_id=tokenizer_fingerprint(vq)))
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, ("emb", "pos")), lr=cfg.lr, betas=(0.9, 0.98))
    (model,) = loop.prepare({"raw": model}, opt, ema=True)
    raw, ema = loop.unwrap("raw"), loop.ema
    n_pool = pool["tokens"].shape[0]
    world, rank = loop.accelerator.num_processes, loop.accelerator.process_index

    def step_fn(step: int) -> dict:
        rng = step_rng(cfg.seed, step)  # data order and caption wording = f(seed, step)
        # (pool, index) per sample; the extra pool's share is drawn per sample, so it is a function of (seed, step)
        picks = [(extra, rng.randrange(len(extra["tokens"]))) if extra is not None and
                 rng.random() < cfg.extra_fraction else (pool, rng.randrange(n_pool))
                 for _ in range(cfg.batch_size * world)][rank::world]
        if cfg.data:  # one of the picture's captions, drawn at random
            rows = [raw.encode_text(rng.choice(captions[i])) for _, i in picks]
        else:
            rows = [training_ids(raw, array_to_scene(src["objects"][i]), rng.random() < cfg.detailed_fraction, rng)
                    for src, i in picks]
        words = pad_ids(rows).to(loop.accelerator.device)
        tokens = torch.stack([src["tokens"][i] for src, i in picks]).long().to(loop.accelerator.device)
        loss = caption_loss(model, tokens, words, cfg.label_smoothing)
        loop.accelerator.backward(loss)
        return {"loss": loss.detach()}

    def evaluate(done: int) -> dict:
        """Detailed accuracy and an example caption (shapes), or per-folder loss/BLEU-4/CIDEr (folder data)."""
        if not cfg.data:
            return {"detailed_acc": detailed_accuracy(ema, eval_tokens, eval_scenes),
                    "example": caption_tokens(ema, eval_tokens[:1].long())[0]}
        row = {f"{name}_{k}": v for name, (t, c) in evals.items() for k, v in folder_metrics(ema, t, c).items()}
        return {**row, "example": caption_tokens(ema, evals["train"][0][:1].long())[0]}

    loop.fit(step_fn, ema_decay=cfg.ema, clip_norm=1.0, evaluate=evaluate, eval_every=cfg.eval_every,
             plot=("loss", *(f"{name}_loss" for name in evals)) if cfg.data else ("loss", "detailed_acc"),
             stop=loop.stop_when(cfg.max_minutes, cfg.stop_after))
    final = run / "model"

    def write() -> None:
        ema.save_pretrained(final)
        if cfg.attach:
            attach_captioner(final, cfg.attach)

    loop.finish(write)
    return final


def attach_captioner(captioner_dir: str | Path, model_dir: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Copy a trained captioner into a pipeline folder as ``captioner/`` (weights in ``dtype``).

    Refuses when the captioner was trained on tokens of a different tokenizer than the folder's ``vq/``.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise CheckpointError(f"{model_dir} is not a model folder (no model_index.json)")
    cap = Captioner.from_pretrained(captioner_dir)
    vq = VQModel.from_pretrained(model_dir / "vq")
    want = tokenizer_fingerprint(vq)
    if cap.config.tokenizer_id and cap.config.tokenizer_id != want:
        raise CheckpointError(f"captioner {captioner_dir} was trained on tokenizer {cap.config.tokenizer_id}, but "
                              f"{model_dir}/vq is tokenizer {want}")
    return cap.save_pretrained(model_dir / "captioner", dtype=dtype)


def main(argv: list[str] | None = None) -> None:
    ap = config_parser(CaptionerTrainConfig, __doc__)
    ap.add_argument("--attach-only", default="", help="skip training: attach this trained captioner to --attach")
    a = vars(ap.parse_args(argv))
    only = a.pop("attach_only")
    if only:
        if not a["attach"]:
            raise SystemExit("--attach-only needs --attach MODEL_DIR")
        print(attach_captioner(only, a["attach"]))
        return
    torch.set_num_threads(1)
    print(train_captioner(CaptionerTrainConfig(**a)))


__all__ = ["CaptionerTrainConfig", "train_captioner", "attach_captioner", "detailed_accuracy", "encode_folder",
           "folder_metrics", "vocabulary", "held_out", "build_extra_pool"]

if __name__ == "__main__":
    main()
