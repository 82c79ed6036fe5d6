"""What every image-text dataset in pixlm yields, and how a DataLoader batches it.

An item is a dict ``{"image": float (3, H, W) in [-1, 1], "text": str, "objects": list[dict] | None}``;
``collate`` stacks images and keeps texts and objects as lists (objects vary in number, so the default
collate cannot batch them).
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image


class Item(TypedDict):
    """One example: the image, its caption and (when known) its scene objects."""

    image: torch.Tensor  # (3, H, W) float in [-1, 1]
    text: str
    objects: list[dict[str, Any]] | None


class Batch(TypedDict):
    """A collated batch of items."""

    image: torch.Tensor  # (B, 3, H, W) float in [-1, 1]
    text: list[str]
    objects: list[list[dict[str, Any]] | None]


def flatten_alpha(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB version of any PIL image; transparent pixels are laid on ``background`` (white, like shapes)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image → float tensor (3, H, W) in [-1, 1]."""
    arr = np.asarray(flatten_alpha(img), dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def collate(items: list[Item]) -> Batch:
    """Batch items for a DataLoader (``collate_fn=collate``); all images must share one size."""
    shapes = {tuple(it["image"].shape) for it in items}
    if len(shapes) > 1:
        raise ValueError(f"cannot batch images of different sizes {sorted(shapes)}; give the dataset a `size`")
    return {
        "image": torch.stack([it["image"] for it in items]),
        "text": [it["text"] for it in items],
        "objects": [it["objects"] for it in items],
    }
