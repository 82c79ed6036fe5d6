"""Reading JSON-lines files whose every line must be an object, with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def read_objects(path: str | Path,
                 error: type[Exception] = ValueError) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yield ``(line number, "FILE:LINE", object)`` per non-blank line; a non-object line raises ``error``."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise error(f"{where}: expected a JSON object, got {type(rec).__name__}")
            yield lineno, where, rec
