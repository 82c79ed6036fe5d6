"""Evaluate an emoji model on its dataset's held-out splits.

    python benchmarks/emoji.py --model runs/emoji/pipeline --data runs/emoji/data \\
        --out benchmarks/results/emoji.json --sheet docs/emoji_samples.png

Measures, per split (``train`` sample, ``test_emoji``: emoji never trained on, ``test_variant``: held-out
skin-tone variants of trained emoji):

* reconstruction PSNR of the tokenizer (encode → decode);
* text → image retrieval top-1/top-5 of the contrastive scorer (``pixlm.eval.clip_score``; the bundled
  ``assets/emoji-clip`` unless ``--scorer``) on the real pictures, with each emoji's name as the query: how good the
  yardstick is;
* for pictures generated from each emoji's name (one per name, seeded): CLIP-score (100·max(cos, 0)), the
  same for the real pictures and for generated pictures paired with a shuffled name (chance level), text →
  image retrieval among the generated pictures, and a Fréchet distance on the scorer's image features against
  the real pictures of that split, with two references: real train pictures against the split's real ones,
  and the tokenizer's reconstructions against them.

``--sweep`` first scores a small grid of sampling settings on 64 training names (never the test splits).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

SHEET_PROMPTS = ["a beach with palm trees", "cat face", "red apple", "pizza", "rocket", "snowman",
                 "smiling face with heart-eyes", "thumbs up, dark skin tone", "rainbow", "a yellow school bus"]


def load_split(data: Path, split: str, limit: int = 0) -> tuple[torch.Tensor, list[str], list[str]]:
    """Distinct pictures of a split (file order), each with its first caption (the name): images, names, files."""
    from pixlm.data.folder import ImageFolder

    ds = ImageFolder(data / split)
    first: dict[str, int] = {}
    for i, r in enumerate(ds.rows):
        first.setdefault(r.file_name, i)
    idx = list(first.values())
    if limit and len(idx) > limit:  # an even spread over the hexcode order, not the first N
        idx = [idx[int(k)] for k in np.linspace(0, len(idx) - 1, limit)]
    return (torch.stack([ds[i]["image"] for i in idx]), [ds.rows[i].text for i in idx],
            [ds.rows[i].file_name for i in idx])


def generate(pipe, prompts: list[str], seed: int, batch: int = 64, **options) -> list[Image.Image]:
    images: list[Image.Image] = []
    for i in range(0, len(prompts), batch):
        images += pipe(prompts[i:i + batch], seed=seed + i, **options)
    return images


def evaluate_split(pipe, scorer, images: torch.Tensor, names: list[str], train_feats: np.ndarray | None,
                   seed: int, options: dict) -> tuple[dict, torch.Tensor]:
    """Scores of one split (see the module docstring) and the generated pictures."""
    from pixlm.eval.clip_score import clip_score, embed_images, image_features, pil_to_tensor, retrieval
    from pixlm.eval.fid import frechet_distance
    from pixlm.train.common import psnr

    with torch.no_grad():
        recon = torch.cat([pipe.vq.decode(pipe.vq.encode(images[i:i + 128])) for i in range(0, len(images), 128)])
    t0 = time.perf_counter()
    gen = pil_to_tensor(generate(pipe, names, seed, **options))
    gen_s = time.perf_counter() - t0
    text = scorer.embed_texts(names)
    real_emb, gen_emb = embed_images(scorer, images), embed_images(scorer, gen)
    shuffled = text[torch.roll(torch.arange(len(names)), 1)]
    real_f, gen_f, rec_f = (image_features(scorer, x) for x in (images, gen, recon))
    out = {"n": len(names), "psnr_db": psnr(recon, images),
           "retrieval_real": retrieval(text, real_emb), "retrieval_generated": retrieval(text, gen_emb),
           "clip_score_generated": clip_score(gen_emb, text), "clip_score_real": clip_score(real_emb, text),
           "clip_score_generated_shuffled": clip_score(gen_emb, shuffled),
           "fid_generated": frechet_distance(gen_f, real_f), "fid_reconstructed": frechet_distance(rec_f, real_f),
           "generation_s": gen_s}
    if train_feats is not None:
        out["fid_real_train_vs_split"] = frechet_distance(train_feats, real_f)
    return out, gen


def label_sheet(rows: list[tuple[str, list[Image.Image]]], label_w: int = 220) -> Image.Image:
    """One row per prompt: the prompt, then its pictures."""
    h = rows[0][1][0].height
    w = rows[0][1][0].width
    sheet = Image.new("RGB", (label_w + w * max(len(ims) for _, ims in rows), h * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (text, ims) in enumerate(rows):
        draw.text((6, r * h + h // 2 - 6), text[:34], fill=(0, 0, 0))
        for c, im in enumerate(ims):
            sheet.paste(im, (label_w + c * w, r * h))
    return sheet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="emoji", help="model folder or bundled name (default: emoji)")
    ap.add_argument("--data", required=True, help="the dataset folder written by `pixlm data emoji`")
    ap.add_argument("--scorer", default=None, help="contrastive scorer folder (default: the bundled emoji-clip)")
    ap.add_argument("--train-n", type=int, default=400, help="training pictures sampled for the train row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="score sampling settings on 64 training names first")
    ap.add_argument("--out", default="benchmarks/results/emoji.json")
    ap.add_argument("--sheet", default="", help="write a contact sheet of generations here (PNG)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from pixlm.eval.clip_score import clip_score, embed_images, image_features, load_scorer, pil_to_tensor
    from pixlm.pipeline import load_pipeline

    pipe = load_pipeline(a.model)
    scorer = load_scorer(a.scorer)
    data = Path(a.data)
    options = {k: v for k, v in (("num_inference_steps", a.steps), ("guidance_scale", a.guidance),
                                 ("temperature", a.temperature)) if v is not None}
    report: dict = {"model": str(a.model), "data": str(data), "sampling": {**pipe.defaults, **options},
                    "splits": json.loads((data / "splits.json").read_text())["counts"], "torch_threads":
                    torch.get_num_threads()}
    train_images, train_names, _ = load_split(data, "train", a.train_n)
    if a.sweep:
        sweep = []
        sub = train_names[::max(1, len(train_names) // 64)][:64]
        text = scorer.embed_texts(sub)
        for steps in (8, 12):
            for guidance in (1.5, 3.0, 5.0):
                for temperature in (0.5, 1.0):
                    opts = {"num_inference_steps": steps, "guidance_scale": guidance, "temperature": temperature}
                    emb = embed_images(scorer, pil_to_tensor(generate(pipe, sub, a.seed + 7, **opts)))
                    sweep.append({**opts, "clip_score": clip_score(emb, text)})
                    print(sweep[-1], flush=True)
        report["sweep_on_train_names"] = sweep
    train_feats = image_features(scorer, train_images)
    report["train"], _ = evaluate_split(pipe, scorer, train_images, train_names, None, a.seed, options)
    for split in ("test_emoji", "test_variant"):
        images, names, _ = load_split(data, split)
        report[split], _ = evaluate_split(pipe, scorer, images, names, train_feats, a.seed, options)
        print(split, json.dumps(report[split]), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {a.out}")
    if a.sheet:
        rows = [(p, pipe(p, num_images_per_prompt=6, seed=a.seed, **options)) for p in SHEET_PROMPTS]
        test_images, test_names, _ = load_split(data, "test_emoji", 6)
        for name in test_names:  # held-out emoji: names the generator never saw with their pictures
            rows.append((f"{name} (held out)", pipe(name, num_images_per_prompt=6, seed=a.seed, **options)))
        Path(a.sheet).parent.mkdir(parents=True, exist_ok=True)
        label_sheet(rows).save(a.sheet, optimize=True)
        print(f"wrote {a.sheet}")


if __name__ == "__main__":
    main()
