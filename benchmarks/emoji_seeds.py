"""Do different seeds give different emoji pictures? Mean distance between the pictures of one prompt's seeds.

    python benchmarks/emoji_seeds.py --data runs/emoji16/data --models emoji,runs/rag23/model --names 24 --seeds 4

For ``--names`` training names drawn at random (``--draw-seed``), each model draws ``--seeds`` pictures of "NAME" and
of "NAME, noto style"; the score is the mean pairwise distance between a prompt's pictures on
``pixlm.eval.nearest``'s blurred-thumbnail feature (the recognition check's own feature), beside the same distance
between real pictures of different emoji (what "a different picture" means on that feature) and between the four
styles of one emoji. Writes JSON to ``--out`` and a sheet (a row per prompt, seeds side by side) per model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from pixlm.eval.nearest import image_feature


def mean_pairwise(feats: list[np.ndarray]) -> float:
    return float(np.mean([np.linalg.norm(a - b) for a, b in itertools.combinations(feats, 2)]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the dataset written by `pixlm data emoji`")
    ap.add_argument("--models", default="emoji", help="comma-separated model folders or bundled names")
    ap.add_argument("--names", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--draw-seed", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/emoji_seeds.json")
    a = ap.parse_args(argv)
    from pixlm.data.folder import ImageFolder
    from pixlm.pipelines.text_to_image import load_pipeline

    train = ImageFolder(Path(a.data) / "train")
    meta = [json.loads(line) for line in open(Path(a.data) / "train" / "metadata.jsonl", encoding="utf-8")]
    by_name: dict[str, dict[str, str]] = {}
    for row in meta:
        name = row["text"].split(",")[0] if row["text"].endswith(" style") else None
        if name and row["text"] == f"{name}, {row['style']} style":
            by_name.setdefault(name, {})[row["style"]] = row["file_name"]
    names = random.Random(a.draw_seed).sample(sorted(n for n, s in by_name.items() if "noto" in s), a.names)
    real = {n: {s: image_feature(Image.open(train.root / f)) for s, f in by_name[n].items()} for n in names}
    result: dict = {"names": names, "seeds": a.seeds, "feature": "pixlm.eval.nearest.image_feature",
                    "real_different_emoji": mean_pairwise([v["noto"] for v in real.values()]),
                    "real_styles_of_one_emoji": float(np.mean([mean_pairwise(list(v.values()))
                                                               for v in real.values() if len(v) > 1])),
                    "models": {}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    for model in a.models.split(","):
        pipe = load_pipeline(model)
        row: dict = {}
        for suffix in ("", ", noto style"):
            dists, sheet = [], []
            for name in names:
                images = pipe.generate(name + suffix, num_images_per_prompt=a.seeds, seed=0).images
                dists.append(mean_pairwise([image_feature(im) for im in images]))
                sheet.append(images)
            row["NAME" + suffix] = float(np.mean(dists))
            grid = Image.new("RGB", (64 * a.seeds, 64 * len(sheet)), "white")
            for r, images in enumerate(sheet):
                for c, im in enumerate(images):
                    grid.paste(im.convert("RGB").resize((64, 64)), (64 * c, 64 * r))
            tag = Path(model).name + ("-noto" if suffix else "")
            grid.save(Path(a.out).with_name(f"emoji_seeds-{tag}.png"))
        result["models"][model] = row
        print(model, row, flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "names"}, indent=1))
    return result


if __name__ == "__main__":
    main()
