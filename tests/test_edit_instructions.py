"""Instruction parsing → target scene, on a table of cases, plus the errors that name what went wrong."""

from __future__ import annotations

import random

import pytest

from pixlm.data.instructions import InstructionError, changed_cells, parse_instruction, plan_edit
from pixlm.data.shapes import satisfies


def obj(shape: str, color: str, size: str, row: int, col: int) -> dict:
    return {"shape": shape, "color": color, "size": size, "row": row, "col": col}


SOURCE = [obj("circle", "red", "large", 0, 0), obj("square", "blue", "small", 2, 1),
          obj("circle", "green", "small", 1, 2)]

# (instruction, target objects, changed cells)
CASES = [
    ("make the red circle blue", [obj("circle", "blue", "large", 0, 0), SOURCE[2], SOURCE[1]], [(0, 0)]),
    ("Make the square large.", [SOURCE[0], SOURCE[2], obj("square", "blue", "large", 2, 1)], [(2, 1)]),
    ("make the circle in the top left small", [obj("circle", "red", "small", 0, 0), SOURCE[2], SOURCE[1]],
     [(0, 0)]),
    ("paint the square yellow", [SOURCE[0], SOURCE[2], obj("square", "yellow", "small", 2, 1)], [(2, 1)]),
    ("turn the square into a diamond", [SOURCE[0], SOURCE[2], obj("diamond", "blue", "small", 2, 1)], [(2, 1)]),
    ("make the green one a large pink triangle", [SOURCE[0], obj("triangle", "pink", "large", 1, 2), SOURCE[1]],
     [(1, 2)]),
    ("make the circles purple", [obj("circle", "purple", "large", 0, 0), obj("circle", "purple", "small", 1, 2),
                                 SOURCE[1]], [(0, 0), (1, 2)]),
    ("remove the square", [SOURCE[0], SOURCE[2]], [(2, 1)]),
    ("please delete all circles", [SOURCE[1]], [(0, 0), (1, 2)]),
    ("erase the small green circle", [SOURCE[0], SOURCE[1]], [(1, 2)]),
    ("add a red triangle in the top right", [SOURCE[0], obj("triangle", "red", "large", 0, 2), SOURCE[2], SOURCE[1]],
     [(0, 2)]),
    ("add a small orange diamond at the bottom right",
     [SOURCE[0], SOURCE[2], SOURCE[1], obj("diamond", "orange", "small", 2, 2)], [(2, 2)]),
    ("move the square to the center", [SOURCE[0], obj("square", "blue", "small", 1, 1), SOURCE[2]],
     [(1, 1), (2, 1)]),
    ("move the red circle down", [obj("circle", "red", "large", 1, 0), SOURCE[2], SOURCE[1]], [(0, 0), (1, 0)]),
    ("move the square left", [SOURCE[0], SOURCE[2], obj("square", "blue", "small", 2, 0)], [(2, 0), (2, 1)]),
    ("replace the square with a yellow triangle", [SOURCE[0], SOURCE[2], obj("triangle", "yellow", "small", 2, 1)],
     [(2, 1)]),
]


@pytest.mark.parametrize("text,target,cells", CASES, ids=[c[0] for c in CASES])
def test_instruction_gives_the_expected_scene(text: str, target: list[dict], cells: list[tuple[int, int]]) -> None:
    plan = plan_edit(SOURCE, text)
    assert plan.target == sorted(target, key=lambda o: (o["row"], o["col"]))
    assert plan.changed_cells == cells
    assert satisfies(plan.target, plan.spec)  # the target always meets its own spec
    assert not satisfies(plan.source, plan.spec) or not cells


def test_make_it_works_on_a_single_object_scene() -> None:
    plan = plan_edit([SOURCE[0]], "make it large")
    assert plan.target == [SOURCE[0]] and plan.changed_cells == []  # already large: nothing changes
    assert plan_edit([SOURCE[0]], "make it small").target == [obj("circle", "red", "small", 0, 0)]


def test_add_without_details_leaves_them_free_in_the_spec() -> None:
    plan = plan_edit(SOURCE, "add a triangle", random.Random(3))
    new = [o for o in plan.target if o not in SOURCE]
    assert len(new) == 1 and new[0]["shape"] == "triangle" and new[0]["size"] == "large"
    assert (new[0]["row"], new[0]["col"]) not in {(o["row"], o["col"]) for o in SOURCE}
    assert {"shape": "triangle"} in plan.spec["objects"]
    two = plan_edit(SOURCE, "add two blue diamonds", random.Random(0))
    assert sum(o["shape"] == "diamond" and o["color"] == "blue" for o in two.target) == 2


@pytest.mark.parametrize("text,match", [
    ("make the circle blue", "ambiguous: 2 objects match"),
    ("make it blue", "'it' .* ambiguous"),
    ("remove the triangle", "no object matches"),
    ("add a circle in the top left", "already holds the large red circle"),
    ("move the square to the top left", "already holds"),
    ("move the red circle up", "off the grid"),
    ("make the square", "expected 'make <object>"),
    ("add a red", "names no shape"),
    ("fly the circle", "unknown edit verb 'fly'"),
    ("move the circles to the center", "one object at a time"),
    ("add two circles in the center", "one position for 2 objects"),
    ("", "empty instruction"),
])
def test_bad_instructions_are_explained(text: str, match: str) -> None:
    with pytest.raises(InstructionError, match=match):
        plan_edit(SOURCE, text)


def test_parse_and_changed_cells_directly() -> None:
    ins = parse_instruction("move the blue square to the top right")
    assert ins.op == "move" and ins.ref == {"color": "blue", "shape": "square"} and ins.attrs == {"row": 0, "col": 2}
    assert changed_cells(SOURCE, SOURCE) == []
    assert changed_cells(SOURCE, SOURCE[:1]) == [(1, 2), (2, 1)]
