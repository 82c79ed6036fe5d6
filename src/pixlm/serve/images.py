"""Image bytes in and out: guarded decoding of uploads, PNG encoding, and the expiring store behind ``url`` responses."""

from __future__ import annotations

import base64
import io
import os
import re
import secrets
import tempfile
import threading
import time
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pixlm.serve.errors import APIError, bad_request

# Formats an upload may be in. Others (e.g. PSD, EPS — EPS would run Ghostscript) are refused before decoding.
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def decode_upload(data: bytes, param: str, max_pixels: int) -> Image.Image:
    """Decode uploaded bytes to a loaded PIL image, refusing non-images and oversized pictures.

    The header is read first and width × height checked against ``max_pixels`` before any pixel is decoded,
    so a small file that expands to gigabytes (a decompression bomb) costs nothing. Animated images give their
    first frame.
    """
    if not data:
        raise bad_request(f"{param} is empty", param, "invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, stricter check follows
            im = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise bad_request(f"{param} is too large (more than {max_pixels:,} pixels)", param, "image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise bad_request(f"{param} is not an image in a supported format ({', '.join(UPLOAD_FORMATS)})", param,
                          "invalid_image") from None
    w, h = im.size
    if w < 1 or h < 1 or w * h > max_pixels:
        raise bad_request(f"{param} is {w}x{h} = {w * h:,} pixels; at most {max_pixels:,} are allowed", param,
                          "image_too_large")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise bad_request(f"{param} is too large to decode", param, "image_too_large") from None
    except (OSError, ValueError, SyntaxError):
        raise bad_request(f"{param} is truncated or corrupt", param, "invalid_image") from None
    return im


def png_bytes(image: Image.Image, side: int | None = None) -> bytes:
    """PNG-encode ``image``, upscaled (nearest neighbour: no invented detail) to ``side``×``side`` if given."""
    if side is not None and image.size != (side, side):
        image = image.resize((side, side), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def b64_png(image: Image.Image, side: int | None = None) -> str:
    """Base64 text of :func:`png_bytes`."""
    return base64.b64encode(png_bytes(image, side)).decode("ascii")


_ID = re.compile(r"^[0-9a-f]{32}$")


class ImageStore:
    """PNG files served by random id from one folder; each expires ``ttl_s`` seconds after it was written.

    Ids are 128-bit random hex; a lookup accepts nothing else, so no client-supplied text ever becomes a path.
    """

    def __init__(self, root: str | os.PathLike | None, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"url_ttl_s={ttl_s!r} must be > 0")
        self.owned = root is None  # a temporary folder we created (and remove on close)
        self.root = Path(tempfile.mkdtemp(prefix="pixlm-serve-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self._last_sweep = 0.0
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        """Store PNG bytes; returns the id to fetch them by."""
        image_id = secrets.token_hex(16)
        tmp = self.root / f".{image_id}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.root / f"{image_id}.png")
        self.sweep()
        return image_id

    def path(self, image_id: str) -> Path | None:
        """The file for ``image_id``, or None when the id is malformed, unknown or expired."""
        name = image_id[:-4] if image_id.endswith(".png") else image_id
        if not _ID.match(name):
            return None
        path = self.root / f"{name}.png"
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        if age > self.ttl_s:
            path.unlink(missing_ok=True)
            return None
        return path

    def sweep(self, force: bool = False) -> int:
        """Delete expired files (at most once a minute unless forced); returns how many were removed."""
        now = time.time()
        with self._lock:
            if not force and now - self._last_sweep < 60:
                return 0
            self._last_sweep = now
        removed = 0
        for path in self.root.glob("*.png"):
            try:
                if now - path.stat().st_mtime > self.ttl_s:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def close(self) -> None:
        """Remove the folder if this store created it."""
        if self.owned:
            for path in self.root.glob("*"):
                path.unlink(missing_ok=True)
            try:
                self.root.rmdir()
            except OSError:
                pass


def not_found(message: str) -> APIError:
    """A 404 in the API's error shape."""
    return APIError(404, message, code="not_found")
