"""An endless, seeded stream of freshly rendered shapes scenes, as a torch ``IterableDataset``.

Each (process, DataLoader worker) pair reads its own sub-stream, so no two workers repeat each other's
scenes, and the whole stream is a pure function of ``seed``, ``rank``/``world_size`` and the number of
workers. Sub-stream 0 is exactly ``shapes.iter_scenes(seed)`` — the scenes ``pixlm data shapes --seed
SEED`` writes — so a single-process, single-worker loader sees the same data as the files.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator

from torch.utils.data import IterableDataset, get_worker_info

from pixlm.data.batch import Item, image_to_tensor
from pixlm.data.shapes import iter_scenes


def substream_seed(seed: int, stream: int) -> int:
    """Seed of sub-stream ``stream``: ``seed`` itself for stream 0, a hash of (seed, stream) otherwise."""
    if stream == 0:
        return seed
    digest = hashlib.sha256(f"pixlm-shapes/{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class ShapesStream(IterableDataset):
    """Infinite shapes scenes ``{"image": (3, size, size) in [-1, 1], "text": caption, "objects": [...]}``.

    ``rank``/``world_size`` split the stream across processes (distributed training); DataLoader workers
    split it further on their own. Batch with ``pixlm.data.batch.collate``.
    """

    def __init__(self, seed: int = 0, size: int = 64, rank: int = 0, world_size: int = 1) -> None:
        if size < 3:
            raise ValueError(f"size={size} must be at least 3 pixels (one per grid cell)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        self.seed, self.size, self.rank, self.world_size = seed, size, rank, world_size

    def stream_id(self) -> int:
        """Index of the sub-stream this process/worker reads."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker

    def __iter__(self) -> Iterator[Item]:
        scenes = iter_scenes(substream_seed(self.seed, self.stream_id()), None, self.size)
        for img, text, scene in scenes:
            yield {"image": image_to_tensor(img), "text": text, "objects": scene.to_dicts()}

    def take(self, n: int) -> list[Item]:
        """The first ``n`` items of this (process's, main-thread) stream."""
        return list(itertools.islice(iter(self), n))
