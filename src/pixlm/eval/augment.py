"""Degradations that make clean shapes renders look like generated images.

Generated pictures are blurred, noisy, slightly off-colour and a little off-grid; decoders add blocky
artefacts. The learned judge trains on renders passed through :func:`degrade`, and the judge's robustness is
measured on held-out renders passed through it. Every degradation keeps the scene's labels valid: shifts stay
well inside the ~2 px margin an object has in its cell, and colour changes stay far from the next palette entry.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def _affine(img: Image.Image, rng: np.random.Generator, s: float) -> Image.Image:
    """Small shift (±1.5 px), scale (±4%) and rotation (±3°) about the image centre, white fill."""
    w, h = img.size
    angle = np.deg2rad(rng.uniform(-3, 3) * s)
    scale = 1.0 + rng.uniform(-0.04, 0.04) * s
    tx, ty = rng.uniform(-1.5, 1.5, size=2) * s
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    cx, cy = w / 2, h / 2
    # PIL maps output (x, y) to input (a x + b y + c, d x + e y + f): the inverse of the forward transform.
    a, b, d, e = cos, sin, -sin, cos
    c = cx - a * (cx + tx) - b * (cy + ty)
    f = cy - d * (cx + tx) - e * (cy + ty)
    return img.transform((w, h), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR, fillcolor=(255, 255, 255))


def _color_jitter(x: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    """Per-channel gain (±7%) and offset (±10), plus a global contrast change (±8%), on float (H, W, 3)."""
    gain = 1.0 + rng.uniform(-0.07, 0.07, size=3) * s
    offset = rng.uniform(-10, 10, size=3) * s
    contrast = 1.0 + rng.uniform(-0.08, 0.08) * s
    mean = x.mean()
    return ((x - mean) * contrast + mean) * gain + offset


def degrade(image: Image.Image | np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """One random mix of shift, colour jitter, blur, down-up sampling, noise and JPEG; uint8 (H, W, 3) out.

    ``strength`` in [0, 2] scales every degradation (0 returns the image unchanged).
    """
    if not 0.0 <= strength <= 2.0:
        raise ValueError(f"strength={strength} must be in [0, 2]")
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    img = img.convert("RGB")
    if strength == 0.0:
        return np.asarray(img, dtype=np.uint8).copy()
    s = strength
    w, h = img.size
    if rng.random() < 0.7:
        img = _affine(img, rng, s)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 1.1) * s)))
    if rng.random() < 0.3:  # decoder-like softness: down to 1/2–3/4 size and back
        f = rng.uniform(0.5, 0.75)
        small = img.resize((max(8, int(w * f)), max(8, int(h * f))), Image.BILINEAR)
        img = small.resize((w, h), Image.BICUBIC)
    x = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.7:
        x = _color_jitter(x, rng, s)
    if rng.random() < 0.6:
        sigma = rng.uniform(1.0, 10.0) * s
        x = x + rng.normal(0.0, sigma, size=x.shape)
    if rng.random() < 0.2:  # low-frequency blotches, like a generator's uneven background
        blot = rng.normal(0.0, 6.0 * s, size=(4, 4, 3)).astype(np.float32)
        x = x + _upsample(blot, w, h)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(35, 95)))
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)
    return out


def _upsample(a: np.ndarray, w: int, h: int) -> np.ndarray:
    """Bicubic upsampling of a small float (h', w', 3) field to (h, w, 3)."""
    chans = [np.asarray(Image.fromarray(a[..., k], mode="F").resize((w, h), Image.BICUBIC)) for k in range(a.shape[2])]
    return np.stack(chans, axis=-1)


def _gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a float (H, W) array, edges clamped."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a, r, mode="edge")
    p = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, p)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, p)


def soft_render(scene, rng: np.random.Generator, strength: float = 1.0, size: int = 64) -> np.ndarray:
    """Render ``scene`` the way an image decoder tends to: corners rounded, tips blunted, colours drifting.

    Each object's coverage mask is blurred and re-sharpened (which rounds corners by about the blur radius)
    and its colour is shifted a little; uint8 (H, W, 3) out. The shapes stay recognisable: the rounding
    radius stays below a fifth of a small object's side.
    """
    from pixlm.data.shapes import PALETTE, Scene, render

    if not 0.0 <= strength <= 2.0:
        raise ValueError(f"strength={strength} must be in [0, 2]")
    canvas = np.full((size, size, 3), 255.0)
    for o, jit in zip(scene.objects, scene.jitter):
        single = np.asarray(render(Scene([o], [jit]), size), dtype=np.float64)
        color = np.array(PALETTE[o.color], dtype=np.float64)
        alpha = np.clip((255.0 - single.min(axis=2)) / (255.0 - color.min()), 0.0, 1.0)
        if strength > 0:
            a = _gaussian_blur(alpha, float(rng.uniform(0.4, 0.9) * strength * size / 64))
            alpha = np.clip((a - 0.5) * rng.uniform(2.0, 4.0) + 0.5, 0.0, 1.0)
            color = color + rng.normal(0.0, 6.0 * strength, size=3)
        canvas = canvas * (1 - alpha[..., None]) + color * alpha[..., None]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
