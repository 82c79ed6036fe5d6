"""Train the learned judge on degraded shapes renders, then measure the judge on held-out renders.

Recipe for the shipped weights (a few minutes on one CPU core)::

    python -m pixlm.train.judge --out src/pixlm/assets/judge

Training runs in ``pixlm.train.loop.TrainLoop``: checkpoints and ``log.jsonl`` go to ``--run`` (default
``runs/judge``, kept out of the asset folder), ``--resume`` continues from its newest checkpoint, and the finished
judge is written to ``--out``.

Measure an existing judge without training (optionally also on a tokenizer's reconstructions)::

    python -m pixlm.train.judge --eval-only --out src/pixlm/assets/judge --eval-n 2000 [--tokenizer DIR]
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixlm.data.shapes import COLORS, SHAPES, SIZES, Scene, ShapeObject, random_scene, render
from pixlm.eval.augment import degrade, soft_render
from pixlm.eval.judge import Judge, JudgeConfig, JudgeNet, images_to_batch, scene_targets
from pixlm.train.common import config_parser
from pixlm.train.loop import TrainLoop

EVAL_SEED = 20_240_611  # held-out renders: a seed stream that training never draws from


@dataclass
class JudgeTrainConfig:
    out: str = "src/pixlm/assets/judge"  # the finished judge
    run: str = "runs/judge"  # the training run: checkpoints, log.jsonl, train_config.json
    steps: int = 900
    warmup: int = 30
    batch_size: int = 48
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    clean_fraction: float = 0.25  # the rest is degraded with strength drawn from [0.3, 1.6]
    threads: int = 1
    eval_n: int = 2000
    log_every: int = 50
    ckpt_every: int = 300
    resume: bool = False


def training_scene(rng: random.Random) -> Scene:
    """Half the time a scene from the world's own distribution, otherwise 0–9 independent objects.

    Crowded and empty scenes teach the judge every cell, since generated images may hold any number of objects.
    """
    if rng.random() < 0.5:
        return random_scene(rng)
    n = rng.randint(0, 9)
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], n)
    objs = [ShapeObject(rng.choice(SHAPES), rng.choice(COLORS), rng.choice(SIZES), r, c) for r, c in cells]
    return Scene(objs, [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in objs])


def training_batch(cfg: JudgeTrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, 64, 64) in [-1, 1] and targets (B, 9, 3); a pure function of (seed, step)."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    nrng = np.random.default_rng([cfg.seed, step])
    images, targets = [], []
    for _ in range(cfg.batch_size):
        scene = training_scene(rng)
        img = render(scene)
        if rng.random() >= cfg.clean_fraction:
            img = degrade(img, nrng, strength=rng.uniform(0.3, 1.6))
        images.append(img)
        targets.append(scene_targets(scene.to_dicts()))
    return images_to_batch(images), torch.from_numpy(np.stack(targets))


def judge_loss(net: JudgeNet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of shape-or-empty on every cell plus colour and size on occupied cells."""
    s, c, z = net(x)
    loss = F.cross_entropy(s.reshape(-1, s.shape[-1]), t[..., 0].reshape(-1))
    if (t[..., 1] >= 0).any():
        loss = loss + F.cross_entropy(c.reshape(-1, c.shape[-1]), t[..., 1].reshape(-1), ignore_index=-100)
        loss = loss + F.cross_entropy(z.reshape(-1, z.shape[-1]), t[..., 2].reshape(-1), ignore_index=-100)
    return loss


def heldout_set(n: int, strength: float = 0.0, seed: int = EVAL_SEED,
                soft: bool = False) -> tuple[list, list[list[dict]]]:
    """``n`` held-out renders of the world's scene distribution, degraded at ``strength`` (0: clean).

    With ``soft`` the scenes are drawn by :func:`soft_render` at ``strength`` instead (rounded corners and
    drifting colours, a degradation the judge never trains on).
    """
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed + 1)
    images, truths = [], []
    for _ in range(n):
        scene = random_scene(rng)
        if soft:
            images.append(soft_render(scene, nrng, strength))
        else:
            img = render(scene)
            images.append(degrade(img, nrng, strength=strength) if strength > 0 else img)
        truths.append(scene.to_dicts())
    return images, truths


def _key(objs: list[dict]) -> list[tuple]:
    return sorted((o["row"], o["col"], o["shape"], o["color"], o["size"]) for o in objs)


