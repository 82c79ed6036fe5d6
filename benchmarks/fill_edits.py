"""Edits whose prompt names only the new content (issue 22, part 3): inpaint "a blue square" into a masked cell,
outpaint "a red circle" into a new strip. The pipeline reads the picture and composes the whole-scene prompt.

    python benchmarks/fill_edits.py [--model DIR] [--inpaint-n 100] [--outpaint-n 50] [--seed 2212] [--unguided]

Inpaint task: a random source scene (1-3 objects) rendered clean; a random cell (empty or occupied) masked by its
pixel rectangle, grown by 0-3 px on each side; the prompt names one object (colour and size sometimes left out,
words sometimes synonyms). Right when the geometric reading of the result has the asked object in that cell (with
the attributes the prompt gives) and every other cell as in the source, nothing more.

Outpaint task: the source extended by 16 or 24 px on a random side (a new strip of 2-3 tokens); the prompt names
one object. Right when the 64×64 window at that side holds an object with the asked attributes in the cells of
its outer column or row (the strip).

Each task runs at a seed of its own (``seed * 1000 + i``). ``--unguided`` runs the plain prompt (``guided=False``)
for comparison; ``--candidates 1`` shows the generator without the reader's choice among samples. Writes
``fill_edits.json`` (or ``fill_edits-SEED.json``, with ``-unguided`` / ``-cN`` for those runs). Not a test: it
measures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

SEED = 2212
SIDES = ("left", "right", "top", "bottom")
SYNONYMS = {"red": ["crimson", "scarlet"], "blue": ["navy", "azure"], "green": ["emerald", "lime"],
            "yellow": ["gold", "amber"], "purple": ["violet", "lilac"], "pink": ["rose", "magenta"],
            "orange": ["tangerine"], "cyan": ["turquoise", "teal"],
            "circle": ["disc", "ball", "dot"], "square": ["box", "block", "tile"], "triangle": ["pyramid", "wedge"],
            "diamond": ["rhombus", "lozenge", "gem"]}


def new_object(rng: random.Random) -> tuple[str, dict]:
    """A prompt naming one object, and what the picture must show of it."""
    from pixlm.data.shapes import COLORS, SHAPES, SIZES

    shape, color, size = rng.choice(SHAPES), rng.choice(COLORS), rng.choice(SIZES)
    want = {"shape": shape}
    words = []
    if rng.random() < 0.2:
        words.append({"small": "small", "large": "big"}[size])
        want["size"] = size
    if rng.random() < 0.85:
        words.append(rng.choice(SYNONYMS[color]) if rng.random() < 0.25 else color)
        want["color"] = color
    words.append(rng.choice(SYNONYMS[shape]) if rng.random() < 0.25 else shape)
    text = " ".join(words)
    return f"{'an' if text[0] in 'aeiou' else 'a'} {text}", want


def inpaint_tasks(n: int, seed: int) -> list[dict]:
    from pixlm.data.shapes import POSITIONS, random_scene

    rng = random.Random(seed)
    tasks = []
    for _ in range(n):
        scene = random_scene(rng, 1, 3)
        cell = rng.choice(list(POSITIONS))
        r, c = cell
        box = [c * 64 / 3 - rng.randint(0, 3), r * 64 / 3 - rng.randint(0, 3), (c + 1) * 64 / 3 + rng.randint(0, 3),
               (r + 1) * 64 / 3 + rng.randint(0, 3)]
        prompt, want = new_object(rng)
        kept = [o for o in scene.to_dicts() if (o["row"], o["col"]) != cell]
        spec = {"objects": kept + [{**want, "row": r, "col": c}], "relations": [], "exact": True}
        tasks.append({"scene": scene, "box": [max(0, round(v)) for v in box], "prompt": prompt, "spec": spec,
                      "cell": cell})
    return tasks


def outpaint_tasks(n: int, seed: int) -> list[dict]:
    from pixlm.data.shapes import random_scene

    rng = random.Random(seed + 1)
    tasks = []
    for _ in range(n):
        scene = random_scene(rng, 1, 3)
        side, amount = rng.choice(SIDES), rng.choice((16, 24))
        prompt, want = new_object(rng)
        tasks.append({"scene": scene, "side": side, "amount": amount, "prompt": prompt, "want": want})
    return tasks


def strip_window(image, side: str):
    """The 64×64 window of an outpainted picture at the new side."""
    w, h = image.size
    box = {"left": (0, 0, 64, 64), "top": (0, 0, 64, 64), "right": (w - 64, h - 64, w, h),
           "bottom": (w - 64, h - 64, w, h)}[side]
    if side in ("left", "right"):
        box = (box[0], (h - 64) // 2, box[0] + 64, (h - 64) // 2 + 64)
    else:
        box = ((w - 64) // 2, box[1], (w - 64) // 2 + 64, box[1] + 64)
    return image.crop(box)


def in_strip(obj: dict, side: str) -> bool:
    return {"left": obj["col"] == 0, "right": obj["col"] == 2, "top": obj["row"] == 0,
            "bottom": obj["row"] == 2}[side]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--inpaint-n", type=int, default=100)
    ap.add_argument("--outpaint-n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--unguided", action="store_true", help="plain prompt (guided=False), for comparison")
    ap.add_argument("--candidates", type=int, default=None, help="samples per output (default: the "
                    "pipeline's, 4 when guided); 1 shows the generator alone")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from PIL import Image

    from pixlm.data.geometric import read_scene
    from pixlm.data.shapes import render, satisfies
    from pixlm.pipelines.common import bundled_model_path
    from pixlm.pipelines.text_to_image import load_pipeline

    pipe = load_pipeline(a.model)
    guided = False if a.unguided else None
    result: dict = {"model": str(a.model or bundled_model_path()), "seed": a.seed, "guided": not a.unguided,
                    "candidates": a.candidates}
    ok, guided_runs, failures = 0, 0, []
    t0 = time.perf_counter()
    for i, t in enumerate(inpaint_tasks(a.inpaint_n, a.seed)):
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, tuple(t["box"]))
        out = pipe.edit(render(t["scene"]), t["prompt"], mask=mask, seed=a.seed * 1000 + i, guided=guided,
                        candidates=a.candidates)
        found = read_scene(out.images[0])
        good = satisfies(found, t["spec"])
        ok += good
        guided_runs += bool(out.info.get("guided"))
        if not good and len(failures) < 12:
            failures.append({"prompt": t["prompt"], "cell": t["cell"], "source": t["scene"].to_dicts(),
                             "composed": out.prompts[0], "found": found})
    n = max(1, a.inpaint_n)
    result["inpaint"] = {"n": a.inpaint_n, "right": ok / n, "guided_share": guided_runs / n,
                         "s_per_edit": (time.perf_counter() - t0) / n, "failures": failures}
    print(f"inpaint: {ok}/{a.inpaint_n} right ({guided_runs} guided)", flush=True)
    ok, guided_runs, failures = 0, 0, []
    t0 = time.perf_counter()
    for i, t in enumerate(outpaint_tasks(a.outpaint_n, a.seed)):
        out = pipe.edit(render(t["scene"]), t["prompt"], mode="outpaint", seed=a.seed * 1000 + 500 + i,
                        guided=guided, candidates=a.candidates, **{t["side"]: t["amount"]})
        found = read_scene(strip_window(out.images[0], t["side"]))
        good = any(in_strip(o, t["side"]) and all(o[k] == v for k, v in t["want"].items()) for o in found)
        ok += good
        guided_runs += bool(out.info.get("guided"))
        if not good and len(failures) < 12:
            failures.append({"prompt": t["prompt"], "side": t["side"], "amount": t["amount"],
                             "source": t["scene"].to_dicts(), "found": found})
    n = max(1, a.outpaint_n)
    result["outpaint"] = {"n": a.outpaint_n, "right": ok / n, "guided_share": guided_runs / n,
                          "s_per_edit": (time.perf_counter() - t0) / n, "failures": failures}
    print(f"outpaint: {ok}/{a.outpaint_n} right ({guided_runs} guided)", flush=True)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = ("fill_edits" + ("" if a.seed == SEED else f"-{a.seed}") + ("-unguided" if a.unguided else "")
            + ("" if a.candidates is None else f"-c{a.candidates}") + ".json")
    (out_dir / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
