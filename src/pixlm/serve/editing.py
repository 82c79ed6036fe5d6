"""Editing (inpainting) and variations with what the pipeline already has: the VQ encoder and the MaskGIT sampler.

Both work in token space. The picture is encoded to its 8×8 token grid; some tokens are kept, the others start
masked and are decoded by the sampler, conditioned on a prompt:

- ``edit_image``: tokens whose 8×8-pixel patch touches the mask's transparent area are re-masked (OpenAI's
  convention: transparent = repaint); the rest are kept.
- ``vary_image``: a random ``1 - strength`` fraction of tokens is kept, the rest resampled.

They take a pipeline as their first argument so they can become ``pipeline.edit`` / ``pipeline.variation``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pixlm.pipeline import (
    MAX_GUIDANCE,
    MAX_IMAGES_PER_PROMPT,
    MAX_STEPS,
    PipelineOutput,
    PreviewCallback,
    TextToImagePipeline,
    _check_number,
    _check_prompts,
    make_generator,
    tokens_to_images,
)
from pixlm.sampling.maskgit import MaskGITSampler

ALPHA_THRESHOLD = 128  # a pixel with alpha below this is "transparent": part of the area to repaint


def _square(image: Image.Image) -> Image.Image:
    """Centre crop to a square (the model draws square pictures)."""
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image if w == h else image.crop((left, top, left + s, top + s))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def image_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: transparent pixels shown over white, centre-cropped, resized."""
    rgba = _square(image).convert("RGBA")
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.LANCZOS)
    arr = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy())  # (H, W, 3)
    return (arr / 127.5 - 1).permute(2, 0, 1)[None]


def repaint_grid(image: Image.Image, mask: Image.Image | None, grid: int) -> torch.Tensor:
    """(grid, grid) bool: True where a token's patch touches a transparent pixel of ``mask`` (or of ``image``)."""
    source, name = (mask, "mask") if mask is not None else (image, "image")
    if mask is not None and mask.size != image.size:
        raise ValueError(f"mask is {mask.size[0]}x{mask.size[1]} but image is {image.size[0]}x{image.size[1]}; "
                         "they must have the same size")
    if not _has_alpha(source):
        where = "the mask" if mask is not None else "the image (no mask was sent)"
        raise ValueError(f"{where} has no alpha channel; transparent pixels (alpha < {ALPHA_THRESHOLD}) mark the "
                         "area to repaint, so send a PNG with transparency")
    alpha = np.asarray(_square(source).convert("RGBA").getchannel("A"))
    hole = torch.from_numpy(alpha < ALPHA_THRESHOLD).float()[None, None]  # (1, 1, S, S)
    if not bool(hole.any()):
        raise ValueError(f"the {name} has no transparent pixels (alpha < {ALPHA_THRESHOLD}): nothing to repaint")
    return F.adaptive_max_pool2d(hole, grid)[0, 0] > 0  # a patch touching any hole pixel is repainted


def _conditioning(pipe: TextToImagePipeline, rows: list[str], negatives: list[str] | None,
                  scale: float) -> tuple[dict, dict | None]:
    """``prepare_text`` results for the conditional rows and (when guidance is on) the unconditional rows."""
    uniq = list(dict.fromkeys(rows + (negatives or []) + [""]))
    states, mask = pipe.text_encoder.encode(uniq)
    pos = {p: i for i, p in enumerate(uniq)}

    def prepared(texts: list[str]) -> dict:
        idx = torch.tensor([pos[t] for t in texts])
        return pipe.generator.prepare_text(states[idx].to(pipe.device), mask[idx].to(pipe.device))

    uncond = prepared(negatives or [""] * len(rows)) if scale != 1.0 else None
    return prepared(rows), uncond


def _resample(pipe: TextToImagePipeline, init: torch.Tensor, keep: torch.Tensor, rows: list[str],
              negatives: list[str] | None, steps: int, scale: float, gen: torch.Generator,
              callback: PreviewCallback | None, t0: float) -> PipelineOutput:
    """Decode the non-kept tokens of ``init`` (B, N) with the sampler and turn the grids into images."""
    with torch.inference_mode():
        cond, uncond = _conditioning(pipe, rows, negatives, scale)
        t1 = time.perf_counter()
        sampler = MaskGITSampler(steps, scale, pipe.defaults["temperature"], pipe.defaults["choice_temperature"])
        try:
            tokens = sampler.sample(pipe.generator, cond, uncond, len(rows), generator=gen, callback=callback,
                                    init_tokens=init, keep=keep)
        except RuntimeError as e:
            if "probability tensor" in str(e):
                raise FloatingPointError("the generator produced NaN/Inf logits; the weights are corrupt") from e
            raise
        t2 = time.perf_counter()
        g = pipe.generator.config.grid
        tokens = tokens.view(len(rows), g, g)
        images = tokens_to_images(pipe.vq, tokens)
    t3 = time.perf_counter()
    return PipelineOutput(images, rows, tokens, {"text_ms": (t1 - t0) * 1e3, "sample_ms": (t2 - t1) * 1e3,
                                                 "decode_ms": (t3 - t2) * 1e3})


