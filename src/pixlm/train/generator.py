"""Train the masked token generator on (image tokens, text states) pairs, in ``pixlm.train.loop``.

The images of the training pool are encoded once by the frozen tokenizer and the captions once by the frozen
text encoder (both cached in the run folder), so each step costs only the generator's forward/backward.
With ``data`` naming tar shards (``pixlm.data.shards``) the pairs are streamed instead: token shards
(``pixlm data shard --tokenizer``) skip the VQ encoder, image shards are encoded batch by batch.

Each step draws one global batch of ``batch_size × processes × grad_accum`` examples and all of its
randomness (pool indices, condition dropout, token masks) from (seed, step); every process takes its slice and
splits it into ``grad_accum`` micro-batches. The loss is the mean over all masked tokens of the global batch,
so 1 process with batch 8, 2 processes with batch 4 and 1 process with batch 4 × 2 accumulation take the
same optimizer steps (up to float rounding) in pool mode.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from pixlm.data.shapes import caption, group_relation_scene, random_scene, satisfies
from pixlm.models.masked import MaskedConfig, MaskedTransformer, random_token_mask
from pixlm.models.vq import VQModel
from pixlm.pipelines.text_to_image import TextToImagePipeline
from pixlm.text.encoder import TextEncoder, pad_states
from pixlm.train.common import (encode_in_batches, encode_scenes, load_text_encoder, save_grid, save_tensors_atomic,
                                step_generator)
from pixlm.train.loop import TrainLoop, param_groups


@dataclass
class GeneratorTrainConfig:
    out: str = "runs/generator"
    tokenizer: str = "runs/tokenizer/model"
    text_encoder: str = "minilm"  # "minilm", "tiny" or a local Hugging Face directory
    data: str = ""  # an imagefolder with metadata.jsonl, tar shards (pattern, folder), or empty = shapes scenes
    shuffle_buffer: int = 1000  # shard streaming: samples held for shuffling
    pool: int = 60_000  # shapes scenes to render and pre-encode
    loose_pool: int = 0  # also pair the first N pool scenes with an informal prompt (pixlm.data.loose)
    relation_pool: int = 0  # add N scenes captioned by a relation between groups ("two red circles above a square")
    phrase_pool: int = 0  # add N scenes of the weak categories in varied wording (pixlm.data.phrasing)
    steps: int = 4000
    batch_size: int = 64  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    mixed_precision: str = "no"  # "no", "bf16" (CPU or GPU) or "fp16" (GPU)
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.05
    cond_dropout: float = 0.1
    ema: float = 0.999
    seed: int = 0
    dim: int = 192
    layers: int = 4
    heads: int = 4
    conditioning: str = "cross"
    log_every: int = 25
    eval_every: int = 500
    ckpt_every: int = 250
    resume: bool = False
    stop_at: int = 0  # stop after this step (0 = run to ``steps``); the LR schedule still spans ``steps``


def parse_phases(text: str) -> list[tuple[int, int]]:
    """``"5000,15000:6250,13000"`` → [(5000, 5000), (15000, 6250), (13000, 13000)]: (schedule length, stop).

    Each phase resumes the previous one's checkpoint on a cosine schedule of the given length (a warm restart)
    and stops at ``stop`` (default: the schedule's end). This is how the shipped generator was trained.
    """
    phases, last = [], 0
    for part in text.split(","):
        steps, _, stop = part.strip().partition(":")
        try:
            phase = (int(steps), int(stop) if stop else int(steps))
        except ValueError:
            raise ValueError(f"phases: {part!r} is not STEPS or STEPS:STOP (whole numbers)") from None
        if not last < phase[1] <= phase[0]:
            raise ValueError(f"phases: phase {part!r} must stop after step {last} and within its schedule")
        phases.append(phase)
        last = phase[1]
    return phases


def train_phases(cfg: GeneratorTrainConfig, phases: list[tuple[int, int]],
                 overrides: Callable[[int], dict[str, Any]] = lambda start: {}) -> Path:
    """Train ``phases`` [(schedule length, stop), ...] in order, each resuming the last on its own cosine schedule
    (a warm restart). A phase that a complete checkpoint already reached is skipped; ``overrides(start step)``
    gives a phase's other settings (e.g. pool extras). Returns the pipeline folder."""
    from pixlm.train.common import complete_checkpoints

    start = 0
    for steps, stop in phases:
        done = complete_checkpoints(Path(cfg.out))
        if not (done and int(done[-1].name.split("-")[1]) >= stop):
            train_generator(replace(cfg, steps=steps, stop_at=stop, resume=True, **overrides(start)))
        start = stop
    return Path(cfg.out) / "pipeline"


text_encoder_from_spec = load_text_encoder  # the name benchmarks/serve_load.py imports


def build_pool(cfg: GeneratorTrainConfig, vq: VQModel, text: TextEncoder, run: Path) -> dict[str, torch.Tensor]:
    """Tokens (P, N) int16 and ragged text states (flat fp16 + offsets), cached as ``run/pool.safetensors``.

    ``cfg.loose_pool``, ``cfg.relation_pool`` and ``cfg.phrase_pool`` append extra pairs, each set cached in its
    own file."""
    if (cfg.loose_pool or cfg.relation_pool or cfg.phrase_pool) and cfg.data:
        raise ValueError(f"loose_pool/relation_pool/phrase_pool need the built-in shapes pool, not data={cfg.data!r}")
    pool = _caption_pool(cfg, vq, text, run)
    if cfg.loose_pool:
        pool = _append(pool, loose_pairs(cfg, text, run, pool["tokens"]))
    if cfg.relation_pool:
        pool = _append(pool, relation_pairs(cfg, vq, text, run))
    if cfg.phrase_pool:
        pool = _append(pool, phrase_pairs(cfg, vq, text, run))
    return pool


def _encode_texts(text: TextEncoder, prompts: list[str], desc: str) -> dict[str, torch.Tensor]:
    """Ragged fp16 text states of ``prompts``: their concatenation and the running offsets into it."""
    flat, offsets = [], [0]
    for i in tqdm(range(0, len(prompts), 256), desc=desc):
        states, mask = text.encode(prompts[i:i + 256], use_cache=False)
        for s, m in zip(states, mask):
            flat.append(s[m].half())
            offsets.append(offsets[-1] + int(m.sum()))
    return {"text": torch.cat(flat), "offsets": torch.tensor(offsets)}


def _append(pool: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``pool`` followed by ``extra``: every per-row tensor concatenated, the text offsets shifted."""
    if pool.keys() != extra.keys():
        raise ValueError(f"pool parts disagree: {sorted(pool)} against {sorted(extra)}")
    out = {k: torch.cat([v, extra[k]]) for k, v in pool.items() if k != "offsets"}
    out["offsets"] = torch.cat([pool["offsets"], extra["offsets"][1:] + pool["offsets"][-1]])
    return out


def loose_pairs(cfg: GeneratorTrainConfig, text: TextEncoder, run: Path, tokens: torch.Tensor) -> dict:
    """The first ``cfg.loose_pool`` scenes of the shapes pool again, each with an informal prompt.

    The prompts come from ``pixlm.data.loose`` (synonyms, numerals, dropped words, "draw me ...", typos), so the
    generator learns to read the way people type and not only the caption grammar. The scenes' tokens are
    reused; only the prompts are encoded (cached as ``run/pool_loose-N.safetensors``)."""
    from pixlm.data.loose import intent_from_scene, loose

    n = cfg.loose_pool
    if not 0 < n <= cfg.pool:
        raise ValueError(f"loose_pool={n} must be in 1..pool={cfg.pool}")
    cache = run / f"pool_loose-{n}.safetensors"
    if not cache.is_file():
        rng = random.Random(cfg.seed + 777)  # _caption_pool's first n scenes (it draws all scenes before captions)
        scenes = [random_scene(rng) for _ in range(n)]
        lrng = random.Random(cfg.seed + 778)
        prompts = [loose(intent_from_scene(s, lrng), lrng) for s in scenes]
        save_tensors_atomic(_encode_texts(text, prompts, "encoding loose prompts"), cache)
        (run / f"pool_loose-{n}.txt").write_text("\n".join(prompts) + "\n")
    return {"tokens": tokens[:n], **load_file(str(cache))}


def relation_pairs(cfg: GeneratorTrainConfig, vq: VQModel, text: TextEncoder, run: Path) -> dict:
    """``cfg.relation_pool`` new scenes of ``shapes.group_relation_scene`` with their captions (cached as
    ``run/pool_relations-N.safetensors``)."""
    return _scene_pairs(run, "relations", cfg.relation_pool, group_relation_scene, random.Random(cfg.seed + 779),
                        vq, text)


def phrase_pairs(cfg: GeneratorTrainConfig, vq: VQModel, text: TextEncoder, run: Path) -> dict:
    """``cfg.phrase_pool`` new scenes of the weak categories (two objects, colours without shapes, counts, counts
    with relations, mixtures), each with a prompt in varied wording (``pixlm.data.phrasing``; cached as
    ``run/pool_phrases-N.safetensors``)."""
    from pixlm.data.phrasing import training_pair

    return _scene_pairs(run, "phrases", cfg.phrase_pool, training_pair, random.Random(cfg.seed + 780), vq, text)


def _scene_pairs(run: Path, name: str, n: int, draw: Callable[[random.Random], tuple[Any, str]], rng: random.Random,
                 vq: VQModel, text: TextEncoder) -> dict:
    """``n`` (scene, prompt) pairs from ``draw(rng)``, tokenized and encoded once, cached as
    ``run/pool_{name}-N.safetensors`` (prompts beside it in ``.txt``)."""
    if n < 0:
        raise ValueError(f"{name} pool size {n} must be >= 0")
    cache = run / f"pool_{name}-{n}.safetensors"
    if not cache.is_file():
        scenes, prompts = zip(*(draw(rng) for _ in range(n)))
        pairs = {"tokens": encode_scenes(vq, list(scenes), f"encoding {name} scenes"),
                 **_encode_texts(text, list(prompts), f"encoding {name} prompts")}
        save_tensors_atomic(pairs, cache)
        (run / f"pool_{name}-{n}.txt").write_text("\n".join(prompts) + "\n")
    return load_file(str(cache))


def _caption_pool(cfg: GeneratorTrainConfig, vq: VQModel, text: TextEncoder, run: Path) -> dict[str, torch.Tensor]:
    cache = run / "pool.safetensors"
    if cache.is_file():
        return load_file(str(cache))
    if cfg.data:
        from pixlm.data.folder import ImageFolder

        folder = ImageFolder(cfg.data)
        items = [folder[i] for i in range(len(folder))]
        images = torch.stack([it["image"] for it in items])
        captions = [it["text"] for it in items]
        tokens = encode_in_batches(vq, lambda i, j: images[i:j], len(images), "encoding pool images")
    else:
        rng = random.Random(cfg.seed + 777)
        scenes = [random_scene(rng) for _ in range(cfg.pool)]
        captions = [caption(s, rng) for s in scenes]
        tokens = encode_scenes(vq, scenes, "encoding pool images")
    pool = {"tokens": tokens, **_encode_texts(text, captions, "encoding pool captions")}
    save_tensors_atomic(pool, cache)
    (run / "pool_captions.txt").write_text("\n".join(captions) + "\n")
    return pool


def gather_text(pool: dict[str, torch.Tensor], idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    off = pool["offsets"]
    return pad_states([pool["text"][off[i]:off[i + 1]].float() for i in idx.tolist()])


def quick_accuracy(pipe: TextToImagePipeline, n: int = 48, seed: int = 123) -> float:
    """Fraction of generated images whose geometric reading satisfies a held-out caption's scene exactly.

    A caption may leave attributes out, so the check uses the caption's scene only for counts and the
    attributes the caption states — approximated here by requiring the true scene's shapes and colours."""
    from pixlm.data.geometric import read_scene

    rng = random.Random(seed)
    scenes = [random_scene(rng, 1, 2) for _ in range(n)]
    prompts = []
    for s in scenes:  # fully specified captions: colour, shape and position of each object
        parts = [f"a {o.color} {o.shape} " + ("in the top left", "at the top", "in the top right", "on the left",
                 "in the center", "on the right", "in the bottom left", "at the bottom",
                 "in the bottom right")[o.row * 3 + o.col] for o in s.objects]
        prompts.append(" and ".join(parts))
    images = pipe(prompts, seed=seed)
    ok = 0
    for s, im in zip(scenes, images):
        spec = {"objects": [{k: v for k, v in o.to_dict().items() if k != "size"} for o in s.objects]}
        ok += satisfies(read_scene(im), spec)
    return ok / n


class ShardPairs:
    """This process's stream of (tokens, captions) from tar shards: token shards, or image shards encoded here."""

    def __init__(self, cfg: GeneratorTrainConfig, vq: VQModel, rank: int, world: int, skip: int) -> None:
        from pixlm.data.shards import ShardError, ShardStream, read_index

        index = read_index(cfg.data) or {}
        if index.get("kind") == "tokens" and index.get("vocab_size") != vq.vocab_size:
            raise ShardError(f"token shards {cfg.data!r} were made by a tokenizer with vocab_size="
                             f"{index.get('vocab_size')}, but {cfg.tokenizer!r} has {vq.vocab_size}")
        self.vq = vq
        self.items = iter(ShardStream(cfg.data, shuffle=cfg.shuffle_buffer, seed=cfg.seed, rank=rank,
                                      world_size=world, skip=skip, size=64))

    def take(self, n: int) -> tuple[torch.Tensor, list[str]]:
        """The next ``n`` examples: tokens (n, N) int64 and captions."""
        items = [next(self.items) for _ in range(n)]
        if all("tokens" in it for it in items):
            tokens = torch.stack([it["tokens"] for it in items])
        else:
            with torch.no_grad():
                tokens = self.vq.encode(torch.stack([it["image"] for it in items])).flatten(1)
        if int(tokens.max()) >= self.vq.vocab_size:
            raise ValueError(f"shard tokens reach {int(tokens.max())}, outside the tokenizer's vocab_size "
                             f"{self.vq.vocab_size}; were the shards made with another tokenizer?")
        return tokens, [it["text"] for it in items]


def with_dropout(states: torch.Tensor, mask: torch.Tensor, drop: torch.Tensor, null_states: torch.Tensor,
                 null_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the text of the rows marked in ``drop`` by the empty prompt's (condition dropout, as CFG uses)."""
    if not drop.any():
        return states, mask
    t = max(states.shape[1], null_states.shape[1])
    states = torch.nn.functional.pad(states, (0, 0, 0, t - states.shape[1]))
    mask = torch.nn.functional.pad(mask, (0, t - mask.shape[1]))
    states[drop] = 0
    mask[drop] = False
    states[drop, : null_states.shape[1]] = null_states[0].to(states.dtype)
    mask[drop, : null_mask.shape[1]] = True
    return states, mask


SAMPLE_PROMPTS = ["two red circles above a blue square", "a large green triangle in the center",
                  "three yellow diamonds", "a small purple square in the bottom right",
                  "a cyan circle to the left of an orange diamond", "four pink squares",
                  "a blue triangle at the top and a red circle at the bottom", "a picture of a big disk"]


def save_samples(pipe: TextToImagePipeline, path: Path) -> None:
    """Two pictures of each ``SAMPLE_PROMPTS`` prompt (seed 0) as one PNG grid: what a run looks like so far."""
    images = pipe(SAMPLE_PROMPTS, num_images_per_prompt=2, seed=0)
    save_grid(np.stack([np.asarray(im) for im in images]), path, cols=8)


def train_generator(cfg: GeneratorTrainConfig) -> Path:
    """Train (or resume) the masked generator in ``pixlm.train.loop.TrainLoop``; returns ``OUT/pipeline``."""
    from pixlm.data.shards import looks_like_shards

    loop = TrainLoop(cfg, cfg.mixed_precision, cfg.grad_accum)
    accelerator, run = loop.accelerator, loop.run
    world, rank = accelerator.num_processes, accelerator.process_index
    vq = VQModel.from_pretrained(cfg.tokenizer)
    text = load_text_encoder(cfg.text_encoder)
    streaming = bool(cfg.data) and looks_like_shards(cfg.data)
    with torch.no_grad():  # the text encoder is frozen while the generator trains
        if not streaming:
            with accelerator.main_process_first():  # one process builds the cache, the others read it
                pool = build_pool(cfg, vq, text, run)
        null_states, null_mask = text.encode([""])  # condition dropout uses the empty prompt, as CFG does
    model = MaskedTransformer(MaskedConfig(vocab_size=vq.vocab_size, grid=vq.config.grid, dim=cfg.dim,
                                           layers=cfg.layers, heads=cfg.heads, text_dim=text.dim,
                                           conditioning=cfg.conditioning))
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    (model,) = loop.prepare({"raw": model}, opt, ema=True, same_world=streaming)
    mask_id = loop.unwrap("raw").config.mask_id
    local, micro = cfg.batch_size * cfg.grad_accum, cfg.batch_size
    pairs = ShardPairs(cfg, vq, rank, world, skip=loop.start * local) if streaming else None
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps

    def step_fn(step: int) -> dict:
        """One global batch from (seed, step); this process's slice in ``grad_accum`` micro-batches."""
        gen = step_generator(cfg.seed, step)  # data order = f(seed, step)
        mine = slice(rank * local, (rank + 1) * local)  # this process's rows of the global batch
        if pairs is None:
            idx = torch.randint(0, pool["tokens"].shape[0], (local * world,), generator=gen)[mine]
            tokens = pool["tokens"][idx].long()
        else:
            tokens, captions = pairs.take(local)
        drop = (torch.rand(local * world, generator=gen) < cfg.cond_dropout)[mine]
        masks = random_token_mask(local * world, tokens.shape[1], generator=gen)  # (global B, N)
        n_masked = int(masks.sum())  # the loss is the mean over every masked token of the global batch
        masks = masks[mine]
        loss_sum = torch.zeros((), device=accelerator.device)
        for k in range(cfg.grad_accum):
            rows = slice(k * micro, (k + 1) * micro)
            if pairs is None:
                states, mask = gather_text(pool, idx[rows])
            else:
                with torch.no_grad():
                    states, mask = text.encode(captions[rows])
            states, mask = with_dropout(states, mask, drop[rows], null_states, null_mask)
            tok, masked = tokens[rows].to(accelerator.device), masks[rows].to(accelerator.device)
            sync = k == cfg.grad_accum - 1  # all-reduce gradients once, after the last micro-batch
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                logits = model(tok.masked_fill(masked, mask_id), states.to(accelerator.device),
                               mask.to(accelerator.device))
                ce = F.cross_entropy(logits[masked].float(), tok[masked], label_smoothing=0.1, reduction="sum")
                # DDP averages gradients over processes, hence × world: the sum is the global mean's gradient
                accelerator.backward(ce * world / n_masked)
            loss_sum += ce.detach()
        return {"loss": accelerator.reduce(loss_sum, "sum") / n_masked}

    def evaluate(done: int) -> dict:
        pipe = TextToImagePipeline(vq, text, loop.ema)
        row = {"quick_acc": quick_accuracy(pipe)}
        save_samples(pipe, run / f"samples-{done:07d}.png")
        return row

    loop.fit(step_fn, end=end, ema_decay=cfg.ema, clip_norm=1.0, evaluate=evaluate, eval_every=cfg.eval_every,
             log_extra=lambda done: {"examples": done * local * world}, plot=("loss", "quick_acc"))
    loop.finish(lambda: TextToImagePipeline(vq, text, loop.ema).save_pretrained(run / "pipeline"))
    return run / "pipeline"
