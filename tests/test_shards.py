"""Webdataset tar shards: imagefolder → shards → the same samples back, shuffled, split and skippable;
shards written by plain webdataset load in pixlm, and pixlm's load in plain webdataset."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from pixlm.cli import app
from pixlm.data.folder import ImageFolder
from pixlm.data.shards import ShardError, ShardStream, ShardWriter, expand_shards, looks_like_shards
from pixlm.models.vq import VQConfig, VQModel


@pytest.fixture(scope="module")
def shards(shapes_folder: Path, tmp_path_factory: pytest.TempPathFactory, runner) -> Path:
    out = tmp_path_factory.mktemp("shards")
    result = runner.invoke(app, ["data", "shard", str(shapes_folder), "--out", str(out), "--shard-size", "8"])
    assert result.exit_code == 0, result.output
    return out


def test_shard_files_follow_the_webdataset_layout(shards: Path) -> None:
    assert sorted(p.name for p in shards.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(shards / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names[:3] == ["000000.json", "000000.png", "000000.txt"] and len(names) == 24  # webdataset sorts by ext
    index = json.loads((shards / "index.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [8, 8, 4] and index["kind"] == "images"


def test_round_trip_gives_the_folder_back(shapes_folder: Path, shards: Path) -> None:
    folder = ImageFolder(shapes_folder)
    items = list(ShardStream(shards, shuffle=0, epochs=1))
    assert len(items) == len(folder) == 20
    by_text = {folder[i]["text"]: folder[i] for i in range(len(folder))}
    for it in items:
        ref = by_text[it["text"]]
        assert torch.equal(it["image"], ref["image"]) and it["objects"] == ref["objects"]


def test_patterns_name_the_same_shards(shards: Path) -> None:
    by_range = expand_shards(f"{shards}/shard-{{000000..000002}}.tar")
    assert by_range == expand_shards(shards) == expand_shards(f"{shards}/shard-*.tar")
    assert looks_like_shards(str(shards)) and looks_like_shards(f"{shards}/shard-{{000000..000002}}.tar")
    with pytest.raises(ShardError, match="shard-000003.tar"):
        expand_shards(f"{shards}/shard-{{000000..000003}}.tar")


def test_shuffle_is_seeded_and_keeps_every_sample(shards: Path) -> None:
    def texts(seed: int) -> list[str]:
        return [s["txt"].decode() + s["__key__"] for s in ShardStream(shards, shuffle=6, seed=seed, epochs=1).raw()]

    plain = [s["txt"].decode() + s["__key__"] for s in ShardStream(shards, shuffle=0, epochs=1).raw()]
    assert texts(0) == texts(0) and texts(0) != texts(1)
    assert Counter(texts(0)) == Counter(plain) and texts(0) != plain


def test_processes_read_disjoint_parts_and_skip_resumes(shards: Path) -> None:
    def keys(**kw) -> list[str]:
        return [s["__key__"] for s in ShardStream(shards, shuffle=4, epochs=1, **kw).raw()]

    for world in (2, 5):  # 5 readers > 3 shards: every n-th sample instead of whole shards
        parts = [keys(rank=r, world_size=world) for r in range(world)]
        assert sorted(k for p in parts for k in p) == sorted(keys()), world
        assert all(parts), world
    full = [it["text"] for it in ShardStream(shards, shuffle=4, epochs=1)]
    assert [it["text"] for it in ShardStream(shards, shuffle=4, epochs=1, skip=7)] == full[7:]


def test_token_shards_hold_the_tokenizer_codes(shapes_folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    VQModel(VQConfig(channels=(8, 8, 16, 16), levels=(4, 4, 4))).save_pretrained(tmp_path / "vq")
    from pixlm.data.shards import shard_imagefolder

    shard_imagefolder(shapes_folder, tmp_path / "tok", shard_size=16, tokenizer=str(tmp_path / "vq"), batch_size=7)
    vq = VQModel.from_pretrained(tmp_path / "vq")
    folder = ImageFolder(shapes_folder)
    by_text = {folder[i]["text"]: folder[i]["image"] for i in range(len(folder))}
    items = list(ShardStream(tmp_path / "tok", shuffle=0, epochs=1))
    assert len(items) == 20 and all("image" not in it for it in items)
    expected = vq.encode(torch.stack([by_text[it["text"]] for it in items])).flatten(1)
    assert torch.equal(torch.stack([it["tokens"] for it in items]), expected)
    index = json.loads((tmp_path / "tok" / "index.json").read_text())
    assert index["kind"] == "tokens" and index["vocab_size"] == vq.vocab_size and index["grid"] == [8, 8]


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="shard_size=0"):
        ShardWriter(tmp_path, 0)
    with ShardWriter(tmp_path / "a", 2) as w:
        w.write({"__key__": "x", "txt": b"a caption"})
    with pytest.raises(ShardError, match="neither an image"):
        list(ShardStream(tmp_path / "a", shuffle=0, epochs=1))
    with pytest.raises(ShardError, match="already holds shards"):
        ShardWriter(tmp_path / "a", 2)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.tar").write_bytes(b"not a tar file")
    with pytest.raises(ShardError, match="cannot read shard .*x.tar"):
        list(ShardStream(tmp_path / "b", epochs=1))


def test_dataloader_workers_and_processes_split_the_shards(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def keys(worker: int, workers: int, **kw) -> list[str]:  # webdataset reads the worker from these variables
        monkeypatch.setenv("WORKER", str(worker))
        monkeypatch.setenv("NUM_WORKERS", str(workers))
        return [s["__key__"] + s["__url__"] for s in ShardStream(shards, shuffle=3, epochs=1, **kw).raw()]

    parts = [keys(w, 2, rank=r, world_size=2) for r in range(2) for w in range(2)]  # 4 readers, 3 shards
    assert all(parts) and sorted(k for p in parts for k in p) == sorted(keys(0, 1))


def test_endless_stream_reshuffles_each_epoch(shards: Path) -> None:
    def key(sample: dict) -> str:
        return sample["__key__"] + sample["__url__"]

    endless = ShardStream(shards, shuffle=5, seed=3).raw()
    keys = [key(s) for s in ShardStream(shards, shuffle=5, seed=3, epochs=2).raw()]
    assert [key(next(endless)) for _ in range(45)][:40] == keys
    assert len(keys) == 40 and sorted(keys[:20]) == sorted(keys[20:]) and keys[:20] != keys[20:]


def test_shards_written_by_plain_webdataset_load_in_pixlm(tmp_path: Path) -> None:
    pictures = [Image.new("RGB", (80, 64), c) for c in ("red", "green", "blue")]
    with wds.ShardWriter(str(tmp_path / "other-%04d.tar"), maxcount=2, verbose=0) as sink:
        for i, im in enumerate(pictures):  # webdataset's own encoders: PIL → .jpg, str → .txt, dict → .json
            sink.write({"__key__": f"images/sample{i}", "jpg": im, "txt": f"a {i} picture", "json": {"id": i}})
    items = list(ShardStream(f"{tmp_path}/other-{{0000..0001}}.tar", shuffle=0, epochs=1, size=32))
    items.sort(key=lambda it: it["text"])  # the shard order is shuffled even without a shuffle buffer
    assert [it["text"] for it in items] == ["a 0 picture", "a 1 picture", "a 2 picture"]
    for it, colour in zip(items, ([1, -1, -1], [-1, 0.0039, -1], [-1, -1, 1])):
        assert it["image"].shape == (3, 32, 32)
        mean = it["image"].mean((1, 2))
        assert torch.allclose(mean, torch.tensor(colour, dtype=torch.float), atol=0.05)  # JPEG is lossy


def test_pixlm_shards_load_in_plain_webdataset(shapes_folder: Path, shards: Path, tmp_path: Path) -> None:
    folder = ImageFolder(shapes_folder)
    by_text = {folder[i]["text"]: folder[i] for i in range(len(folder))}
    ds = wds.WebDataset(f"{shards}/shard-{{000000..000002}}.tar", shardshuffle=False).decode("rgb8")
    samples = list(ds.to_tuple("png", "txt", "json"))
    assert len(samples) == 20
    for picture, text, meta in samples:
        expected = (by_text[text]["image"].permute(1, 2, 0) + 1) * 127.5  # (H, W, 3) in [0, 255]
        assert np.array_equal(picture, expected.round().to(torch.uint8).numpy())
        assert meta["objects"] == by_text[text]["objects"]
    torch.manual_seed(0)
    VQModel(VQConfig(channels=(8, 8, 16, 16), levels=(4, 4, 4))).save_pretrained(tmp_path / "vq")
    from pixlm.data.shards import shard_imagefolder

    shard_imagefolder(shapes_folder, tmp_path / "tok", shard_size=16, tokenizer=str(tmp_path / "vq"))
    grids = {s["txt"]: s["tokens.npy"] for s in wds.WebDataset(str(tmp_path / "tok" / "shard-000000.tar"),
                                                                 shardshuffle=False).decode()}
    ours = {it["text"]: it["tokens"] for it in ShardStream(tmp_path / "tok", shuffle=0, epochs=1)}
    assert len(grids) == 16 and all(g.dtype == np.int16 and g.shape == (8, 8) for g in grids.values())
    assert all(torch.equal(torch.from_numpy(g.astype(np.int64)).flatten(), ours[t]) for t, g in grids.items())
