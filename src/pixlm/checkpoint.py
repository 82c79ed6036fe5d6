"""One on-disk format for every component: a folder holding ``config.json`` and ``model.safetensors``.

Writes go to a temporary sibling folder that is renamed into place, so a crash never leaves a half-written
checkpoint under the final name. Loading is strict (every key must match) and never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

T = TypeVar("T")


class CheckpointError(ValueError):
    """A model folder is missing, incomplete or does not match the code that reads it."""


_UMASK = os.umask(0)  # read once at import: reading it means setting it, which would race with other threads
os.umask(_UMASK)


def atomic_write_dir(target: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_dir)`` then rename ``tmp_dir`` to ``target`` (replacing an older one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o777 & ~_UMASK)  # mkdtemp's 0700 would make an installed model folder unreadable to other users
    try:
        write(tmp)
        (tmp / ".complete").write_text("ok\n")
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"missing file {path}") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e


def save_module(module: torch.nn.Module, config: Any, directory: Path, kind: str,
                dtype: torch.dtype | None = None) -> None:
    """Write ``config.json`` (the dataclass plus ``kind``) and ``model.safetensors`` into ``directory``.

    ``dtype`` (e.g. float16) shrinks floating-point weights on disk; loading casts them back.
    """
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", {"kind": kind, **dataclasses.asdict(config)})
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(directory / "model.safetensors"))


def load_config(directory: str | os.PathLike, config_cls: type[T], kind: str) -> T:
    """Read ``config.json`` from ``directory`` into ``config_cls``, checking that it holds a ``kind``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model folder {str(directory)!r} does not exist")
    raw = read_json(directory / "config.json")
    if raw.get("kind") != kind:
        raise CheckpointError(f"{directory} holds a {raw.get('kind')!r}, expected a {kind!r}")
    raw.pop("kind")
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(raw) - names
    if unknown:
        raise CheckpointError(f"{directory}/config.json has unknown keys {sorted(unknown)} for {config_cls.__name__}")
    for f in dataclasses.fields(config_cls):  # JSON turns tuples into lists
        if f.name in raw and isinstance(raw[f.name], list):
            raw[f.name] = tuple(raw[f.name])
    return config_cls(**raw)


def load_weights(module: torch.nn.Module, directory: str | os.PathLike) -> torch.nn.Module:
    """Load ``model.safetensors`` strictly into ``module``."""
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(f"cannot read {path}: {e}") from e
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {path} do not match the config: {e}") from e
    return module


class Pretrained:
    """Mixin for ``nn.Module`` subclasses with a dataclass ``config``: ``save_pretrained``/``from_pretrained``."""

    config_class: type
    kind: str

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        return atomic_write_dir(directory, lambda tmp: save_module(self, self.config, tmp, self.kind, dtype))  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu"):
        config = load_config(directory, cls.config_class, cls.kind)
        model = cls(config)  # type: ignore[call-arg]
        load_weights(model, directory)
        return model.to(map_location).eval()