def reconstruct(images: list, tokenizer: str, batch_size: int = 64) -> list:
    """Images passed through a trained VQ tokenizer (encode → tokens → decode), as a generator's decoder draws."""
    from PIL import Image

    from pixlm.models.vq import VQModel
    from pixlm.train.common import tensor_to_uint8

    vq = VQModel.from_pretrained(tokenizer)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = images_to_batch(images[i:i + batch_size])
            out.extend(Image.fromarray(a) for a in tensor_to_uint8(vq.decode(vq.encode(x))))
    return out


def evaluate_judge(judge: Judge, n: int = 2000, seed: int = EVAL_SEED, tokenizer: str | None = None) -> dict:
    """Exact-scene accuracy of the combined, learned and geometric readings on held-out renders.

    Sets: clean renders; renders degraded at strength 1 (the middle of the training range) and at strength 2
    (beyond the training range of 0.3–1.6); "soft" renders at strength 1.5 (rounded corners and colour drift
    as decoders draw them, never seen in training). With ``tokenizer`` (a VQ model folder) one more set holds
    the clean renders' reconstructions through it; its errors mix the judge's with the tokenizer's own (a
    reconstruction may really turn a small square into a blob).
    """
    out: dict = {"n": n, "seed": seed}
    sets: list[tuple[str, float, bool, str | None]] = [
        ("clean", 0.0, False, None), ("degraded", 1.0, False, None), ("degraded_strong", 2.0, False, None),
        ("soft_render", 1.5, True, None)]
    if tokenizer:
        sets.append(("tokenizer_reconstruction", 0.0, False, tokenizer))
    for name, strength, soft, vq_dir in sets:
        images, truths = heldout_set(n, strength, seed, soft=soft)
        if vq_dir:
            images = reconstruct(images, vq_dir)
        t0 = time.perf_counter()
        readings = judge.read_many(images)
        dt = time.perf_counter() - t0
        truth_keys = [_key(t) for t in truths]
        out[name] = {
            "strength": strength, **({"tokenizer": vq_dir} if vq_dir else {}),
            "combined": float(np.mean([_key(r.objects) == k for r, k in zip(readings, truth_keys)])),
            "learned": float(np.mean([_key(r.learned) == k for r, k in zip(readings, truth_keys)])),
            "geometric": float(np.mean([_key(r.geometric) == k for r, k in zip(readings, truth_keys)])),
            "agreement": float(np.mean([r.agree for r in readings])),
            "ms_per_image": 1000 * dt / max(1, n),
        }
    return out


def train_judge(cfg: JudgeTrainConfig, net_config: JudgeConfig | None = None) -> JudgeNet:
    """Train (or resume) a :class:`JudgeNet` with ``cfg`` in ``TrainLoop``; returns it in eval mode.

    Its schedule keeps the shipped recipe's numbers: ``warmup`` steps, then a cosine decay to 2% of ``lr``.
    """
    loop = TrainLoop(cfg, run=cfg.run)
    net = JudgeNet(net_config or JudgeConfig()).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    (net,) = loop.prepare({"model": net}, opt)
    device = loop.accelerator.device

    def step_fn(step: int) -> dict:
        x, t = training_batch(cfg, step)
        loss = judge_loss(net, x.to(device), t.to(device))
        loop.accelerator.backward(loss)
        return {"loss": loss.detach()}

    loop.fit(step_fn, lr_floor=0.02)
    return loop.unwrap("model").eval()


def main(argv: list[str] | None = None) -> None:
    p = config_parser(JudgeTrainConfig, __doc__)
    p.add_argument("--eval-only", action="store_true", help="measure the judge in --out without training")
    p.add_argument("--tokenizer", default=None, help="also measure on reconstructions through this VQ model folder")
    args = vars(p.parse_args(argv))
    eval_only, tokenizer = args.pop("eval_only"), args.pop("tokenizer")
    cfg = JudgeTrainConfig(**args)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    info: dict = {}
    if not eval_only:
        t0 = time.perf_counter()
        net = train_judge(cfg)
        info["train_seconds"] = round(time.perf_counter() - t0, 1)
        info["train_config"] = asdict(cfg)
        net.save_pretrained(out)
        print(f"saved {out} ({sum(p.numel() for p in net.parameters())} parameters)")
    if cfg.eval_n > 0:
        metrics = evaluate_judge(Judge.load(out), n=cfg.eval_n, tokenizer=tokenizer)
        info["heldout"] = metrics
        print(json.dumps(metrics, indent=2))
    if info:
        path = out / "metrics.json"
        old = json.loads(path.read_text()) if path.is_file() and eval_only else {}
        path.write_text(json.dumps({**old, **info}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
