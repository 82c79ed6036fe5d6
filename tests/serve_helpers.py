"""Helpers shared by the server tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import io

from PIL import Image


def assert_error(r, status: int, param: str | None = None, words: str = "") -> dict:
    """``r`` is an error in OpenAI's shape with this status, naming ``param`` and saying ``words``."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert param is None or err["param"] == param, err
    assert words.lower() in err["message"].lower(), err
    return err


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
