"""Editing in token space with a tiny random pipeline: kept tokens stay exactly, masks in both conventions,
outpainting geometry, variations, instruction edits touching only changed cells, reranking."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from pixlm.data.shapes import Scene, random_scene, render
from pixlm.pipelines.editing import (blank_tokens, cell_tokens, edit_image, encode_images, inpaint, instruct, is_clean_render,
                           outpaint, parse_sides, repaint_grid, vary_image, variation)
from pixlm.pipelines.rerank import generate_reranked, partial_match, score_candidate
from pixlm.testing import tiny_pipeline

SCENE = Scene.from_dicts([{"shape": "circle", "color": "red", "size": "large", "row": 0, "col": 0},
                          {"shape": "square", "color": "blue", "size": "small", "row": 2, "col": 1}])


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return render(SCENE)


def _box_mask(box: tuple[int, int, int, int], size: int = 64) -> Image.Image:
    m = Image.new("L", (size, size), 0)
    m.paste(255, box)
    return m


# ---------------------------------------------------------------------------------------------- masks
def test_white_mask_marks_tokens_whose_patch_it_overlaps(picture) -> None:
    grid = repaint_grid(picture, _box_mask((0, 0, 9, 9)), 8)  # 9 px: touches a second row/column of patches
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(grid, expected)


def test_transparent_mask_and_transparent_image_mark_the_same_area(picture) -> None:
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (40, 48, 64, 64))
    by_mask = repaint_grid(picture, rgba, 8)
    holey = picture.convert("RGBA")
    holey.paste((0, 0, 0, 0), (40, 48, 64, 64))
    assert torch.equal(by_mask, repaint_grid(holey, None, 8))
    assert int(by_mask.sum()) == 3 * 2 and bool(by_mask[6:, 5:].all())


def test_bad_masks_are_explained(picture) -> None:
    with pytest.raises(ValueError, match="marks nothing to repaint"):
        repaint_grid(picture, Image.new("L", (64, 64), 0), 8)
    with pytest.raises(ValueError, match="same size"):
        repaint_grid(picture, Image.new("L", (32, 32), 255), 8)
    with pytest.raises(ValueError, match="no alpha channel"):
        repaint_grid(picture, None, 8)


def test_cell_tokens_take_every_token_touching_the_cell() -> None:
    rows = {0: [0, 1, 2], 1: [2, 3, 4, 5], 2: [5, 6, 7]}
    for r in range(3):
        for c in range(3):
            t = cell_tokens([(r, c)], 8)
            assert sorted(set(t.nonzero()[:, 0].tolist())) == rows[r]
            assert sorted(set(t.nonzero()[:, 1].tolist())) == rows[c]
    with pytest.raises(ValueError, match="outside"):
        cell_tokens([(3, 0)], 8)


# ---------------------------------------------------------------------------------------------- inpaint / variation
def test_inpaint_keeps_every_unmasked_token_exactly(pipe, picture) -> None:
    src = encode_images(pipe, picture)[0]
    out = inpaint(pipe, picture, "a green triangle", _box_mask((20, 20, 44, 44)), num_images=3, seed=0)
    assert out.tokens.shape == (3, 8, 8) and len(out.images) == 3
    for k in range(3):
        kept = ~out.repainted[k]
        assert torch.equal(out.tokens[k][kept], src[kept])
    again = inpaint(pipe, picture, "a green triangle", _box_mask((20, 20, 44, 44)), num_images=3, seed=0)
    assert torch.equal(out.tokens, again.tokens)


def test_server_adapters_share_the_implementation(pipe, picture) -> None:
    mask = _box_mask((0, 0, 30, 30))
    a = edit_image(pipe, picture, "a red circle", mask, 2, None, None, None, 5)
    b = pipe.edit(picture, "a red circle", mask=mask, seed=5, num_images=2)
    assert torch.equal(a.tokens, b.tokens)
    v1 = vary_image(pipe, picture, 2, 0.25, None, None, None, 9)
    v2 = variation(pipe, picture, None, 0.25, num_images=2, seed=9)
    assert torch.equal(v1.tokens, v2.tokens)


def test_variation_resamples_the_strength_fraction(pipe, picture) -> None:
    src = encode_images(pipe, picture)[0]
    out = pipe.edit(picture, "", mode="variation", strength=0.25, seed=1, num_images=2)
    assert [int(r.sum()) for r in out.repainted] == [16, 16]
    for k in range(2):
        assert torch.equal(out.tokens[k][~out.repainted[k]], src[~out.repainted[k]])
    with pytest.raises(ValueError, match="strength"):
        pipe.edit(picture, "", mode="variation", strength=1.5)
    with pytest.raises(ValueError, match="strength only applies"):
        pipe.edit(picture, "a red circle", mode="inpaint", strength=0.3, mask=_box_mask((0, 0, 8, 8)))


# ---------------------------------------------------------------------------------------------- outpaint
def test_outpaint_extends_the_canvas_and_keeps_the_original(pipe, picture) -> None:
    src = encode_images(pipe, picture)[0]
    out = outpaint(pipe, picture, "a red circle", right=16, top=8, seed=0)
    assert out.images[0].size == (80, 72) and out.tokens.shape == (1, 9, 10)
    assert torch.equal(out.tokens[0, 1:, :8], src)
    assert int(out.repainted[0].sum()) == 9 * 10 - 64
    shifted = outpaint(pipe, picture, "a red circle", left=16, extend=False, seed=0)
    assert shifted.images[0].size == (64, 64) and torch.equal(shifted.tokens[0, :, 2:], src[:, :6])


def test_outpaint_rejects_bad_amounts(pipe, picture) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        outpaint(pipe, picture, "x", right=12)
    with pytest.raises(ValueError, match="at least one"):
        outpaint(pipe, picture, "x")
    with pytest.raises(ValueError, match="one side per axis"):
        outpaint(pipe, picture, "x", left=8, right=8, extend=False)
    assert parse_sides("right=16, top=8") == {"right": 16, "top": 8}
    with pytest.raises(ValueError, match="SIDE=PIXELS"):
        parse_sides("east=8")


# ---------------------------------------------------------------------------------------------- instruct
def test_instruction_edit_regenerates_only_the_changed_cells(pipe, picture) -> None:
    src = encode_images(pipe, picture)[0]
    out = instruct(pipe, picture, "make the circle blue", seed=0, num_images=2)
    assert out.info["read"]["reader"] == "geometric"  # a clean render: the exact reader wins
    assert out.info["changed_cells"] == [(0, 0)]
    assert out.info["prompt"] == "a large blue circle in the top left and a small blue square at the bottom"
    assert torch.equal(out.repainted[0], cell_tokens([(0, 0)], 8))
    for k in range(2):
        assert torch.equal(out.tokens[k][~out.repainted[k]], src[~out.repainted[k]])


def test_edit_prompt_names_changed_objects_first() -> None:
    from pixlm.pipelines.editing import edit_prompt

    target = SCENE.to_dicts()
    assert edit_prompt(target, [(2, 1)]) == "a small blue square at the bottom and a large red circle in the top left"
    assert edit_prompt(target, []) == "a large red circle in the top left and a small blue square at the bottom"
    assert edit_prompt([], [(0, 0)]) == ""


def test_removal_blanks_tokens_that_only_touch_empty_cells(pipe, picture) -> None:
    out = instruct(pipe, picture, "remove the circle", seed=0)
    only_empty = cell_tokens([(0, 0)], 8) & ~cell_tokens([(2, 1)], 8)  # the square's cell is far away
    assert torch.equal(out.tokens[0][only_empty], blank_tokens(pipe)[only_empty])
    assert out.info["target_objects"] == [SCENE.to_dicts()[1]]


def test_instruction_edit_uses_given_objects_and_explains_misses(pipe, picture) -> None:
    objs = [{"shape": "diamond", "color": "green", "size": "small", "row": 1, "col": 1}]
    out = pipe.edit(picture, "move the diamond to the top right", mode="instruct", seed=3, source_objects=objs)
    assert out.info["changed_cells"] == [(0, 2), (1, 1)] and out.info["read"] == {"reader": "given"}
    with pytest.raises(ValueError, match="no object matches"):
        pipe.edit(picture, "remove the triangle", mode="instruct", seed=0)


def test_clean_render_detection() -> None:
    img = render(random_scene(random.Random(4)))
    assert is_clean_render(img)
    noisy = np.asarray(img).astype(np.int16) + np.random.default_rng(0).integers(-40, 40, (64, 64, 3))
    assert not is_clean_render(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))


def test_editing_needs_a_masked_generator(picture) -> None:
    p = tiny_pipeline()
    p.generator.kind = "gan"  # instance attribute shadows the class's
    with pytest.raises(ValueError, match="masked generator"):
        p.edit(picture, "a red circle", mask=_box_mask((0, 0, 8, 8)))
    with pytest.raises(ValueError, match="mode="):
        tiny_pipeline().edit(picture, "a red circle", mode="erase")


# ---------------------------------------------------------------------------------------------- rerank
def test_partial_match_counts_attributes_relations_and_count() -> None:
    found = [{"shape": "circle", "color": "red", "size": "large", "row": 0, "col": 0}]
    spec = {"objects": [{"shape": "circle", "color": "blue"}, {"shape": "square"}], "relations": [], "exact": True}
    assert partial_match(found, spec) == pytest.approx(1 / 4)  # circle shape only; count wrong
    assert partial_match(found, {"objects": [{"shape": "circle", "color": "red"}], "relations": []}) == 1.0
    perfect = render(SCENE)
    good = score_candidate(perfect, {"objects": SCENE.to_dicts(), "relations": [], "exact": True})
    assert good == pytest.approx(3.0)


def test_rerank_returns_the_best_scoring_candidate(pipe) -> None:
    out = generate_reranked(pipe, "a red circle", candidates=3, num_images_per_prompt=2, seed=0)
    assert len(out.images) == 2 and out.tokens.shape == (2, 8, 8)
    for scores, chosen in zip(out.scores, out.chosen):
        assert scores[chosen] == max(scores) and scores.index(max(scores)) == chosen
    with pytest.raises(ValueError, match="shapes grammar"):
        generate_reranked(pipe, "a photo of a cat", candidates=2)
