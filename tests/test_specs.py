"""Prompt specs: satisfies semantics, the dev set generator, the shipped file and its loader."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from pixlm.cli import app
from pixlm.data.shapes import Scene, render, satisfies
from pixlm.data.specs import (
    CATEGORIES,
    SpecError,
    dev_prompts_path,
    load_specs,
    make_dev_set,
    parse_prompt,
    validate_spec,
    write_specs,
)
from pixlm.data.geometric import read_scene


def obj(shape: str, color: str = "red", size: str = "large", row: int = 0, col: int = 0) -> dict:
    return {"shape": shape, "color": color, "size": size, "row": row, "col": col}


SCENE = [obj("circle", "red", "large", 0, 0), obj("square", "blue", "small", 2, 1)]


def test_satisfies_attributes_and_exactness() -> None:
    assert satisfies(SCENE, {"objects": [{"shape": "circle"}, {"shape": "square"}]})
    assert satisfies(SCENE, {"objects": [{"shape": "square", "color": "blue", "row": 2, "col": 1}, {}]})
    assert not satisfies(SCENE, {"objects": [{"shape": "circle"}]})  # exact by default: the square is extra
    assert satisfies(SCENE, {"objects": [{"shape": "circle"}], "exact": False})
    assert not satisfies(SCENE, {"objects": [{"shape": "circle", "color": "blue"}, {"shape": "square"}]})
    assert not satisfies(SCENE, {"objects": [{"shape": "circle", "size": "small"}, {"shape": "square"}]})


def test_satisfies_is_one_to_one() -> None:
    one_circle = {"objects": [{"shape": "circle"}, {"shape": "circle"}], "exact": False}
    assert not satisfies(SCENE, one_circle)  # one circle cannot stand for two
    assert satisfies(SCENE + [obj("circle", "green", row=1, col=1)], one_circle)
    assert not satisfies(SCENE, {"objects": [{}, {}, {}], "exact": False})


def test_satisfies_relations() -> None:
    spec = {"objects": [{"shape": "circle"}, {"shape": "square"}], "relations": [[0, "above", 1]]}
    assert satisfies(SCENE, spec)
    assert satisfies(SCENE, {**spec, "relations": [[0, "left of", 1]]})
    assert not satisfies(SCENE, {**spec, "relations": [[0, "below", 1]]})
    assert not satisfies(SCENE, {**spec, "relations": [[0, "right of", 1]]})
    same_row = [obj("circle", row=1, col=0), obj("square", row=1, col=2)]
    assert not satisfies(same_row, {**spec, "relations": [[0, "above", 1]]})  # strict: same row is not above
    # The assignment must serve attributes and relations at once.
    two = [obj("circle", "red", row=0, col=1), obj("circle", "blue", row=2, col=1)]
    rel = {"objects": [{"shape": "circle"}, {"shape": "circle", "color": "red"}], "relations": [[0, "above", 1]]}
    assert not satisfies(two, rel)
    assert satisfies(two, {**rel, "relations": [[0, "below", 1]]})


def test_parse_prompt_readings() -> None:
    assert parse_prompt("a red circle above a blue square") == {
        "objects": [{"shape": "circle", "color": "red"}, {"shape": "square", "color": "blue"}],
        "relations": [[0, "above", 1]], "exact": True}
    assert parse_prompt("A picture of three small yellow diamonds.")["objects"] == [
        {"shape": "diamond", "color": "yellow", "size": "small"}] * 3
    assert parse_prompt("a big rhombus in the bottom right")["objects"] == [
        {"shape": "diamond", "size": "large", "row": 2, "col": 2}]
    two_over_one = parse_prompt("two red circles above a blue square")
    assert two_over_one["relations"] == [[0, "above", 2], [1, "above", 2]]
    for bad in ["a purple elephant", "two red circle", "a red circle near a square", "two circles in the center"]:
        with pytest.raises(SpecError):
            parse_prompt(bad)


def build_scene(spec: dict) -> Scene | None:
    """Some scene that satisfies ``spec``: fill unstated attributes, try every placement of the objects."""
    defaults = {"shape": "circle", "color": "red", "size": "large"}
    objects = [{**defaults, **o} for o in spec["objects"]]
    cells = [(r, c) for r in range(3) for c in range(3)]
    for placement in itertools.permutations(cells, len(objects)):
        if any("row" in o and (o["row"], o["col"]) != cell for o, cell in zip(objects, placement)):
            continue
        scene = [{**o, "row": r, "col": c} for o, (r, c) in zip(objects, placement)]
        if satisfies(scene, spec):
            return Scene.from_dicts(scene)
    return None


def test_dev_set_categories_and_semantics() -> None:
    rows = make_dev_set(seed=0, n_per_category=20)
    assert Counter(r["category"] for r in rows) == {c: 20 for c in CATEGORIES}
    assert make_dev_set(seed=0, n_per_category=20) == rows and make_dev_set(seed=1, n_per_category=20) != rows
    for row in rows:
        spec, cat, objs = row["spec"], row["category"], row["spec"]["objects"]
        assert validate_spec(spec) == spec and spec["exact"] is True
        assert parse_prompt(row["prompt"]) == spec, row  # the words mean exactly the spec: in-distribution
        if cat in ("single_object", "position"):
            assert len(objs) == 1
        if cat == "position":
            assert {"row", "col", "shape", "color"} <= set(objs[0])
        if cat == "two_objects":
            assert len(objs) == 2 and objs[0]["shape"] != objs[1]["shape"] and all(set(o) == {"shape"} for o in objs)
        if cat == "counting":
            assert 2 <= len(objs) <= 4 and all(o == objs[0] for o in objs)
        if cat == "color_attribution":
            assert len({o["shape"] for o in objs}) == 2 and len({o["color"] for o in objs}) == 2
        if cat == "relation":
            assert len(objs) == 2 and len(spec["relations"]) == 1
        # Satisfiable, and a rendered witness is read back by the checker as satisfying it.
        scene = build_scene(spec)
        assert scene is not None, row
        assert satisfies(read_scene(render(scene)), spec)
        assert not satisfies(read_scene(render(Scene(scene.objects[1:]))), spec)


def test_dev_set_prompts_distinct_where_possible() -> None:
    rows = make_dev_set(seed=0, n_per_category=50)
    for cat in CATEGORIES:
        prompts = [r["prompt"] for r in rows if r["category"] == cat]
        assert len(set(prompts)) == (12 if cat == "two_objects" else 50), cat


def test_shipped_dev_set_is_reproducible(runner, tmp_path: Path) -> None:
    out = tmp_path / "dev.jsonl"
    result = runner.invoke(app, ["data", "specs", "--n-per-category", "50", "--seed", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == dev_prompts_path().read_bytes()
    rows = load_specs()
    assert len(rows) == 300 and rows == make_dev_set(0, 50)


def test_load_specs_roundtrip_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "a circle", "category": "mine", "spec": {"objects": [{"shape": "circle"}]}}\n\n')
    assert load_specs(path) == [{"prompt": "a circle", "category": "mine",
                                 "spec": {"objects": [{"shape": "circle"}], "relations": [], "exact": True}}]
    rows = make_dev_set(3, 2)
    assert load_specs(write_specs(rows, tmp_path / "w.jsonl")) == rows


GOOD = {"objects": [{"shape": "circle"}, {"shape": "square"}], "relations": [[0, "above", 1]]}


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("{not json", r"s.jsonl:2: not valid JSON"),
        ('["a list"]', r":2: expected a JSON object"),
        ({"category": "x", "spec": GOOD}, r":2: 'prompt' must be a non-empty string"),
        ({"prompt": "p", "spec": GOOD}, r":2: 'category' must be a non-empty string"),
        ({"prompt": "p", "category": "x"}, r":2: missing 'spec'"),
        ({"prompt": "p", "category": "x", "spec": {"objects": []}}, r"'objects' must be a non-empty list"),
        ({"prompt": "p", "category": "x", "spec": {"objects": [{"shape": "star"}]}},
         r"shape='star' is not one of \('circle'"),
        ({"prompt": "p", "category": "x", "spec": {"objects": [{"row": 3}]}}, r"row=3 is not one of \(0, 1, 2\)"),
        ({"prompt": "p", "category": "x", "spec": {"objects": [{"hue": "red"}]}}, r"unknown key 'hue'"),
        ({"prompt": "p", "category": "x", "spec": {**GOOD, "relations": [[0, "near", 1]]}}, r"'near' is not one of"),
        ({"prompt": "p", "category": "x", "spec": {**GOOD, "relations": [[0, "above", 2]]}},
         r"index 2 must be an int in \[0, 1\]"),
        ({"prompt": "p", "category": "x", "spec": {**GOOD, "relations": [[1, "above", 1]]}}, r"to itself"),
        ({"prompt": "p", "category": "x", "spec": {**GOOD, "exact": "yes"}}, r"'exact' must be true or false"),
        ({"prompt": "p", "category": "x", "spec": {**GOOD, "count": 2}}, r"unknown spec keys \['count'\]"),
    ],
)
def test_load_specs_errors(tmp_path: Path, row, match: str) -> None:
    path = tmp_path / "s.jsonl"
    good = json.dumps({"prompt": "ok", "category": "x", "spec": GOOD})
    path.write_text(good + "\n" + (row if isinstance(row, str) else json.dumps(row)) + "\n")
    with pytest.raises(SpecError, match=match):
        load_specs(path)


def test_load_specs_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_specs(tmp_path / "none.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(SpecError, match="holds no rows"):
        load_specs(tmp_path / "e.jsonl")
    assert issubclass(SpecError, ValueError)
