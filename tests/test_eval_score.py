"""Score math (Wilson intervals, per-category and overall) and the paraphrase prompt set."""

from __future__ import annotations

import json
import random

import pytest

from pixlm.data.specs import SpecError, load_specs, parse_prompt
from pixlm.eval.fid import sample_scene_for_spec
from pixlm.eval.paraphrase import (CATEGORY, FREE_COLORS, FREE_KINDS, KINDS, make_paraphrase_set,
                                   paraphrase_prompts_path)
from pixlm.eval.score import summarize, verdicts, wilson_interval


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(81, 100) == pytest.approx((0.7222, 0.8749), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(500, 1000)
    assert hi - lo < wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0]  # more data, narrower


@pytest.mark.parametrize("k,n", [(-1, 5), (6, 5), (1, -1)])
def test_wilson_interval_rejects_bad_counts(k: int, n: int) -> None:
    with pytest.raises(ValueError, match=f"successes={k}, n={n}"):
        wilson_interval(k, n)


def test_summarize_per_category_and_overall() -> None:
    oks = [True, True, False, True, False, False, False, False]
    cats = ["a", "a", "a", "a", "b", "b", "b", "b"]
    s = summarize(oks, cats)
    assert s["categories"]["a"]["accuracy"] == 0.75 and s["categories"]["a"]["n"] == 4
    assert s["categories"]["b"]["accuracy"] == 0.0 and s["categories"]["b"]["correct"] == 0
    assert s["categories"]["a"]["ci95"] == pytest.approx(list(wilson_interval(3, 4)))
    assert s["overall"] == 3 / 8 and s["n"] == 8
    assert s["overall_ci95"] == pytest.approx(list(wilson_interval(3, 8)))
    assert s["overall_macro"] == pytest.approx(0.375)
    with pytest.raises(ValueError, match="3 verdicts but 2 categories"):
        summarize([True] * 3, ["a", "b"])


def test_verdicts_follow_spec_semantics() -> None:
    spec = {"objects": [{"shape": "circle", "color": "red"}], "relations": [], "exact": True}
    red = {"shape": "circle", "color": "red", "size": "small", "row": 0, "col": 0}
    blue = {**red, "color": "blue", "col": 1}
    assert verdicts([[red], [blue], [red, blue]], [spec] * 3) == [True, False, False]
    assert verdicts([[red, blue]], [{**spec, "exact": False}]) == [True]


def test_paraphrase_file_matches_generator_and_loads() -> None:
    path = paraphrase_prompts_path()
    shipped = [json.loads(line) for line in path.read_text().splitlines()]
    assert shipped == make_paraphrase_set()
    rows = load_specs(path)
    assert len(rows) == 20 * len(KINDS) + 15 * len(FREE_KINDS) and {r["category"] for r in rows} == {CATEGORY}
    assert len({r["prompt"] for r in rows}) == len(rows)


def test_paraphrases_are_outside_the_caption_grammar_and_satisfiable() -> None:
    rng = random.Random(0)
    rows = make_paraphrase_set(seed=5, n_per_kind=10)
    for r in rows:
        with pytest.raises(SpecError):
            parse_prompt(r["prompt"])
        sample_scene_for_spec(r["spec"], rng)  # raises if unsatisfiable; asserts satisfaction inside
    by_prompt = {r["prompt"]: r["spec"] for r in make_paraphrase_set(n_per_kind=20)}
    # Spot checks of meaning, including a relation said from the other object's side.
    for prompt, spec in by_prompt.items():
        if " under a " in prompt or " beneath a " in prompt:
            assert spec["relations"] and spec["relations"][0][1] in ("above", "below")
    with pytest.raises(ValueError, match="n_per_kind=0"):
        make_paraphrase_set(n_per_kind=0)
    with pytest.raises(ValueError, match="n_free_per_kind=-1"):
        make_paraphrase_set(n_free_per_kind=-1)


def test_free_paraphrases_use_synonyms_that_name_their_spec_colour() -> None:
    rows = [r for r in make_paraphrase_set() if r["kind"].startswith("free_")]
    assert {r["kind"] for r in rows} == set(FREE_KINDS)
    word_to_color = {w: c for c, ws in FREE_COLORS.items() for w in ws}
    assert len(word_to_color) == sum(map(len, FREE_COLORS.values()))  # no word names two colours
    for r in rows:
        words = [w.strip(",.!?") for w in r["prompt"].lower().split()]
        said = [word_to_color[w] for w in words if w in word_to_color]
        assert set(said) == {o["color"] for o in r["spec"]["objects"] if "color" in o}, r
    text = " ".join(r["prompt"] for r in rows)
    for form in ("crimson", "azure", "teal", "amber", "along the top edge", "corner", "draw me", "please make",
                 "coloured", "a pair of", " 2 ", "thing"):
        assert form in text, form
    assert any(r["spec"]["relations"] and len(r["spec"]["objects"]) > 2 for r in rows)  # counts with relations
