"""Seeds a user can rely on: image i of a call with seed s is the picture a one-image call with seed s + i draws,
whatever the number of images per prompt, the other prompts in the batch, or the generator family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixlm.data.shapes import random_scene, render
from pixlm.pipelines.common import MAX_SEED, check_generation_args, make_generators
from pixlm.pipelines.editing import inpaint, variation
from pixlm.testing import TINY_GENERATOR_KINDS, tiny_pipeline, tiny_pipeline_for


@pytest.mark.parametrize("kind", TINY_GENERATOR_KINDS)
def test_image_i_of_seed_s_is_the_one_image_call_with_seed_s_plus_i(kind: str) -> None:
    pipe = tiny_pipeline_for(kind, seed=1)
    prompts = ["a red circle", "two blue squares above a green triangle", "x"]
    batch = pipe.generate(prompts, num_images_per_prompt=2, seed=40, num_inference_steps=3)
    rows = [p for p in prompts for _ in range(2)]
    for i, prompt in enumerate(rows):
        alone = pipe.generate(prompt, seed=40 + i, num_inference_steps=3)
        assert torch.equal(alone.tokens[0], batch.tokens[i]), (kind, i)
    # and a list of seeds gives each image its own
    listed = pipe.generate(prompts[0], num_images_per_prompt=2, seed=[41, 40], num_inference_steps=3)
    assert torch.equal(listed.tokens[0], batch.tokens[1]) and torch.equal(listed.tokens[1], batch.tokens[0])


def test_edits_follow_the_same_seed_rule() -> None:
    pipe = tiny_pipeline(seed=2)
    picture = render(random_scene(__import__("random").Random(0)))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 32))
    many = inpaint(pipe, picture, "a red circle", mask, num_images=3, seed=7, num_inference_steps=3)
    var = variation(pipe, picture, "a red circle", 0.5, num_images=3, seed=7, num_inference_steps=3)
    for i in range(3):
        one = inpaint(pipe, picture, "a red circle", mask, num_images=1, seed=7 + i, num_inference_steps=3)
        assert torch.equal(one.tokens[0], many.tokens[i])
        one = variation(pipe, picture, "a red circle", 0.5, num_images=1, seed=7 + i, num_inference_steps=3)
        assert torch.equal(one.tokens[0], var.tokens[i]) and torch.equal(one.repainted[0], var.repainted[i])


def test_bad_seeds_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="2 seeds for 3 images"):
        make_generators([1, 2], 3)
    with pytest.raises(ValueError, match="seed=-1"):
        make_generators(-1, 1)
    with pytest.raises(ValueError, match="seed="):
        make_generators(MAX_SEED, 2)  # the second image would need MAX_SEED + 1
    with pytest.raises(ValueError, match="seed=True"):
        make_generators(True, 1)
    gens, seeds = make_generators(None, 3)
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2] and len(gens) == 3
    with pytest.raises(ValueError, match="num_images_per_prompt=0"):
        check_generation_args("a red circle", num_images=0)
    with pytest.raises(ValueError, match="prompt"):
        check_generation_args("  ")


def test_cli_first_picture_of_n_is_the_one_picture_call(tmp_path, runner) -> None:
    from pixlm.cli import app

    model = tmp_path / "model"
    tiny_pipeline(seed=3).save_pretrained(model)
    outs = []
    for n in (3, 1):
        out = tmp_path / f"n{n}"
        result = runner.invoke(app, ["generate", "a red circle", "--model", str(model), "-n", str(n), "--seed", "0",
                                     "--steps", "3", "--out", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(np.asarray(Image.open(sorted(out.glob("*-00.png"))[0]), dtype=int))
    # the same tokens (default fast path); the VQ decoder's batched convolutions may round a pixel one level apart
    assert np.abs(outs[0] - outs[1]).max() <= 1
    bad = runner.invoke(app, ["generate", "a red circle", "--model", str(tmp_path / "missing"), "-n", "0"])
    assert bad.exit_code == 1 and "num_images_per_prompt=0" in bad.output  # checked before the model is looked up


def test_step0_cache_serves_every_call_and_batch_the_same_unconditional_row() -> None:
    from pixlm.inference import optimize

    pipe = optimize(tiny_pipeline(seed=4), "fp32")
    cache = pipe.generator.step0_cache
    one = pipe.generate("a red circle", seed=3, num_inference_steps=4)  # computes and keeps the "" row
    assert len(cache.entries) == 1
    many = pipe.generate(["a red circle", "three small blue squares at the top"], seed=3, num_inference_steps=4)
    assert len(cache.entries) == 1  # another call, other prompt lengths (other padding): the same entry
    assert torch.equal(one.tokens[0], many.tokens[0])
    pipe.generate("a red circle", negative_prompt="green", seed=3, num_inference_steps=4)
    assert len(cache.entries) == 2  # another negative prompt, another row
    pipe.generate("a red circle", negative_prompt="blue", seed=3, num_inference_steps=4)
    assert len(cache.entries) == 3  # same length as "green", other words: never served the "green" row
    pipe.generator.step0_cache = None  # the same call without the cache: the row computed in the batch
    plain = pipe.generate(["a red circle", "three small blue squares at the top"], seed=3, num_inference_steps=4)
    assert (plain.tokens == many.tokens).float().mean() > 0.95  # equal up to the rounding of a smaller batch
