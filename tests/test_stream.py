"""ShapesStream: infinite, seeded, deterministic, and distinct per worker and per process."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pixlm.data.batch import collate
from pixlm.data.shapes import iter_scenes
from pixlm.data.stream import ShapesStream, substream_seed


def texts(items) -> list[str]:
    return [it["text"] for it in items]


def test_single_stream_equals_iter_scenes() -> None:
    items = ShapesStream(seed=4).take(12)
    for item, (img, text, scene) in zip(items, iter_scenes(4, 12)):
        assert item["text"] == text and item["objects"] == scene.to_dicts()
        expected = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.equal(item["image"], expected)
        assert item["image"].shape == (3, 64, 64)


def test_deterministic_and_seeded() -> None:
    a, b = ShapesStream(seed=1).take(20), ShapesStream(seed=1).take(20)
    assert texts(a) == texts(b) and all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))
    assert texts(ShapesStream(seed=2).take(20)) != texts(a)


def test_is_infinite() -> None:
    assert sum(1 for _ in itertools.islice(iter(ShapesStream(seed=0, size=16)), 500)) == 500


def test_ranks_read_distinct_substreams() -> None:
    r0 = ShapesStream(seed=3, rank=0, world_size=2).take(30)
    r1 = ShapesStream(seed=3, rank=1, world_size=2).take(30)
    assert texts(r0) == texts(ShapesStream(seed=3).take(30))
    assert not any(torch.equal(x["image"], y["image"]) for x, y in zip(r0, r1))
    assert len({substream_seed(3, k) for k in range(100)}) == 100


def test_workers_get_distinct_substreams() -> None:
    """Two DataLoader workers interleave two different, reproducible sub-streams."""
    def run() -> list[str]:
        loader = DataLoader(ShapesStream(seed=5, size=16), batch_size=4, num_workers=2, collate_fn=collate)
        return [t for batch in itertools.islice(loader, 4) for t in batch["text"]]

    first = run()
    assert first == run()
    w0 = [t for _, t, _ in iter_scenes(substream_seed(5, 0), 8, 16)]
    w1 = [t for _, t, _ in iter_scenes(substream_seed(5, 1), 8, 16)]
    assert first == w0[:4] + w1[:4] + w0[4:8] + w1[4:8]  # round-robin over the workers' batches


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank=2"):
        ShapesStream(rank=2, world_size=2)
    with pytest.raises(ValueError, match="size=2"):
        ShapesStream(size=2)
