"""Captioning quality on held-out shapes renders (a seed no training run uses).

    python benchmarks/captioning.py [--model DIR | --captioner DIR --tokenizer DIR] [--n 500] [--out benchmarks/results]

Detailed mode: the caption is parsed back into objects (``data.detailed.parse_detailed``) and must equal the true
scene exactly; also per-object accuracy and the parse-failure rate, for greedy and beam decoding. Free mode:
corpus BLEU-4 and a CIDEr-D-style score against 5 reference captions per picture drawn from ``shapes.caption``
(the same distribution the captioner learned), plus "faithfulness": the free caption, parsed as a prompt spec,
is satisfied by the true scene. Generated (``--generated N``): the model's own pictures from captions of random
scenes (a held-out seed), drawn at the pipeline's defaults; the detailed caption must equal the reading of
``pixlm eval``'s combined judge (learned reader, the geometric one where it is unsure), and the free caption must be
satisfied by it; ``colour_swaps`` counts free captions that give a drawn shape the colour of another object
(``swaps_colours``). Agreement with the geometric reader alone is reported beside it: on generated
pictures it misreads more (small squares with rounded corners read as circles). Writes ``captioning.json``
(``--name``). Not a test: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import torch


def swaps_colours(objects: list[dict], spec: dict) -> bool:
    """Whether a caption (``spec``, parsed) names a colour with a shape that the picture (``objects``) draws in
    another colour while that colour sits on another shape: "a red circle" for a blue circle beside a red square."""
    for o in spec["objects"]:
        c, s = o.get("color"), o.get("shape")
        if c and s and not any(x["color"] == c and x["shape"] == s for x in objects) \
                and any(x["shape"] == s for x in objects) and any(x["color"] == c for x in objects):
            return True
    return False

BENCH_SEED = 20261128  # held out: the captioner's pool, vocabulary and training-time eval use other seeds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder with captioner/ (default: the bundled one)")
    ap.add_argument("--captioner", default=None, help="a captioner folder, with --tokenizer, instead of --model")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--generated", type=int, default=300, help="also caption this many of the generator's own "
                    "pictures and compare with the judge (0 = skip)")
    ap.add_argument("--generated-from", default=None, help="the pipeline that draws them (default: --model)")
    ap.add_argument("--seed", type=int, default=BENCH_SEED, help="draws the scenes and the generator's seeds (default: "
                    "the benchmark's held-out seed; another value gives a fresh set)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default="captioning.json")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from pixlm.data.detailed import parse_detailed, same_scene
    from pixlm.data.shapes import caption, random_scene, satisfies
    from pixlm.data.specs import SpecError, parse_prompt
    from pixlm.eval.caption_metrics import cider, corpus_bleu
    from pixlm.models.captioner import Captioner
    from pixlm.models.vq import VQModel
    from pixlm.sampling.captioning import caption_tokens
    from pixlm.train.common import encode_scenes

    if a.captioner:
        cap, vq, source = Captioner.from_pretrained(a.captioner), VQModel.from_pretrained(a.tokenizer), a.captioner
    else:
        from pixlm.pipelines.common import bundled_model_path
        from pixlm.pipelines.text_to_image import load_pipeline

        pipe = load_pipeline(a.model)
        cap, vq = pipe.get_captioner(), pipe.vq
        source = str(a.model or bundled_model_path())
    rng = random.Random(a.seed)
    scenes = [random_scene(rng) for _ in range(a.n)]
    refs = [[caption(s, rng) for _ in range(5)] for s in scenes]
    tokens = encode_scenes(vq, scenes)
    result: dict = {"model": source, "n_images": a.n, "seed": a.seed,
                    "params": sum(p.numel() for p in cap.parameters()), "torch_threads": torch.get_num_threads(),
                    "machine": platform.processor() or platform.machine()}

    def batched(**kw) -> tuple[list[str], float]:
        t0 = time.perf_counter()
        out = []
        for i in range(0, a.n, 100):
            out += caption_tokens(cap, tokens[i:i + 100].long(), **kw)
        return out, (time.perf_counter() - t0) * 1e3 / a.n

    for method, kw in (("greedy", {}), ("beam", {"num_beams": a.beams})):
        texts, ms = batched(detailed=True, method=method, **kw)
        exact = objects_ok = objects_total = failures = 0
        wrong = []
        for text, s in zip(texts, scenes):
            truth = s.to_dicts()
            objects_total += len(truth)
            try:
                got = parse_detailed(text)
            except SpecError:
                failures += 1
                wrong.append({"caption": text, "truth": truth})
                continue
            ok = same_scene(got, truth)
            exact += ok
            key = lambda o: tuple(sorted(o.items()))  # noqa: E731
            objects_ok += len({key(o) for o in got} & {key(o) for o in truth})
            if not ok:
                wrong.append({"caption": text, "truth": truth})
        result[f"detailed_{method}"] = {"exact_scene_accuracy": exact / a.n, "object_accuracy": objects_ok /
                                        objects_total, "parse_failures": failures / a.n, "ms_per_image": ms,
                                        "examples_wrong": wrong[:5]}
    for method, kw in (("greedy", {}), ("beam", {"num_beams": a.beams})):
        texts, ms = batched(detailed=False, method=method, **kw)
        faithful = swapped = 0
        for text, s in zip(texts, scenes):
            try:
                spec = parse_prompt(text)
                faithful += satisfies(s.to_dicts(), spec)
                swapped += swaps_colours(s.to_dicts(), spec)
            except SpecError:
                pass
        result[f"free_{method}"] = {"bleu4": corpus_bleu(texts, refs), "cider": cider(texts, refs),
                                    "faithful": faithful / a.n, "colour_swaps": swapped / a.n, "ms_per_image": ms,
                                    "examples": texts[:5]}
    if a.generated:  # the generator's own pictures: does the captioner say what the judge sees?
        from pixlm.eval.judge import default_judge
        from pixlm.pipelines.text_to_image import load_pipeline

        judge = default_judge()  # pixlm eval's combined judge; its geometric reader alone is reported too
        gen_pipe = load_pipeline(a.generated_from or a.model)
        grng = random.Random(a.seed + 1)
        agree = agree_geo = faithful = failures = swapped = 0
        wrong = []
        for start in range(0, a.generated, 50):
            prompts = [caption(random_scene(grng), grng) for _ in range(min(50, a.generated - start))]
            out = gen_pipe.generate(prompts, seed=a.seed + start)
            readings = judge.read_many(out.images)  # the decoded tokens
            detailed = caption_tokens(cap, out.tokens.flatten(1).long(), detailed=True)
            free = caption_tokens(cap, out.tokens.flatten(1).long())
            for d, f, reading, prompt in zip(detailed, free, readings, out.prompts):
                try:
                    said = parse_detailed(d)
                    ok, ok_geo = same_scene(said, reading.objects), same_scene(said, reading.geometric)
                except SpecError:
                    ok, ok_geo, failures = False, False, failures + 1
                agree += ok
                agree_geo += ok_geo
                try:
                    spec = parse_prompt(f)
                    faithful += satisfies(reading.objects, spec)
                    swapped += swaps_colours(reading.objects, spec)
                except SpecError:
                    pass
                if not ok and len(wrong) < 5:
                    wrong.append({"prompt": prompt, "caption": d, "judge": reading.objects})
        result["generated"] = {"n": a.generated, "from": str(a.generated_from or a.model or "bundled"),
                               "detailed_agrees_with_judge": agree / a.generated,
                               "detailed_agrees_with_geometric_reader": agree_geo / a.generated,
                               "free_caption_faithful_to_judge": faithful / a.generated,
                               "free_caption_colour_swaps": swapped / a.generated,
                               "parse_failures": failures / a.generated, "examples_wrong": wrong}
    # what one reference scores against the other four: the ceiling set by the captions' own variety
    held, rest = [r[0] for r in refs], [r[1:] for r in refs]
    result["free_reference_vs_references"] = {"bleu4": corpus_bleu(held, rest), "cider": cider(held, rest)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / a.name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)} |
                     {k: {m: x for m, x in v.items() if not isinstance(x, list)} for k, v in result.items()
                      if isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
