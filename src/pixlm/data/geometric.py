"""A geometric checker that reads a shapes-world image back into its scene, with no learning involved.

Each of the 9 cells is inspected on its own (objects never leave their cell): pixels far from white form
the object; its colour is the nearest palette entry, its size comes from the extent of the mask, and its
shape from how much of its bounding box it fills (square 1, circle π/4, triangle and diamond 1/2) and
whether the mass sits low (triangle) or is balanced (diamond).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pixlm.data.shapes import COLORS, PALETTE

_PALETTE = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)  # (8, 3)


def _cell_object(cell: np.ndarray, min_area: float) -> dict | None:
    """Classify the object in one cell crop (h, w, 3) float32 in [0, 255], or None when empty."""
    ink = 255.0 - cell.min(axis=2)  # how far each pixel is from white, (h, w)
    if ink.max() < 60:
        return None
    core = ink >= 0.7 * ink.max()
    mean = cell[core].mean(axis=0)
    color_idx = int(np.argmin(((_PALETTE - mean) ** 2).sum(axis=1)))
    full_ink = 255.0 - _PALETTE[color_idx].min()
    cover = np.clip(ink / full_ink, 0.0, 1.0)  # per-pixel coverage, anti-aliased edges count partly
    area = float(cover.sum())
    if area < min_area:
        return None
    mask = cover >= 0.5
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    # Every shape is as wide as its box at its widest row (and as tall at its tallest column), so the
    # largest coverage sum along rows/columns gives the box side with sub-pixel accuracy.
    side = float(max(cover.sum(axis=1).max(), cover.sum(axis=0).max()))
    fill = area / (side * side)
    rows = cover.sum(axis=1)
    cy = (ys.min() + ys.max() + 1) / 2.0
    idx = np.arange(len(rows)) + 0.5
    top = float(rows[idx < cy].sum())
    top_frac = top / max(area, 1e-6)
    if fill > 0.9:
        shape = "square"
    elif fill > 0.64:
        shape = "circle"
    else:
        shape = "triangle" if top_frac < 0.375 else "diamond"
    return {"shape": shape, "color": COLORS[color_idx], "side": float(side), "area": area}


def read_scene(image: Image.Image | np.ndarray, size_threshold: float = 14.0) -> list[dict]:
    """Objects ``{shape, color, size, row, col}`` found in a shapes image (resized to 64×64 first)."""
    if isinstance(image, Image.Image):
        if image.size != (64, 64):
            image = image.convert("RGB").resize((64, 64), Image.BICUBIC)
        arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    else:
        arr = np.asarray(image, dtype=np.float32)
    if arr.shape != (64, 64, 3):
        raise ValueError(f"expected a 64×64 RGB image, got array of shape {arr.shape}")
    cell = 64 / 3
    found = []
    for r in range(3):
        for c in range(3):
            y0, y1 = int(round(r * cell)), int(round((r + 1) * cell))
            x0, x1 = int(round(c * cell)), int(round((c + 1) * cell))
            obj = _cell_object(arr[y0:y1, x0:x1], min_area=20.0)
            if obj is None:
                continue
            size = "large" if obj["side"] >= size_threshold else "small"
            found.append({"shape": obj["shape"], "color": obj["color"], "size": size, "row": r, "col": c})
    return found
