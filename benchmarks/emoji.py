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

``--sweep`` first scores a grid of sampling settings (``--sweep-grid``) by CLIP-score on ``--sweep-n`` training
names (never the test splits); ``--sweep-only`` stops there.

``--captions`` measures the model's captioner instead (written to ``--captions-out``)::

    python benchmarks/emoji.py --captions --model emoji --data runs/emoji/data --threads 1

per split: corpus BLEU-4 and CIDEr of greedy captions against all of each picture's captions (with two
yardsticks: one reference against the others, and the first caption of the nearest training picture by the
scorer's image embedding); how often the caption's first clause is the picture's name, and its skin tone the
picture's; text → image retrieval with the generated captions as queries next to the same with the names
("captioner agreement": does the scorer find the picture from its caption); and for pictures generated
from the split's names, the caption of each generated picture against its prompt (CLIP-score of the picture with
the caption and with the prompt, BLEU-4/CIDEr against the prompt, caption → prompt retrieval by text embedding).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

SHEET_PROMPTS = ["a beach with palm trees", "cat face", "red apple", "pizza", "rocket", "snowman",
                 "smiling face with heart-eyes", "thumbs up, dark skin tone", "rainbow", "a yellow school bus"]


def load_split(data: Path, split: str, limit: int = 0, style: str = "") -> tuple[torch.Tensor, list[str], list[str]]:
    """Distinct pictures of a split (file order), each with its first caption (the name): images, names, files.
    ``style``: only that style's pictures (rows whose metadata ``style`` is it)."""
    from pixlm.data.folder import ImageFolder

    ds = ImageFolder(data / split)
    styles = {}
    if style:
        for line in (data / split / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            styles[row["file_name"]] = row.get("style")
        if style not in set(styles.values()):
            raise SystemExit(f"--style {style!r}: {data / split} has no pictures of that style "
                             f"(it has {sorted({str(v) for v in styles.values()})})")
    first: dict[str, int] = {}
    for i, r in enumerate(ds.rows):
        if not style or styles.get(r.file_name) == style:
            first.setdefault(r.file_name, i)
    idx = list(first.values())
    if limit and len(idx) > limit:  # an even spread over the hexcode order, not the first N
        idx = [idx[int(k)] for k in np.linspace(0, len(idx) - 1, limit)]
    return (torch.stack([ds[i]["image"] for i in idx]), [ds.rows[i].text for i in idx],
            [ds.rows[i].file_name for i in idx])


CALL_OPTIONS = ("num_inference_steps", "guidance_scale", "temperature")  # the rest are pipeline defaults
SWEEP_GRID = "num_inference_steps=8,12;guidance_scale=1.5,3,5;temperature=0.5,1"


def sweep_grid(text: str) -> list[dict]:
    """``"key=v1,v2;key2=..."`` → every combination as a dict; ``none`` stands for None (e.g. revise_margin)."""
    axes = []
    for part in text.split(";"):
        key, values = part.split("=")
        cast = int if key == "num_inference_steps" else float
        axes.append([(key, None if v == "none" else cast(v)) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def generate(pipe, prompts: list[str], seed: int, batch: int = 64, **options) -> list[Image.Image]:
    images: list[Image.Image] = []
    for i in range(0, len(prompts), batch):
        images += pipe.generate(prompts[i:i + batch], seed=seed + i, **options).images
    return images


def evaluate_split(pipe, scorer, images: torch.Tensor, names: list[str], train_feats: np.ndarray | None,
                   seed: int, options: dict, style: str = "") -> tuple[dict, torch.Tensor]:
    """Scores of one split (see the module docstring) and the generated pictures. ``style``: each picture is drawn
    from "NAME, STYLE style" (the scorer's query stays the name)."""
    from pixlm.eval.clip_score import clip_score, embed_images, image_features, pil_to_tensor, retrieval
    from pixlm.eval.fid import frechet_distance
    from pixlm.eval.nearest import make_prompt
    from pixlm.train.common import psnr

    with torch.no_grad():
        recon = torch.cat([pipe.vq.decode(pipe.vq.encode(images[i:i + 128])) for i in range(0, len(images), 128)])
    t0 = time.perf_counter()
    prompts = [make_prompt(n, style or None) for n in names]
    gen = pil_to_tensor(generate(pipe, prompts, seed, **options))
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


def load_references(data: Path, split: str, files: list[str]) -> list[list[str]]:
    """Every caption of each picture in ``files`` (a split has several rows per picture)."""
    from pixlm.data.folder import ImageFolder

    ds = ImageFolder(data / split)
    by_file = {ds.rows[g[0]].file_name: [ds.rows[i].text for i in g] for g in ds.pictures()}
    return [by_file[f] for f in files]


def caption_images(pipe, images: torch.Tensor, batch: int = 256) -> list[str]:
    """Greedy free captions of (B, 3, 64, 64) pictures in [-1, 1] by the pipeline's captioner."""
    from pixlm.sampling.captioning import caption_tokens

    cap = pipe.get_captioner()
    out: list[str] = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out += caption_tokens(cap, pipe.vq.encode(images[i:i + batch]))
    return out


TONE = re.compile(r"\b(medium light|medium dark|medium|light|dark) skin tone")  # longer names first


def name_and_tone(text: str) -> tuple[str, str | None]:
    """A caption's first clause (the emoji's name, punctuation dropped) and the skin tone it names, if any."""
    from pixlm.models.captioner import join_words, split_words

    words = join_words(split_words(text))
    tone = TONE.search(words)
    return words.split(",")[0].strip(), tone.group(1) if tone else None


def name_scores(texts: list[str], names: list[str]) -> dict:
    """Fraction of captions whose first clause is the picture's name, and of toned pictures whose tone is right."""
    got, want = [name_and_tone(t) for t in texts], [name_and_tone(n) for n in names]
    toned = [(g[1], w[1]) for g, w in zip(got, want) if w[1]]
    return {"name_exact": sum(g[0] == w[0] for g, w in zip(got, want)) / len(texts),
            "skin_tone_right": sum(a == b for a, b in toned) / len(toned) if toned else None, "n_toned": len(toned)}


def evaluate_captions(pipe, scorer, images: torch.Tensor, names: list[str], files: list[str], refs: list[list[str]],
                      neighbours: tuple[torch.Tensor, list[str], list[str]], seed: int, options: dict) -> dict:
    """Captioning scores of one split (see the module docstring)."""
    from pixlm.eval.caption_metrics import cider, corpus_bleu
    from pixlm.eval.clip_score import clip_score, embed_images, pil_to_tensor, retrieval

    t0 = time.perf_counter()
    texts = caption_images(pipe, images)
    ms = (time.perf_counter() - t0) * 1e3 / len(images)
    img_emb = embed_images(scorer, images)
    cap_emb, name_emb = scorer.embed_texts(texts), scorer.embed_texts(names)
    train_emb, train_names, train_files = neighbours
    sims = img_emb @ train_emb.T
    column = {f: j for j, f in enumerate(train_files)}
    for i, f in enumerate(files):  # the train row: a picture may not borrow its own caption
        if f in column:
            sims[i, column[f]] = -2.0
    nearest = [train_names[int(j)] for j in sims.argmax(1)]
    multi = [r for r in refs if len(r) > 1]
    out = {"n": len(texts), "ms_per_image": ms,
           "bleu4": corpus_bleu(texts, refs), "cider": cider(texts, refs),
           "reference_vs_references": {"n": len(multi), "bleu4": corpus_bleu([r[0] for r in multi],
                                                                             [r[1:] for r in multi]),
                                       "cider": cider([r[0] for r in multi], [r[1:] for r in multi])},
           "nearest_train_picture": {"bleu4": corpus_bleu(nearest, refs), "cider": cider(nearest, refs)},
           "retrieval_captions": retrieval(cap_emb, img_emb), "retrieval_names": retrieval(name_emb, img_emb),
           "clip_score_captions": clip_score(img_emb, cap_emb), "clip_score_names": clip_score(img_emb, name_emb),
           **name_scores(texts, names), "empty_captions": sum(not t.strip() for t in texts) / len(texts),
           "distinct_captions": len(set(texts)) / len(texts)}
    gen_images = generate(pipe, names, seed, **options)  # same seeds as the generation scores
    gen = pil_to_tensor(gen_images)
    gen_texts = caption_images(pipe, gen)
    gen_emb, gen_cap_emb = embed_images(scorer, gen), scorer.embed_texts(gen_texts)
    out["generated"] = {"clip_score_caption": clip_score(gen_emb, gen_cap_emb),
                        "clip_score_prompt": clip_score(gen_emb, name_emb),
                        "bleu4_vs_prompt": corpus_bleu(gen_texts, [[n] for n in names]),
                        "cider_vs_prompt": cider(gen_texts, [[n] for n in names]),
                        "bleu4_vs_references": corpus_bleu(gen_texts, refs), **name_scores(gen_texts, names),
                        "caption_to_prompt_retrieval": retrieval(gen_cap_emb, name_emb)}
    out["examples"] = [{"name": n, "caption": t, "caption_of_generated": g}
                       for n, t, g in list(zip(names, texts, gen_texts))[:: max(1, len(names) // 8)][:8]]
    return out


def captions_report(pipe, scorer, data: Path, train_n: int, seed: int, options: dict) -> dict:
    """``--captions``: the captioner's scores on a train sample and both held-out splits."""
    from pixlm.eval.clip_score import embed_images

    cap = pipe.get_captioner()
    all_images, all_names, all_files = load_split(data, "train")
    neighbours = (embed_images(scorer, all_images), all_names, all_files)
    report: dict = {"params": sum(p.numel() for p in cap.parameters()), "vocab": len(cap.config.vocab),
                    "decoding": "greedy, free captions"}
    for split in ("train", "test_variant", "test_emoji"):
        images, names, files = load_split(data, split, train_n if split == "train" else 0)
        refs = load_references(data, split, files)
        report[split] = evaluate_captions(pipe, scorer, images, names, files, refs, neighbours, seed, options)
        print(split, json.dumps({k: v for k, v in report[split].items() if k != "examples"}), flush=True)
    return report


def write_report(report: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


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
    ap.add_argument("--sweep", action="store_true", help="score sampling settings on training names first")
    ap.add_argument("--sweep-grid", default=SWEEP_GRID, help="settings to sweep: key=v1,v2;key2=... (none = None)")
    ap.add_argument("--sweep-n", type=int, default=64, help="training names the sweep scores")
    ap.add_argument("--sweep-only", action="store_true", help="stop after the sweep (written to --out)")
    ap.add_argument("--out", default="benchmarks/results/emoji.json")
    ap.add_argument("--sheet", default="", help="write a contact sheet of generations here (PNG)")
    ap.add_argument("--captions", action="store_true", help="measure the model's captioner instead (see above)")
    ap.add_argument("--captions-out", default="benchmarks/results/emoji_captions.json")
    ap.add_argument("--style", default="", help="one style only (e.g. noto): its pictures of each split, drawn from "
                    "\"NAME, STYLE style\"; a one-style yardstick such as the bundled scorer's (generation scores)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from pixlm.eval.clip_score import clip_score, embed_images, image_features, load_scorer, pil_to_tensor
    from pixlm.pipelines.text_to_image import load_pipeline

    pipe = load_pipeline(a.model)
    scorer = load_scorer(a.scorer)
    data = Path(a.data)
    options = {k: v for k, v in (("num_inference_steps", a.steps), ("guidance_scale", a.guidance),
                                 ("temperature", a.temperature)) if v is not None}
    report: dict = {"model": str(a.model), "data": str(data), "style": a.style or None,
                    "scorer": a.scorer or "bundled emoji-clip", "sampling": {**pipe.defaults, **options},
                    "splits": json.loads((data / "splits.json").read_text())["counts"], "torch_threads":
                    torch.get_num_threads()}
    if a.captions:
        report.update(captions_report(pipe, scorer, data, a.train_n, a.seed, options))
        write_report(report, a.captions_out)
        return
    train_images, train_names, _ = load_split(data, "train", a.train_n, a.style)
    if a.sweep:
        sweep = []
        sub = train_names[::max(1, len(train_names) // a.sweep_n)][:a.sweep_n]
        text = scorer.embed_texts(sub)
        saved = dict(pipe.defaults)
        for opts in sweep_grid(a.sweep_grid):
            call = {k: v for k, v in opts.items() if k in CALL_OPTIONS}
            pipe.defaults.update({k: v for k, v in opts.items() if k not in CALL_OPTIONS})
            emb = embed_images(scorer, pil_to_tensor(generate(pipe, sub, a.seed + 7, **call)))
            sweep.append({**opts, "clip_score": clip_score(emb, text)})
            print(sweep[-1], flush=True)
        pipe.defaults = saved
        report["sweep_on_train_names"] = sweep
        if a.sweep_only:
            write_report(report, a.out)
            return
    train_feats = image_features(scorer, train_images)
    report["train"], _ = evaluate_split(pipe, scorer, train_images, train_names, None, a.seed, options, a.style)
    for split in ("test_emoji", "test_variant"):
        images, names, _ = load_split(data, split, style=a.style)
        report[split], _ = evaluate_split(pipe, scorer, images, names, train_feats, a.seed, options, a.style)
        print(split, json.dumps(report[split]), flush=True)
    write_report(report, a.out)
    if a.sheet:
        rows = [(p, pipe.generate(p, num_images_per_prompt=6, seed=a.seed, **options).images) for p in SHEET_PROMPTS]
        test_images, test_names, _ = load_split(data, "test_emoji", 6)
        for name in test_names:  # held-out emoji: names the generator never saw with their pictures
            images = pipe.generate(name, num_images_per_prompt=6, seed=a.seed, **options).images
            rows.append((f"{name} (held out)", images))
        Path(a.sheet).parent.mkdir(parents=True, exist_ok=True)
        label_sheet(rows).save(a.sheet, optimize=True)
        print(f"wrote {a.sheet}")


if __name__ == "__main__":
    main()
