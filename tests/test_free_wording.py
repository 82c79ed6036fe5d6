"""Reading freely worded prompts into the caption grammar (``pixlm.data.free_wording``) and the pipeline's use of it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from pixlm.data import loose, phrasing
from pixlm.data.free_wording import canonical_prompt, parse_free_prompt
from pixlm.data.loose import intended_specs, spec_implies
from pixlm.data.specs import SpecError, load_specs, parse_prompt
from pixlm.testing import tiny_pipeline

FREE = Path(__file__).parent / "data" / "free_prompts.tsv"  # prompt \t objects \t relations (hand-written)


def same(a: dict, b: dict) -> bool:
    return spec_implies(a, b) and spec_implies(b, a)


def test_canonical_prompts_read_as_themselves() -> None:
    for row in load_specs():  # the dev set is in the caption grammar already
        assert canonical_prompt(row["prompt"]) == row["prompt"] or same(parse_prompt(canonical_prompt(row["prompt"])),
                                                                           row["spec"])
        assert same(parse_free_prompt(row["prompt"]), row["spec"])


@pytest.mark.parametrize("prompt, want", [
    ("Draw me a big azure box!", "a large blue square"),
    ("a crimson disc along the top edge", "a red circle at the top"),
    ("I want 2 tangerine wedges over a navy block.", "two orange triangles above a blue square"),
    ("in the lower right corner: a rhombus coloured teal", "a cyan diamond in the bottom right"),
    ("one diamond that is orange and huge", "a large orange diamond"),
    ("two shapes: a dot and a triangular one", "a circle and a triangle"),
    ("a green square with a blue triangle to its right", "a blue triangle to the right of a green square"),
    ("a blue circle, and below it a red square", "a red square below a blue circle"),
    ("a purpel trinagle", "a purple triangle"),
])
def test_free_wording_becomes_the_caption_grammar(prompt: str, want: str) -> None:
    assert canonical_prompt(prompt) == want


def test_open_shapes_are_drawn_from_the_rng_and_left_out_of_the_spec() -> None:
    assert parse_free_prompt("an azure thing and a teal one") == {
        "objects": [{"color": "blue"}, {"color": "cyan"}], "relations": [], "exact": True}
    texts = {canonical_prompt("a red thing", random.Random(s)) for s in range(40)}
    assert len(texts) > 1 and all(parse_prompt(t)["objects"][0]["color"] == "red" for t in texts)
    assert canonical_prompt("a red thing", random.Random(5)) == canonical_prompt("a red thing", random.Random(5))


@pytest.mark.parametrize("prompt", ["a photo of a cat", "red", "five circles", "two circles in the top left",
                                    "a circle above a square in the center", ""])
def test_what_cannot_be_read_is_a_spec_error(prompt: str) -> None:
    with pytest.raises(SpecError, match="outside the grammar"):
        canonical_prompt(prompt)


def test_hand_written_phrasings_are_read_right() -> None:
    rows = [line.rstrip("\n").split("\t") for line in FREE.read_text(encoding="utf-8").splitlines() if line]
    wrong = []
    for prompt, objects, relations in rows:
        want = {"objects": json.loads(objects), "relations": json.loads(relations), "exact": True}
        try:
            got = parse_free_prompt(prompt)
        except SpecError as e:
            wrong.append((prompt, str(e)))
            continue
        if not same(got, want):
            wrong.append((prompt, got))
    assert len(rows) >= 50 and len(wrong) <= 1, wrong


@pytest.mark.parametrize("say", [phrasing.say, loose.loose])
def test_training_phrasings_are_read_without_wrong_readings(say) -> None:
    rng = random.Random(123)
    read = wrong = n = 0
    while n < 400:
        intent = phrasing.weak_intent(rng)
        if any(g.counts for p in intent for g in (p.a, p.b) if g):
            continue  # "a few": no single reading
        text, n = say(intent, rng), n + 1
        want = intended_specs(intent)[0]
        try:
            got = parse_free_prompt(text)
        except SpecError:
            continue
        read += 1
        vague = any(g.vague_shape for p in intent for g in (p.a, p.b) if g)
        wrong += not ((spec_implies(want, got) or spec_implies(got, want)) if vague else same(got, want))
    assert read >= 0.97 * n and wrong <= 0.01 * n, (read, wrong)


def test_pipeline_reads_prompts_for_a_shapes_model_and_keeps_the_seed_contract() -> None:
    pipe = tiny_pipeline()
    assert pipe.generate("Draw me a big azure box!", seed=0).revised_prompts == []  # no scene grammar: verbatim
    pipe.defaults["scene_grammar"] = "shapes"
    out = pipe.generate(["Draw me a big azure box!", "a photo of a cat"], seed=0)
    assert out.prompts == ["a large blue square", "a photo of a cat"] and out.revised_prompts == out.prompts
    assert out.timings_ms["expand_ms"] >= 0
    assert pipe.generate("Draw me a big azure box!", seed=0, expand=False).prompts == ["Draw me a big azure box!"]
    canon = pipe.generate("a red circle", seed=0)
    assert canon.revised_prompts == [] and "expand_ms" not in canon.timings_ms
    many = pipe.generate("a red thing and a blue one", num_images_per_prompt=6, seed=10)
    assert len(set(many.prompts)) > 1  # each image draws its open shapes from its own seed
    for i in (0, 3, 5):
        one = pipe.generate("a red thing and a blue one", seed=10 + i)
        assert one.prompts[0] == many.prompts[i] and torch.equal(one.tokens[0], many.tokens[i])


def test_rerank_takes_free_wording() -> None:
    from pixlm.pipelines.rerank import generate_reranked

    pipe = tiny_pipeline()
    pipe.defaults["scene_grammar"] = "shapes"
    out = generate_reranked(pipe, "draw me a crimson disc", candidates=2, seed=0, use_captioner=False)
    assert out.prompts == ["a red circle"] and len(out.images) == 1
    with pytest.raises(SpecError, match="rerank"):
        generate_reranked(pipe, "a photo of a cat", candidates=2, seed=0)


def test_layout_gives_every_object_a_cell_within_the_prompts_positions_and_relations() -> None:
    from pixlm.data.shapes import relation_holds

    assert canonical_prompt("Draw me a big azure box!", random.Random(0), layout=True) == "a large blue square"
    for prompt in ["two red circles above a blue square", "a circle and a square", "four purple squares",
                   "a red dot in the top left and two blue boxes", "a triangle to the right of a pink diamond"]:
        want = parse_free_prompt(prompt)
        cells = set()
        for seed in range(8):
            text = canonical_prompt(prompt, random.Random(seed), layout=True)
            got = parse_prompt(text)
            assert len(got["objects"]) == len(want["objects"]) and got["relations"] == []
            placed = [(o["row"], o["col"]) for o in got["objects"]]
            assert len(set(placed)) == len(placed), text  # a cell each
            for w, o in zip(want["objects"], got["objects"]):
                assert all(o[k] == v for k, v in w.items()), (w, o)  # named attributes and cells kept
            assert all(relation_holds(got["objects"][i], rel, got["objects"][j]) for i, rel, j in want["relations"])
            cells.add(tuple(placed))
        assert len(cells) > 1  # the layout varies with the seed
