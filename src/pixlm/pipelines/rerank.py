"""Best-of-N generation: draw N candidates per prompt, judge each against the prompt, keep the best.

The prompt is read into a spec (:func:`pixlm.data.free_wording.parse_free_prompt`); a candidate is judged by the
geometric reader (:func:`pixlm.data.geometric.read_scene`) and, when the model has a captioner, by its detailed
caption parsed back into objects. The score counts full matches first, partial matches second::

    score = 2·[geometric reading satisfies spec] + [caption satisfies spec]
            + partial(geometric) + ½·partial(caption)

where ``partial`` is the best fraction of stated attributes, relations and the object count that some
assignment of spec objects to found objects meets. Ties go to the earlier candidate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import permutations
from typing import TYPE_CHECKING

from PIL import Image

from pixlm.data.detailed import parse_detailed
from pixlm.data.shapes import relation_holds, satisfies
from pixlm.data.free_wording import parse_free_prompt
from pixlm.data.specs import SpecError
from pixlm.pipelines.common import PipelineOutput, check_number, check_prompts

if TYPE_CHECKING:
    from pixlm.pipelines.text_to_image import TextToImagePipeline

MAX_CANDIDATES = 16


@dataclass
class RerankOutput(PipelineOutput):
    """``PipelineOutput`` of the chosen images plus every candidate's score and which one won."""

    scores: list[list[float]] = field(default_factory=list)  # per output image: its N candidates' scores
    chosen: list[int] = field(default_factory=list)  # per output image: index of the winning candidate


def partial_match(objects: list[dict], spec: dict) -> float:
    """Best fraction (0–1) of the spec's attribute checks, relations and object count met by one assignment."""
    want = spec.get("objects", [])
    rels = spec.get("relations", [])
    total = sum(len(w) for w in want) + len(rels) + 1
    count_ok = int(len(objects) == len(want) if spec.get("exact", True) else len(objects) >= len(want))
    slots = list(range(len(objects))) + [None] * max(0, len(want) - len(objects))
    best = 0
    for perm in permutations(slots, len(want)):
        hits = sum(sum(objects[j].get(k) == v for k, v in w.items()) for w, j in zip(want, perm) if j is not None)
        hits += sum(perm[i] is not None and perm[j] is not None and relation_holds(objects[perm[i]], r, objects[perm[j]])
                    for i, r, j in rels)
        best = max(best, hits)
    return (best + count_ok) / total


def score_candidate(image: Image.Image, spec: dict, caption: str | None = None) -> float:
    """The rerank score of one picture against a spec (see the module docstring)."""
    from pixlm.data.geometric import read_scene

    found = read_scene(image)
    score = 2.0 * satisfies(found, spec) + partial_match(found, spec)
    if caption is not None:
        try:
            objs = parse_detailed(caption)
        except SpecError:
            return score
        score += float(satisfies(objs, spec)) + 0.5 * partial_match(objs, spec)
    return score


def generate_reranked(pipe: TextToImagePipeline, prompt: str | list[str], candidates: int = 4,
                      num_images_per_prompt: int = 1, seed: int | None = None, use_captioner: bool = True,
                      **generate_options) -> RerankOutput:
    """Like ``pipe.generate`` but each image is the best of ``candidates`` samples judged against its prompt.

    Every prompt must be readable in the shapes-world grammar (``parse_free_prompt``: canonical captions and free
    wording such as "draw me a big azure box"), or a ``SpecError`` names it. The
    captioner joins the judging when the model has one and ``use_captioner``. All candidates are drawn in one
    batch, so N candidates cost about N images of sampling plus the judging.
    """
    check_number(candidates, "candidates", 1, MAX_CANDIDATES, integer=True)
    prompts = check_prompts(prompt)
    specs = []
    for p in prompts:
        try:
            specs.append(parse_free_prompt(p))
        except SpecError as e:
            raise SpecError(f"rerank judges a picture against its prompt, so the prompt must be in the shapes "
                            f"grammar: {e}") from None
    out = pipe.generate(prompts, num_images_per_prompt=num_images_per_prompt * candidates, seed=seed,
                        **generate_options)
    t0 = time.perf_counter()
    captions = None
    if use_captioner and pipe.has_captioner():
        captions = pipe.caption(out.images, detailed=True)
    k = num_images_per_prompt * candidates
    picks, all_scores = [], []
    for pi, spec in enumerate(specs):
        for m in range(num_images_per_prompt):
            idx = [pi * k + m * candidates + c for c in range(candidates)]
            scores = [score_candidate(out.images[i], spec, captions[i] if captions else None) for i in idx]
            best = max(range(candidates), key=lambda c: (scores[c], -c))
            picks.append(idx[best])
            all_scores.append(scores)
    timings = dict(out.timings_ms, rerank_ms=(time.perf_counter() - t0) * 1e3)
    return RerankOutput([out.images[i] for i in picks], [out.prompts[i] for i in picks], out.tokens[picks],
                        timings_ms=timings, scores=all_scores,
                        chosen=[i % candidates for i in picks])


__all__ = ["RerankOutput", "generate_reranked", "score_candidate", "partial_match"]