def _settings(pipe: TextToImagePipeline, num_images: int, steps: int | None,
              scale: float | None) -> tuple[int, float]:
    steps = pipe.defaults["num_inference_steps"] if steps is None else steps
    scale = pipe.defaults["guidance_scale"] if scale is None else scale
    _check_number(num_images, "num_images", 1, MAX_IMAGES_PER_PROMPT, integer=True)
    _check_number(steps, "num_inference_steps", 1, MAX_STEPS, integer=True)
    _check_number(scale, "guidance_scale", 0.0, MAX_GUIDANCE, integer=False)
    return steps, scale


def _check_masked(pipe: TextToImagePipeline) -> None:
    kind = getattr(pipe.generator, "kind", None)
    if kind != "masked":
        raise NotImplementedError(f"token-space editing needs a masked generator; this pipeline's is {kind!r}")


def _encode(pipe: TextToImagePipeline, image: Image.Image) -> torch.Tensor:
    """Image → (1, N) tokens."""
    with torch.inference_mode():
        x = image_to_tensor(image, pipe.vq.config.image_size).to(pipe.device)
        return pipe.vq.encode(x).reshape(1, -1)


def edit_image(pipe: TextToImagePipeline, image: Image.Image, prompt: str, mask: Image.Image | None = None,
               num_images: int = 1, num_inference_steps: int | None = None, guidance_scale: float | None = None,
               negative_prompt: str | None = None, seed: int | None = None,
               callback: PreviewCallback | None = None) -> PipelineOutput:
    """Repaint the transparent area of ``mask`` (or of ``image`` when no mask) to match ``prompt``.

    Tokens whose 8×8 patch touches a transparent pixel are re-masked and decoded by the sampler; the others
    keep the uploaded picture's tokens. Non-square pictures are centre-cropped. Same seed, same result.
    """
    t0 = time.perf_counter()
    _check_masked(pipe)
    prompts = _check_prompts(prompt)
    negatives = _check_prompts(negative_prompt, "negative_prompt") if negative_prompt is not None else None
    if len(prompts) != 1 or (negatives is not None and len(negatives) != 1):
        raise ValueError("edit_image takes one prompt (and at most one negative prompt)")
    steps, scale = _settings(pipe, num_images, num_inference_steps, guidance_scale)
    gen, _ = make_generator(seed, pipe.device)
    repaint = repaint_grid(image, mask, pipe.generator.config.grid).reshape(1, -1)  # (1, N)
    init = _encode(pipe, image)
    return _resample(pipe, init.expand(num_images, -1), (~repaint).expand(num_images, -1), prompts * num_images,
                     negatives * num_images if negatives else None, steps, scale, gen, callback, t0)


def vary_image(pipe: TextToImagePipeline, image: Image.Image, num_images: int = 1, strength: float = 0.5,
               prompt: str | None = None, num_inference_steps: int | None = None,
               guidance_scale: float | None = None, seed: int | None = None,
               callback: PreviewCallback | None = None) -> PipelineOutput:
    """Variations of ``image``: keep a random ``1 - strength`` fraction of its tokens, resample the rest.

    Without ``prompt`` the resampling is unconditional (empty prompt, no guidance); with one it is steered by it.
    At least one token is always resampled; ``strength=1`` draws a new picture.
    """
    t0 = time.perf_counter()
    _check_masked(pipe)
    _check_number(strength, "strength", 1e-9, 1.0, integer=False)
    rows = _check_prompts(prompt) * num_images if prompt is not None else [""] * num_images
    steps, scale = _settings(pipe, num_images, num_inference_steps, guidance_scale)
    if prompt is None:
        scale = 1.0  # nothing to guide towards
    gen, _ = make_generator(seed, pipe.device)
    init = _encode(pipe, image).expand(num_images, -1)  # (B, N)
    n = init.shape[1]
    kept = min(round((1 - strength) * n), n - 1)
    ranks = torch.rand(init.shape, generator=gen).argsort(1).argsort(1)  # a random permutation per row
    keep = (ranks < kept).to(init.device)
    return _resample(pipe, init, keep, rows, None, steps, scale, gen, callback, t0)


__all__ = ["edit_image", "vary_image", "repaint_grid", "image_to_tensor"]
