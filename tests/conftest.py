"""Shared fixtures: a CLI runner, a small shapes imagefolder, a writer for hand-made folders, a tiny tokenizer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pixlm.cli import app
from pixlm.models.vq import VQConfig, VQModel


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory: pytest.TempPathFactory, runner: CliRunner) -> Path:
    """20 scenes written by ``pixlm data shapes --n 20 --seed 3``."""
    out = tmp_path_factory.mktemp("shapes") / "d"
    result = runner.invoke(app, ["data", "shapes", "--n", "20", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    """Write a folder from metadata lines (dicts are JSON-encoded, strings written verbatim) and images."""

    def make(lines: list[dict[str, Any] | str], images: dict[str, Image.Image | bytes] | None = None) -> Path:
        root = tmp_path / "folder"
        root.mkdir(exist_ok=True)
        for name, content in (images or {}).items():
            if isinstance(content, bytes):
                (root / name).write_bytes(content)
            else:
                content.save(root / name)
        with open(root / "metadata.jsonl", "w", encoding="utf-8") as f:
            for line in lines:
                f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
        return root

    return make


@pytest.fixture(scope="session")
def vq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny tokenizer: generator tests only need its codes to be a fixed function of the picture."""
    d = tmp_path_factory.mktemp("vq") / "vq"
    torch.manual_seed(0)
    VQModel(VQConfig(channels=(8, 8, 16, 16), levels=(4, 4, 4))).save_pretrained(d)
    return d
