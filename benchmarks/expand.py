"""Does prompt expansion help? Loose prompts with known intended scenes, with and without the expander.

    python benchmarks/expand.py [--model DIR] [--expander DIR] [--n 200] [--images-per-prompt 2] \
        [--out benchmarks/results]

Measured on ``data.loose.loose_prompt_set`` (a seed the expander's training stream never uses), plus the shipped
paraphrase-robustness set (``assets/paraphrase_prompts.jsonl``, wording written independently of the training
generator):

- expansion accuracy: the share of prompts whose rewrite parses (``specs.parse_prompt``) to a spec implying the
  intended one (and, for contrast, the share of original prompts that already do);
- compositional accuracy of generated images for the original prompt, the rewrite, and the reference canonical
  caption (an upper bound), judged by ``eval.geometric.read_scene`` + ``shapes.satisfies``, same seeds;
- the added latency: expansion at batch 1 per prompt, next to one whole generation at batch 1.

Writes ``expand.json`` and ``expand.md`` to ``--out``. Not a test: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch


def image_accuracy(pipe, prompts: list[str], specs: list[list[dict]], k: int, seed: int, steps: int | None,
                   batch: int = 32) -> list[float]:
    """Per prompt: the share of its ``k`` images (seeds ``seed``…) satisfying any of its specs."""
    from pixlm.data.shapes import satisfies
    from pixlm.data.geometric import read_scene

    scores = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        images = pipe.generate(chunk, num_images_per_prompt=k, num_inference_steps=steps, seed=seed + i).images
        for j, sp in enumerate(specs[i:i + batch]):
            objs = [read_scene(im) for im in images[j * k:(j + 1) * k]]
            scores.append(sum(any(satisfies(o, s) for s in sp) for o in objs) / k)
    return scores


def expand_timed(expander, prompts: list[str]) -> tuple[list[str], list[float], int]:
    """Rewrites one prompt at a time (batch 1, as a user would call it): outputs, ms each, fallbacks."""
    outs, ms = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for p in prompts:
            t = time.perf_counter()
            outs.append(expander.expand(p))
            ms.append((time.perf_counter() - t) * 1e3)
    return outs, ms, sum("keeping" in str(w.message) for w in caught)


def seen_in_training(prompts: list[str], train_config: Path) -> set[str] | None:
    """Those of ``prompts`` that the expander's training stream (regenerated from its config) holds verbatim."""
    if not train_config.is_file():
        return None
    from pixlm.train.expander import ExpanderTrainConfig, pair_batch

    raw = json.loads(train_config.read_text())
    cfg = ExpanderTrainConfig(**{k: v for k, v in raw.items() if k in ExpanderTrainConfig.__dataclass_fields__})
    info = train_config.with_name("model_info.json")
    steps = json.loads(info.read_text())["steps_done"] if info.is_file() else cfg.steps
    wanted = set(prompts)
    return {a for s in range(steps) for a, _ in pair_batch(cfg, s) if a in wanted}


