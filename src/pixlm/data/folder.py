"""Image folders in the Hugging Face ``imagefolder`` convention: pictures plus a ``metadata.jsonl``.

Each line of ``metadata.jsonl`` is a JSON object with at least ``file_name`` (a path relative to the folder)
and ``text`` (the caption); ``objects`` (shapes-world scene objects) is optional::

    {"file_name": "00000.png", "text": "a red circle above a blue square", "objects": [...]}

``ImageFolder`` is a torch ``Dataset`` over such a folder, so you can train on your own pictures;
``write_imagefolder`` writes one (``pixlm data shapes`` uses it). Problems are reported as
``ImageFolderError`` (a ``ValueError``) naming the metadata line and the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from pixlm.data.jsonl import read_objects
from pixlm.data.batch import Item, flatten_alpha, image_to_tensor
from pixlm.data.shapes import ShapeObject

METADATA = "metadata.jsonl"


class ImageFolderError(ValueError):
    """A problem with an image folder: its metadata, a missing or unreadable image, a missing caption."""


@dataclass(frozen=True)
class Row:
    """One validated metadata row; ``line`` is its 1-based line number in metadata.jsonl."""

    line: int
    file_name: str
    path: Path
    text: str
    objects: list[dict[str, Any]] | None


def _check_objects(objects: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(objects, list):
        raise ImageFolderError(f"{where}: 'objects' must be a list of objects, got {type(objects).__name__}")
    checked = []
    for k, o in enumerate(objects):
        if not isinstance(o, dict):
            raise ImageFolderError(f"{where}: objects[{k}] must be an object, got {o!r}")
        try:
            checked.append(ShapeObject(**o).to_dict())
        except (TypeError, ValueError) as e:
            raise ImageFolderError(f"{where}: objects[{k}] = {o!r} is not a valid shapes object "
                                   f"(needs shape, color, size, row, col): {e}") from None
    return checked


def read_metadata(root: str | Path, check_files: bool = True) -> list[Row]:
    """Parse and validate ``root/metadata.jsonl``; with ``check_files`` every listed file must exist."""
    root = Path(root)
    meta = root / METADATA
    if not root.is_dir():
        raise ImageFolderError(f"image folder {root} does not exist or is not a directory")
    if not meta.is_file():
        raise ImageFolderError(f"image folder {root} has no {METADATA} (one JSON object per line with "
                               f"'file_name' and 'text')")
    rows: list[Row] = []
    for lineno, where, rec in read_objects(meta, ImageFolderError):
        name = rec.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise ImageFolderError(f"{where}: missing 'file_name' (got {name!r})")
        where = f"{where} (file_name {name!r})"
        if os.path.isabs(name) or ".." in Path(name).parts:
            raise ImageFolderError(f"{where}: file_name must be a path inside {root}")
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ImageFolderError(f"{where}: missing caption: 'text' must be a non-empty string, got {text!r}")
        objects = _check_objects(rec["objects"], where) if rec.get("objects") is not None else None
        path = root / name
        if check_files and not path.is_file():
            raise ImageFolderError(f"{where}: image file {path} does not exist")
        rows.append(Row(lineno, name, path, text, objects))
    if not rows:
        raise ImageFolderError(f"{meta} lists no images")
    return rows


class ImageFolder(Dataset):
    """A torch Dataset over an image folder: items ``{"image": (3, H, W) in [-1, 1], "text", "objects"}``.

    With ``size`` every image is scaled (shorter side) and centre-cropped to ``size``×``size``, so batches of
    your own pictures stack; without it images keep their own size. Batch with ``pixlm.data.batch.collate``.
    """

    def __init__(self, root: str | Path, size: int | None = None) -> None:
        if size is not None and size < 1:
            raise ValueError(f"size={size} must be a positive number of pixels (or None to keep each image's)")
        self.root = Path(root)
        self.size = size
        self.rows = read_metadata(self.root)

    def __len__(self) -> int:
        return len(self.rows)

    def load_image(self, index: int) -> Image.Image:
        """The RGB picture of row ``index`` (resized when the dataset has a ``size``)."""
        row = self.rows[index]
        try:
            with Image.open(row.path) as im:
                im.load()
                img = flatten_alpha(im)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            raise ImageFolderError(f"{self.root / METADATA}:{row.line} (file_name {row.file_name!r}): "
                                   f"cannot read image {row.path}: {e}") from None
        if self.size is not None and img.size != (self.size, self.size):
            img = ImageOps.fit(img, (self.size, self.size), Image.BICUBIC)
        return img

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for an image folder of {len(self)} rows")
        row = self.rows[index]
        return {"image": image_to_tensor(self.load_image(index)), "text": row.text, "objects": row.objects}

    def pictures(self) -> list[list[int]]:
        """Row indices grouped by picture: one list per distinct ``file_name``, in order of first appearance.

        Several rows may caption one picture (the emoji data has a name row, a keywords row, ...)."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            groups.setdefault(r.file_name, []).append(i)
        return list(groups.values())

    def verify(self) -> None:
        """Open every image once, so a broken file is reported now rather than mid-training."""
        for i in range(len(self)):
            self.load_image(i)


def write_imagefolder(root: str | Path, items: Iterable[tuple[Image.Image, str, list[dict[str, Any]] | None]],
                      overwrite: bool = False, digits: int = 5) -> int:
    """Write ``(image, caption, objects)`` items as ``00000.png``… plus ``metadata.jsonl``; returns the count.

    ``metadata.jsonl`` is written last (temp file + rename), so an interrupted write leaves no folder that
    looks complete. Refuses to write into a folder that already has one unless ``overwrite``.
    """
    root = Path(root)
    meta = root / METADATA
    if meta.exists() and not overwrite:
        raise ImageFolderError(f"{meta} already exists; choose another folder or overwrite it (--overwrite)")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / (METADATA + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for n, (img, text, objects) in enumerate(items, 1):
            name = f"{n - 1:0{digits}d}.png"
            img.save(root / name, format="PNG")
            rec: dict[str, Any] = {"file_name": name, "text": text}
            if objects is not None:
                rec["objects"] = objects
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, meta)
    return n
