"""The server's edit/variation adapters (pixlm.pipelines.editing.edit_image / vary_image) and OpenAI mask rules."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pixlm.pipelines.editing import edit_image, image_to_tensor, repaint_grid, vary_image
from pixlm.testing import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def picture(size: int = 64) -> Image.Image:
    im = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    im.paste((220, 30, 30, 255), (size // 8, size // 8, size // 2, size // 2))
    return im


def mask_with_hole(box: tuple[int, int, int, int], size: int = 64) -> Image.Image:
    m = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), box)
    return m


def test_repaint_grid_marks_every_patch_the_hole_touches() -> None:
    grid = repaint_grid(picture(), mask_with_hole((32, 32, 64, 64)), 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[4:, 4:] = True
    assert torch.equal(grid, expected)
    one = repaint_grid(picture(), mask_with_hole((9, 17, 10, 18)), 8)  # a single pixel at x=9, y=17
    assert one.sum() == 1 and bool(one[2, 1])
    # A 128-pixel picture: patches are 16 pixels; a hole across the 15/16 boundary touches two columns.
    wide = repaint_grid(picture(128), mask_with_hole((15, 0, 17, 1), 128), 8)
    assert wide.nonzero().tolist() == [[0, 0], [0, 1]]


def test_image_alpha_is_the_mask_when_none_is_given() -> None:
    im = picture()
    im.paste((0, 0, 0, 0), (0, 56, 8, 64))
    grid = repaint_grid(im, None, 8)
    assert grid.nonzero().tolist() == [[7, 0]]


@pytest.mark.parametrize("image, mask, words", [
    (picture(), picture(32), "same size"),
    (picture(), picture().convert("RGB"), "no alpha"),
    (picture().convert("RGB"), None, "no alpha"),
    (picture(), picture(), "no transparent pixels"),
])
def test_bad_openai_masks_are_value_errors(image, mask, words) -> None:
    with pytest.raises(ValueError, match=words):
        repaint_grid(image, mask, 8, alpha_only=True)


def test_white_masks_are_accepted_unless_alpha_only() -> None:
    white = Image.new("L", (64, 64), 0)
    white.paste(255, (0, 0, 8, 8))
    assert repaint_grid(picture(), white, 8).nonzero().tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="no alpha channel"):
        repaint_grid(picture(), white, 8, alpha_only=True)


def test_transparent_pixels_are_encoded_as_white() -> None:
    im = Image.new("RGBA", (80, 64), (10, 200, 10, 0))  # fully transparent, non-square
    x = image_to_tensor(im, 64)
    assert x.shape == (1, 3, 64, 64) and torch.allclose(x, torch.ones_like(x))


def test_edit_keeps_tokens_outside_the_mask(pipe) -> None:
    im = picture()
    mask = mask_with_hole((32, 32, 64, 64))
    out = edit_image(pipe, im, "a blue square", mask, num_images=3, num_inference_steps=4, seed=1)
    assert len(out.images) == 3 and out.tokens.shape == (3, 8, 8) and out.prompts == ["a blue square"] * 3
    init = pipe.vq.encode(image_to_tensor(im, 64))[0]
    keep = ~repaint_grid(im, mask, 8)
    for row in out.tokens:
        assert torch.equal(row[keep], init[keep])
        assert bool((row < pipe.vq.vocab_size).all())  # every masked token was filled
    again = edit_image(pipe, im, "a blue square", mask, num_images=3, num_inference_steps=4, seed=1)
    assert torch.equal(out.tokens, again.tokens)
    other = edit_image(pipe, im, "a blue square", mask, num_images=3, num_inference_steps=4, seed=2)
    assert not torch.equal(out.tokens, other.tokens)


def test_edit_with_negative_prompt_and_callback(pipe) -> None:
    steps: list[int] = []
    out = edit_image(pipe, picture(), "a blue square", mask_with_hole((0, 0, 64, 64)), num_inference_steps=3,
                     negative_prompt="a red circle", seed=0, callback=lambda i, k, t: steps.append(i))
    assert steps == [0, 1, 2] and out.images[0].size == (64, 64)


def test_variation_keeps_the_requested_fraction(pipe) -> None:
    im = picture()
    init = pipe.vq.encode(image_to_tensor(im, 64)).reshape(-1)
    out = vary_image(pipe, im, num_images=4, strength=0.25, num_inference_steps=4, seed=3)
    assert out.prompts == [""] * 4
    same = (out.tokens.reshape(4, -1) == init).sum(1)
    assert bool((same >= 48).all())  # 75% of 64 tokens kept (resampled ones may coincide)
    assert vary_image(pipe, im, strength=1.0, seed=3, prompt="a red circle").prompts == ["a red circle"]
    a = vary_image(pipe, im, num_images=2, seed=9).tokens
    assert torch.equal(a, vary_image(pipe, im, num_images=2, seed=9).tokens)


@pytest.mark.parametrize("kwargs, words", [({"strength": 0.0}, "strength"), ({"strength": 1.5}, "strength"),
                                           ({"num_images": 0}, "num_images"),
                                           ({"num_inference_steps": 0}, "num_inference_steps")])
def test_variation_rejects_bad_settings(pipe, kwargs, words) -> None:
    with pytest.raises(ValueError, match=words):
        vary_image(pipe, picture(), **kwargs)