def summarize(rows: list[dict], key: str) -> dict[str, float]:
    by: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by[r["category"]].append(r[key])
        by["all"].append(r[key])
    return {c: round(sum(v) / len(v), 4) for c, v in sorted(by.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="pipeline folder (default: the bundled model, else a tiny "
                                                  "random pipeline so the script still runs)")
    ap.add_argument("--expander", default=None, help="expander folder (default: the model's expander/, else "
                                                     "runs/expander/model)")
    ap.add_argument("--train-config", default=None, help="the expander run's train_config.json, to report how "
                                                         "many benchmark prompts training saw verbatim")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None, help="loose-prompt set seed (default loose.BENCHMARK_SEED)")
    ap.add_argument("--images-per-prompt", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from pixlm.data.loose import BENCHMARK_SEED, expansion_correct, loose_prompt_set
    from pixlm.eval.paraphrase import paraphrase_prompts_path
    from pixlm.pipelines.common import bundled_model_path
    from pixlm.pipelines.text_to_image import load_pipeline
    from pixlm.text.expander import load_expander_dir

    if a.model is None:
        try:
            model_path: Path | None = bundled_model_path()
        except ValueError:
            model_path = None
    else:
        model_path = Path(a.model)
    if model_path is not None:
        pipe, model_name = load_pipeline(model_path), str(model_path)
    else:
        from pixlm.testing import tiny_pipeline

        pipe, model_name = tiny_pipeline(), "tiny random pipeline (no bundled model installed)"
    exp_path = Path(a.expander) if a.expander else (pipe.expander_path or Path("runs/expander/model"))
    expander = load_expander_dir(exp_path)
    seed = BENCHMARK_SEED if a.seed is None else a.seed

    loose_rows = loose_prompt_set(seed, a.n)
    para_rows = [json.loads(line) for line in paraphrase_prompts_path().read_text().splitlines() if line.strip()]
    sets = {
        "loose": [{"prompt": r["prompt"], "canonical": r["canonical"], "category": r["category"],
                   "specs": r["specs"]} for r in loose_rows],
        "paraphrase": [{"prompt": r["prompt"], "canonical": None, "category": r["kind"], "specs": [r["spec"]]}
                       for r in para_rows],
    }
    result: dict = {"model": model_name, "expander": str(exp_path), "expander_params": None,
                    "loose_set": {"seed": seed, "n": len(loose_rows)}, "images_per_prompt": a.images_per_prompt,
                    "threads": a.threads, "cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__}
    if hasattr(expander, "model") and hasattr(expander.model, "num_params"):
        result["expander_params"] = expander.model.num_params()
    tc = Path(a.train_config) if a.train_config else exp_path.parent / "train_config.json"
    seen = seen_in_training([r["prompt"] for r in loose_rows], tc)
    result["loose_set"]["seen_verbatim_in_training"] = None if seen is None else len(seen) / len(loose_rows)

    expander.expand("a red circle")  # first-call overheads are not per-prompt latency
    for name, rows in sets.items():
        outs, ms, fallbacks = expand_timed(expander, [r["prompt"] for r in rows])
        for r, o, t in zip(rows, outs, ms):
            r["expanded"], r["expand_ms"] = o, t
            r["orig_parse_ok"] = float(expansion_correct(r["prompt"], r["specs"]))
            r["expand_ok"] = float(expansion_correct(o, r["specs"]))
        k = a.images_per_prompt
        for key, texts in (("img_orig", [r["prompt"] for r in rows]), ("img_expanded", outs)):
            for r, s in zip(rows, image_accuracy(pipe, texts, [r["specs"] for r in rows], k, 0, a.steps)):
                r[key] = s
        if rows[0]["canonical"] is not None:
            ref = image_accuracy(pipe, [r["canonical"] for r in rows], [r["specs"] for r in rows], k, 0, a.steps)
            for r, s in zip(rows, ref):
                r["img_reference"] = s
        result[name] = {
            "n": len(rows), "fallbacks": fallbacks,
            "expansion_correct": summarize(rows, "expand_ok"),
            **({"expansion_correct_unseen_in_training": summarize([r for r in rows if r["prompt"] not in seen],
                                                                  "expand_ok")["all"]}
               if name == "loose" and seen is not None else {}),
            "original_already_correct": summarize(rows, "orig_parse_ok"),
            "image_accuracy_original": summarize(rows, "img_orig"),
            "image_accuracy_expanded": summarize(rows, "img_expanded"),
            **({"image_accuracy_reference_caption": summarize(rows, "img_reference")}
               if "img_reference" in rows[0] else {}),
            "expand_ms_median": round(statistics.median(ms), 2), "expand_ms_mean": round(statistics.mean(ms), 2),
            "expand_ms_p90": round(sorted(ms)[int(0.9 * len(ms))], 2),
            "examples": [{k2: r[k2] for k2 in ("prompt", "expanded", "canonical", "expand_ok")}
                         for r in random.Random(0).sample(rows, min(12, len(rows)))],
        }
    # Already-canonical prompts (the shipped dev set): expansion should leave their meaning alone.
    from pixlm.data.specs import load_specs

    dev = load_specs()
    outs, ms, fallbacks = expand_timed(expander, [r["prompt"] for r in dev])
    dev_rows = [{"category": r["category"], "ok": float(expansion_correct(o, [r["spec"]])),
                 "same": float(o == r["prompt"])} for r, o in zip(dev, outs)]
    result["dev_canonical"] = {"n": len(dev), "fallbacks": fallbacks,
                               "expansion_keeps_meaning": summarize(dev_rows, "ok"),
                               "expansion_unchanged_text": summarize(dev_rows, "same")["all"]}
    gen_ms = []
    for r in sets["loose"][:20]:
        t = time.perf_counter()
        pipe.generate(r["prompt"], seed=0, num_inference_steps=a.steps)
        gen_ms.append((time.perf_counter() - t) * 1e3)
    result["generate_ms_bs1_median"] = round(statistics.median(gen_ms), 2)
    result["added_latency_fraction"] = round(result["loose"]["expand_ms_median"] / result["generate_ms_bs1_median"],
                                             4)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "expand.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "expand.md").write_text(markdown(result))
    (out / "expand_rows.jsonl").write_text("".join(json.dumps({"set": n, **r}) + "\n"
                                                   for n, rows in sets.items() for r in rows))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = ["# Prompt expansion benchmark\n", f"model: `{r['model']}`  ", f"expander: `{r['expander']}` "
             f"({r['expander_params']} parameters)  ",
             f"loose set: seed {r['loose_set']['seed']}, {r['loose_set']['n']} prompts, "
             f"seen verbatim in training: {r['loose_set']['seen_verbatim_in_training']}  ",
             f"images per prompt: {r['images_per_prompt']}; threads: {r['threads']}\n"]
    for name in ("loose", "paraphrase"):
        s = r[name]
        cats = list(s["expansion_correct"])
        lines += [f"## {name} prompts (n={s['n']}, fallbacks to the original: {s['fallbacks']})\n",
                  "| category | original parses right | expansion right | image acc. original | "
                  "image acc. expanded |" + (" image acc. reference |" if "image_accuracy_reference_caption" in s
                                             else ""),
                  "|---|---|---|---|---|" + ("---|" if "image_accuracy_reference_caption" in s else "")]
        for c in cats:
            row = (f"| {c} | {s['original_already_correct'][c]:.3f} | {s['expansion_correct'][c]:.3f} | "
                   f"{s['image_accuracy_original'][c]:.3f} | {s['image_accuracy_expanded'][c]:.3f} |")
            if "image_accuracy_reference_caption" in s:
                row += f" {s['image_accuracy_reference_caption'][c]:.3f} |"
            lines.append(row)
        if "expansion_correct_unseen_in_training" in s:
            lines += ["", "expansion right on the prompts training never saw verbatim: "
                          f"{s['expansion_correct_unseen_in_training']:.3f}"]
        lines += ["", f"expansion latency (batch 1): median {s['expand_ms_median']} ms, p90 {s['expand_ms_p90']} ms",
                  ""]
    d = r["dev_canonical"]
    lines += [f"## already-canonical dev prompts (n={d['n']})\n",
              f"expansion keeps the meaning of {d['expansion_keeps_meaning']['all']:.3f} of them "
              f"(text unchanged: {d['expansion_unchanged_text']:.3f}); per category: "
              + ", ".join(f"{c} {v:.3f}" for c, v in d["expansion_keeps_meaning"].items() if c != "all") + "\n"]
    lines.append(f"one generation at batch 1: median {r['generate_ms_bs1_median']} ms; expansion adds "
                 f"{100 * r['added_latency_fraction']:.1f}%\n")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
