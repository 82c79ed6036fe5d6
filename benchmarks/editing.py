"""Editing quality: instruction-edit success on tasks built from the shapes world, and how much of the picture
outside the edited region survives.

    python benchmarks/editing.py [--model DIR] [--n 120] [--candidates 1,4] [--out benchmarks/results]

Each task is a random source scene (1–3 objects), an instruction (recolour, resize, reshape, remove, add, move;
the object named by the shortest unambiguous reference) and the expected scene from
``data.instructions.plan_edit`` applied to the *true* scene. The edit runs the real path (the source scene is
read from the rendered picture), and succeeds when the geometric reading of the result satisfies the expected
spec. ``candidates`` > 1 keeps the first of N samples whose geometric reading fits the target: it uses the same
reader as the judge, so it is reported separately.

Preservation: tokens outside the re-masked region are compared with the source's (exactly kept by construction);
pixels more than one token away from the region are compared with the source picture (the edits show the input's
own pixels outside the repainted area); and the result is re-encoded (the tokenizer is not
idempotent, so this mostly measures the tokenizer). For inpainting with random rectangular masks likewise. Writes ``editing.json``. Not a test: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

BENCH_SEED = 777_2026
OPS = ("recolor", "resize", "reshape", "remove", "add", "move")


def reference(obj: dict, objects: list[dict]) -> str:
    """The shortest phrase that names ``obj`` and no other object of the scene."""
    from pixlm.data.shapes import POSITIONS

    for keys in (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape")):
        if sum(all(o[k] == obj[k] for k in keys) for o in objects) == 1:
            return "the " + " ".join(obj[k] for k in keys)
    return f"the {obj['shape']} {POSITIONS[(obj['row'], obj['col'])]}"


def make_tasks(n: int, seed: int = BENCH_SEED) -> list[dict]:
    """``n`` tasks ``{op, scene, instruction, plan}``, cycling through the operations."""
    from pixlm.data.instructions import plan_edit
    from pixlm.data.shapes import COLORS, POSITIONS, SHAPES, SIZES, random_scene

    rng = random.Random(seed)
    tasks = []
    while len(tasks) < n:
        op = OPS[len(tasks) % len(OPS)]
        scene = random_scene(rng, 1, 3)
        objs = scene.to_dicts()
        o = rng.choice(objs)
        ref = reference(o, objs)
        free = [c for c in POSITIONS if c not in {(x["row"], x["col"]) for x in objs}]
        if op == "recolor":
            text = f"make {ref} {rng.choice([c for c in COLORS if c != o['color']])}"
        elif op == "resize":
            text = f"make {ref} {[s for s in SIZES if s != o['size']][0]}"
        elif op == "reshape":
            text = f"turn {ref} into a {rng.choice([s for s in SHAPES if s != o['shape']])}"
        elif op == "remove":
            text = f"remove {ref}"
        elif op == "add":
            size = rng.choice(SIZES) + " " if rng.random() < 0.5 else ""
            words = f"{size}{rng.choice(COLORS)} {rng.choice(SHAPES)}"
            text = f"add {'an' if words[0] in 'aeiou' else 'a'} {words} {POSITIONS[rng.choice(free)]}"
        else:
            where = POSITIONS[rng.choice(free)].split(" ", 1)[1]
            text = f"move {ref} to {where}"
        plan = plan_edit(objs, text, random.Random(len(tasks)))
        tasks.append({"op": op, "scene": scene, "instruction": text, "plan": plan})
    return tasks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--candidates", default="1,4")
    ap.add_argument("--inpaint-n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=BENCH_SEED, help="task seed (the default set was looked at while "
                    "developing the edit prompt; use another seed for an untouched set)")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from pixlm.data.detailed import same_scene
    from pixlm.data.shapes import random_scene, render, satisfies
    from pixlm.pipelines.editing import encode_images, inpaint, instruct
    from pixlm.data.geometric import read_scene
    from pixlm.pipelines.common import bundled_model_path
    from pixlm.pipelines.text_to_image import load_pipeline
    from PIL import Image

    import numpy as np
    import torch.nn.functional as F

    def pixels_kept(source: Image.Image, edited: Image.Image, repainted: torch.Tensor) -> tuple[int, int]:
        """Pixels farther than one token from the re-masked region that match the source picture (±8). The edits
        show the input's own pixels outside what they repaint (``keep_pixels``); before that, the source tokens'
        decoding was the reference, since the tokenizer's round trip changed them."""
        ref = np.asarray(source.convert("RGB"), dtype=np.int16)
        near = F.max_pool2d(repainted.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0  # dilate by a token
        far = ~np.kron(near.numpy(), np.ones((8, 8), dtype=bool)).astype(bool)
        same = np.abs(np.asarray(edited, dtype=np.int16) - ref).max(axis=2) <= 8
        return int((same & far).sum()), int(far.sum())

    pipe = load_pipeline(a.model)
    tasks = make_tasks(a.n, a.seed)
    result: dict = {"model": str(a.model or bundled_model_path()), "n_tasks": a.n, "seed": a.seed,
                    "has_captioner": pipe.has_captioner(), "instruct": {}}
    for cand in [int(x) for x in a.candidates.split(",")]:
        per_op: dict = defaultdict(lambda: [0, 0])
        kept_same = kept_total = reenc_same = px_same = px_total = 0
        read_ok = 0
        failures = []
        t0 = time.perf_counter()
        for i, t in enumerate(tasks):
            src_img = render(t["scene"])
            src = encode_images(pipe, src_img)[0]
            out = instruct(pipe, src_img, t["instruction"], seed=i, candidates=cand)
            found = read_scene(out.images[0])
            ok = satisfies(found, t["plan"].spec)
            read_ok += same_scene(out.info["source_objects"], t["scene"].to_dicts())
            per_op[t["op"]][0] += ok
            per_op[t["op"]][1] += 1
            outside = ~out.repainted[0]
            kept_same += int((out.tokens[0][outside] == src[outside]).sum())
            kept_total += int(outside.sum())
            reenc = encode_images(pipe, out.images[0])[0]
            reenc_same += int((reenc[outside] == src[outside]).sum())
            ps, pt = pixels_kept(src_img, out.images[0], out.repainted[0])
            px_same, px_total = px_same + ps, px_total + pt
            if not ok and len(failures) < 10:
                failures.append({"instruction": t["instruction"], "source": t["scene"].to_dicts(),
                                 "expected": t["plan"].spec["objects"], "found": found})
        secs = time.perf_counter() - t0
        total_ok = sum(v[0] for v in per_op.values())
        result["instruct"][f"candidates_{cand}"] = {
            "success_rate": total_ok / a.n, "per_op": {k: v[0] / v[1] for k, v in per_op.items()},
            "source_read_correct": read_ok / a.n,
            "tokens_outside_region_unchanged": kept_same / max(1, kept_total),
            "reencoded_tokens_outside_region_unchanged": reenc_same / max(1, kept_total),
            "pixels_beyond_one_token_of_region_unchanged": px_same / max(1, px_total),
            "s_per_edit": secs / a.n, "failures": failures}
        print(f"candidates={cand}: success {total_ok / a.n:.3f} "
              f"{ {k: round(v[0] / v[1], 2) for k, v in per_op.items()} } kept {kept_same / max(1, kept_total):.4f} "
              f"re-encoded {reenc_same / max(1, kept_total):.4f} pixels {px_same / max(1, px_total):.4f} "
              f"({secs / a.n:.2f} s/edit)")
    rng = random.Random(BENCH_SEED + 1)
    kept_same = kept_total = reenc_same = px_same = px_total = 0
    for i in range(a.inpaint_n):
        scene = random_scene(rng)
        img = render(scene)
        x0, y0 = rng.randrange(0, 48), rng.randrange(0, 48)
        w, h = rng.randrange(8, 64 - x0 + 1), rng.randrange(8, 64 - y0 + 1)
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (x0, y0, x0 + w, y0 + h))
        src = encode_images(pipe, img)[0]
        out = inpaint(pipe, img, "a red circle", mask, seed=i)
        outside = ~out.repainted[0]
        kept_same += int((out.tokens[0][outside] == src[outside]).sum())
        reenc_same += int((encode_images(pipe, out.images[0])[0][outside] == src[outside]).sum())
        kept_total += int(outside.sum())
        ps, pt = pixels_kept(img, out.images[0], out.repainted[0])
        px_same, px_total = px_same + ps, px_total + pt
    result["inpaint"] = {"n": a.inpaint_n, "tokens_outside_mask_unchanged": kept_same / max(1, kept_total),
                         "reencoded_tokens_outside_mask_unchanged": reenc_same / max(1, kept_total),
                         "pixels_beyond_one_token_of_mask_unchanged": px_same / max(1, px_total)}
    print("inpaint", result["inpaint"])
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "editing.json" if a.seed == BENCH_SEED else f"editing-seed{a.seed}.json"
    (out_dir / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
