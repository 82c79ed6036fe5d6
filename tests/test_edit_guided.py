"""Edits guided by reading the picture (issue 22, part 3): a prompt may name only the new content; the pipeline
reads what is kept, places the new objects in the repainted cells and prompts with the whole target scene. Also
the pixels outside the mask staying exactly the input's, and candidates seeded per output."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from pixlm.data.instructions import InstructionError, plan_fill
from pixlm.data.shapes import Scene, render
from pixlm.data.specs import SpecError
from pixlm.pipelines.editing import (blank_tokens, candidate_generators, cell_coverage, cell_tokens, encode_images,
                                     inpaint, outpaint)
from pixlm.testing import tiny_pipeline

RED = {"shape": "circle", "color": "red", "size": "large", "row": 0, "col": 0}
GREEN = {"shape": "square", "color": "green", "size": "small", "row": 2, "col": 2}
SCENE = Scene.from_dicts([RED, GREEN])


def _cover(*cells: tuple[int, int], share: float = 1.0) -> dict[tuple[int, int], float]:
    cov = {(r, c): 0.0 for r in range(3) for c in range(3)}
    cov.update({c: share for c in cells})
    return cov


def _cell_mask(cell: tuple[int, int]) -> Image.Image:
    r, c = cell
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (round(c * 64 / 3), round(r * 64 / 3), round((c + 1) * 64 / 3), round((r + 1) * 64 / 3)))
    return m


@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline()
    p.defaults["scene_grammar"] = "shapes"
    return p


# ---------------------------------------------------------------------------------------------- planning
def test_a_new_object_only_prompt_goes_into_the_repainted_cell() -> None:
    plan = plan_fill([RED, GREEN], "a blue triangle", _cover((1, 1)))
    assert plan.target == sorted([RED, GREEN, {"shape": "triangle", "color": "blue", "size": "large", "row": 1,
                                               "col": 1}], key=lambda o: (o["row"], o["col"]))
    assert plan.changed_cells == [(1, 1)]
    # the spec demands what the prompt said, where it was put, and the kept scene; it leaves the size free
    assert {"shape": "triangle", "color": "blue", "row": 1, "col": 1} in plan.spec["objects"]


def test_the_object_in_a_repainted_cell_is_replaced_and_free_words_are_read() -> None:
    plan = plan_fill([RED, GREEN], "draw me a big crimson disc!", _cover((2, 2)))
    assert [o for o in plan.target if (o["row"], o["col"]) == (2, 2)] == [
        {"shape": "circle", "color": "red", "size": "large", "row": 2, "col": 2}]
    assert RED in plan.target and GREEN not in plan.target


def test_a_whole_scene_prompt_keeps_working() -> None:
    text = "a red circle in the top left and a yellow diamond in the bottom right"
    plan = plan_fill([RED, GREEN], text, _cover((2, 2)))
    assert plan.target == [RED, {"shape": "diamond", "color": "yellow", "size": "large", "row": 2, "col": 2}]


def test_positions_and_relations_pick_among_the_open_cells() -> None:
    column = _cover((0, 2), (1, 2), (2, 2))
    plan = plan_fill([], "a blue square at the bottom right", column)
    assert [(o["row"], o["col"]) for o in plan.target] == [(2, 2)]
    plan = plan_fill([], "a red circle above a blue square", column)
    red = next(o for o in plan.target if o["color"] == "red")
    blue = next(o for o in plan.target if o["color"] == "blue")
    assert red["row"] < blue["row"] and red["col"] == blue["col"] == 2


def test_an_unset_colour_is_drawn_from_the_rng_and_left_free_in_the_spec() -> None:
    colours = {plan_fill([], "a square", _cover((1, 1)), random.Random(s)).target[0]["color"] for s in range(12)}
    assert len(colours) > 1
    spec = plan_fill([], "a square", _cover((1, 1)), random.Random(0)).spec["objects"][0]
    assert "color" not in spec and spec["shape"] == "square"


def test_equally_covered_cells_are_chosen_by_the_rng() -> None:
    strip = _cover((0, 0), (1, 0), (2, 0))
    cells = {tuple(plan_fill([], "a circle", strip, random.Random(s)).target[0][k] for k in ("row", "col"))
             for s in range(20)}
    assert cells == {(0, 0), (1, 0), (2, 0)}


def test_a_small_mask_opens_its_most_covered_cell() -> None:
    cov = _cover((0, 1), share=0.2)
    cov[(1, 1)] = 0.3
    plan = plan_fill([RED], "a blue square", cov)
    assert {"shape": "square", "color": "blue", "size": "large", "row": 1, "col": 1} in plan.target


def test_planning_errors_name_the_problem() -> None:
    with pytest.raises(SpecError, match="outside the grammar"):
        plan_fill([RED], "a photo of my cat", _cover((1, 1)))
    with pytest.raises(InstructionError, match="3 object"):
        plan_fill([RED], "three blue squares", _cover((1, 1)))
    with pytest.raises(InstructionError, match="nothing is repainted"):
        plan_fill([RED], "a blue square", _cover())
    with pytest.raises(ValueError, match="outside the 3"):
        plan_fill([RED], "a blue square", {(3, 0): 1.0})


def test_cell_coverage_measures_the_share_of_each_cell() -> None:
    cov = cell_coverage(cell_tokens([(1, 1)], 9))  # 9 tokens: each cell is exactly 3×3 tokens
    assert cov[(1, 1)] == 1.0 and sum(cov.values()) == 1.0
    half = torch.zeros(8, 8, dtype=torch.bool)
    half[:, :4] = True
    cov = cell_coverage(half)
    assert cov[(0, 0)] == 1.0 and cov[(0, 1)] == pytest.approx(0.5) and cov[(0, 2)] == 0.0


# ---------------------------------------------------------------------------------------------- pipeline
def test_guided_inpaint_prompts_with_the_read_scene_and_the_new_object(pipe) -> None:
    image = render(SCENE)
    out = inpaint(pipe, image, "a blue triangle", _cell_mask((1, 1)), seed=3, candidates=1)
    assert out.info["guided"] and out.info["read"]["reader"] == "geometric"
    assert out.prompts[0] == ("a large blue triangle in the center, a large red circle in the top left and a small "
                              "green square in the bottom right")
    src = encode_images(pipe, image)[0]
    assert torch.equal(out.tokens[0][~out.repainted[0]], src[~out.repainted[0]])


def test_guided_inpaint_blanks_repainted_tokens_of_cells_left_empty(pipe) -> None:
    image = render(SCENE)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 64, 22))  # the whole top row; the new object takes one cell of it
    out = inpaint(pipe, image, "a blue triangle at the top", mask, seed=0, candidates=1)
    target = out.info["target_objects"][0]
    assert {"shape": "triangle", "color": "blue", "size": "large", "row": 0, "col": 1} in target
    assert not any(o["row"] == 0 and o["col"] != 1 for o in target)  # the red circle's cell was repainted empty
    only_empty = cell_tokens([(0, 0)], 8) & ~cell_tokens([(0, 1), (1, 0), (1, 1)], 8)
    assert torch.equal(out.tokens[0][only_empty], blank_tokens(pipe)[only_empty])


def test_a_prompt_outside_the_grammar_falls_back_to_the_plain_prompt(pipe) -> None:
    out = inpaint(pipe, render(SCENE), "a photo of my cat", _cell_mask((1, 1)), seed=0)
    assert out.info["guided"] is False and "outside the grammar" in out.info["reason"]
    assert out.prompts == ["a photo of my cat"]


def test_guidance_is_off_for_models_without_a_scene_grammar() -> None:
    plain = tiny_pipeline()
    out = inpaint(plain, render(SCENE), "a blue triangle", _cell_mask((1, 1)), seed=0)
    assert out.info == {"guided": False} and out.prompts == ["a blue triangle"]
    with pytest.raises(ValueError, match="scene_grammar"):
        inpaint(plain, render(SCENE), "a blue triangle", _cell_mask((1, 1)), guided=True)
    with pytest.raises(ValueError, match="guided='yes'"):
        inpaint(plain, render(SCENE), "a blue triangle", _cell_mask((1, 1)), guided="yes")


def test_pixels_outside_the_mask_are_the_inputs_own(pipe) -> None:
    image = render(SCENE)
    out = inpaint(pipe, image, "a blue triangle", _cell_mask((1, 1)), seed=0)
    got, src = np.asarray(out.images[0]), np.asarray(image)
    outside = np.asarray(_cell_mask((1, 1))) < 128
    assert np.array_equal(got[outside], src[outside])
    raw = inpaint(pipe, image, "a blue triangle", _cell_mask((1, 1)), seed=0, keep_pixels=False)
    assert not np.array_equal(np.asarray(raw.images[0])[outside], src[outside])  # the tokenizer's round trip


def test_candidates_are_seeded_per_output(pipe) -> None:
    image = render(SCENE)
    both = inpaint(pipe, image, "a blue triangle", _cell_mask((1, 1)), num_images=2, seed=10, candidates=3)
    second = inpaint(pipe, image, "a blue triangle", _cell_mask((1, 1)), num_images=1, seed=11, candidates=3)
    assert torch.equal(both.tokens[1], second.tokens[0])
    _, seeds = candidate_generators(10, 2, 3)
    assert seeds[0] == 10 and seeds[3] == 11 and len(set(seeds)) == 6


def test_guided_outpaint_puts_the_new_object_in_the_new_strip(pipe) -> None:
    image = render(Scene.from_dicts([RED]))
    out = outpaint(pipe, image, "a blue square", right=24, seed=0, candidates=2)
    first = out.info["guides"][0]
    assert out.info["guided"] and first["guided"]
    new = [o for o in first["target_objects"][0] if o["color"] == "blue"]
    assert len(new) == 1 and new[0]["col"] == 2 and new[0]["shape"] == "square"
    assert out.images[0].size == (88, 64)
    assert np.array_equal(np.asarray(out.images[0])[:, :64], np.asarray(image))  # the input's pixels, unmoved


def test_the_servers_edits_endpoint_is_guided_and_returns_the_composed_prompt(pipe) -> None:
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient

    from pixlm.serve import build_app

    def png(im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (22, 22, 42, 42))  # the centre cell, transparent (OpenAI's convention)
    with TestClient(build_app(pipe)) as client:
        r = client.post("/v1/images/edits", data={"prompt": "a blue triangle", "seed": "1"},
                        files={"image": ("i.png", png(render(SCENE)), "image/png"), "mask": ("m.png", png(mask))})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["revised_prompt"].startswith("a large blue triangle in the center, a large red circle")
