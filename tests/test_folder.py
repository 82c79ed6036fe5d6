"""Imagefolder round trip through the CLI, the reader's items and its errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pixlm.cli import app
from pixlm.data.batch import collate
from pixlm.data.folder import ImageFolder, ImageFolderError, read_metadata, write_imagefolder
from pixlm.data.shapes import iter_scenes

OBJ = {"shape": "circle", "color": "red", "size": "large", "row": 0, "col": 0}


def red(size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.new("RGB", size, (220, 40, 40))


def test_cli_writes_pngs_and_metadata(shapes_folder: Path) -> None:
    pngs = sorted(shapes_folder.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(20)]
    assert all(Image.open(p).size == (64, 64) and Image.open(p).mode == "RGB" for p in pngs)
    lines = (shapes_folder / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 20
    row = json.loads(lines[0])
    assert set(row) == {"file_name", "text", "objects"} and row["file_name"] == "00000.png"


def test_round_trip_matches_the_stream(shapes_folder: Path) -> None:
    ds = ImageFolder(shapes_folder)
    assert len(ds) == 20
    for i, (img, text, scene) in enumerate(iter_scenes(3, 20)):
        item = ds[i]
        assert item["text"] == text
        assert item["objects"] == scene.to_dicts()
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
        back = ((item["image"] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(back, np.asarray(img))  # PNG is lossless


def test_cli_is_deterministic(runner, tmp_path: Path) -> None:
    for name in ("a", "b"):
        args = ["data", "shapes", "--n", "5", "--seed", "9", "--out", str(tmp_path / name)]
        assert runner.invoke(app, args).exit_code == 0
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()


def test_cli_refuses_to_overwrite(runner, shapes_folder: Path) -> None:
    result = runner.invoke(app, ["data", "shapes", "--n", "2", "--out", str(shapes_folder)])
    assert result.exit_code == 1
    assert "already exists" in result.output and "--overwrite" in result.output


def test_cli_size_option(runner, tmp_path: Path) -> None:
    out = tmp_path / "big"
    assert runner.invoke(app, ["data", "shapes", "--n", "2", "--size", "96", "--out", str(out)]).exit_code == 0
    assert ImageFolder(out)[0]["image"].shape == (3, 96, 96)


def test_dataloader_batches(shapes_folder: Path) -> None:
    batch = next(iter(DataLoader(ImageFolder(shapes_folder), batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 3, 64, 64)
    assert len(batch["text"]) == 4 and len(batch["objects"]) == 4


def test_users_own_pictures(make_folder: Callable[..., Path]) -> None:
    """Captions only, mixed sizes and modes (RGBA on white, greyscale); ``size`` makes them batchable."""
    rgba = Image.new("RGBA", (20, 10), (0, 0, 255, 0))
    root = make_folder(
        [{"file_name": "a.png", "text": "a red thing"}, {"file_name": "sub/b.png", "text": "nothing", "extra": 1},
         {"file_name": "c.jpg", "text": "grey"}],
        {"a.png": red((30, 40)), "c.jpg": Image.new("L", (16, 16), 128)},
    )
    (root / "sub").mkdir()
    rgba.save(root / "sub" / "b.png")
    ds = ImageFolder(root)
    assert ds[0]["objects"] is None and ds[0]["image"].shape == (3, 40, 30)
    assert torch.allclose(ds[1]["image"], torch.ones(3, 10, 20))  # transparent → white
    sized = ImageFolder(root, size=16)
    batch = collate([sized[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 16, 16)
    assert batch["text"] == ["a red thing", "nothing", "grey"]
    with pytest.raises(ValueError, match="different sizes"):
        collate([ds[0], ds[1]])


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"file_name": "a.png", "text": "ok"}', '{"file_name": "b.png", "text": '], r"jsonl:2: not valid JSON"),
        (['{"file_name": "a.png", "text": "ok"}', '["a.png", "x"]'], r"jsonl:2: expected a JSON object"),
        ([{"text": "no file"}], r"jsonl:1: missing 'file_name'"),
        ([{"file_name": "a.png", "text": "ok"}, {"file_name": "a.png"}],
         r"jsonl:2 \(file_name 'a.png'\): missing caption"),
        ([{"file_name": "a.png", "text": "  "}], r"jsonl:1 \(file_name 'a.png'\): missing caption"),
        ([{"file_name": "a.png", "text": 3}], r"jsonl:1 .*'text' must be a non-empty string, got 3"),
        ([{"file_name": "a.png", "text": "ok"}, {"file_name": "gone.png", "text": "x"}],
         r"jsonl:2 \(file_name 'gone.png'\): image file .*gone.png does not exist"),
        ([{"file_name": "../a.png", "text": "x"}], r"jsonl:1 .*must be a path inside"),
        ([{"file_name": "a.png", "text": "x", "objects": {"shape": "circle"}}], r"jsonl:1 .*'objects' must be a list"),
        ([{"file_name": "a.png", "text": "x", "objects": [{**OBJ, "color": "mauve"}]}],
         r"jsonl:1 .*objects\[0\].*mauve.*not one of"),
        ([{"file_name": "a.png", "text": "x", "objects": [{"shape": "circle"}]}],
         r"jsonl:1 .*objects\[0\].*needs shape"),
        ([], r"lists no images"),
    ],
)
def test_metadata_errors(make_folder: Callable[..., Path], lines: list, match: str) -> None:
    root = make_folder(lines, {"a.png": red(), "b.png": red()})
    with pytest.raises(ImageFolderError, match=match):
        ImageFolder(root)


def test_missing_folder_and_metadata(tmp_path: Path) -> None:
    with pytest.raises(ImageFolderError, match="does not exist"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(ImageFolderError, match="has no metadata.jsonl"):
        ImageFolder(tmp_path)
    assert issubclass(ImageFolderError, ValueError)


def test_unreadable_image_names_row_and_file(make_folder: Callable[..., Path]) -> None:
    root = make_folder([{"file_name": "a.png", "text": "ok"}, "", {"file_name": "bad.png", "text": "broken"}],
                       {"a.png": red(), "bad.png": b"this is not a png"})
    ds = ImageFolder(root)  # files exist, so construction succeeds; blank lines are skipped
    assert len(ds) == 2 and ds.rows[1].line == 3
    assert ds[0]["text"] == "ok"
    with pytest.raises(ImageFolderError, match=r"jsonl:3 \(file_name 'bad.png'\): cannot read image .*bad.png"):
        ds[1]
    with pytest.raises(ImageFolderError, match="bad.png"):
        ds.verify()


def test_cli_check(runner, shapes_folder: Path, make_folder: Callable[..., Path]) -> None:
    ok = runner.invoke(app, ["data", "check", str(shapes_folder)])
    assert ok.exit_code == 0 and "20 images OK" in ok.output and "20 with scene objects" in ok.output
    bad = make_folder([{"file_name": "a.png", "text": "ok"}, {"file_name": "b.png"}], {"a.png": red(), "b.png": red()})
    result = runner.invoke(app, ["data", "check", str(bad)])
    assert result.exit_code == 1 and "jsonl:2" in result.output and "missing caption" in result.output


def test_write_imagefolder_direct(tmp_path: Path) -> None:
    n = write_imagefolder(tmp_path / "w", [(red(), "a red square", None), (red(), "another", [OBJ])])
    assert n == 2
    rows = read_metadata(tmp_path / "w")
    assert [r.file_name for r in rows] == ["00000.png", "00001.png"]
    assert rows[0].objects is None and rows[1].objects == [OBJ]
    assert not (tmp_path / "w" / "metadata.jsonl.tmp").exists()
    with pytest.raises(ImageFolderError, match="already exists"):
        write_imagefolder(tmp_path / "w", [])
    assert write_imagefolder(tmp_path / "w", [(red(), "x", None)], overwrite=True) == 1


def test_size_must_be_positive(shapes_folder: Path) -> None:
    with pytest.raises(ValueError, match="size=0"):
        ImageFolder(shapes_folder, size=0)
