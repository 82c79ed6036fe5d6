"""Webdataset tar shards: write them from an imagefolder, stream them back shuffled and split.

Shards are written by ``webdataset.ShardWriter`` and read by ``webdataset.WebDataset``, so any webdataset
tool reads pixlm's shards and pixlm reads theirs. A shard is a tar file ``NAME-000000.tar``; the files of one
sample share a key (``000042.png``, ``000042.txt``, ``000042.json``). Members pixlm understands:

* ``.png`` / ``.jpg`` / ``.jpeg`` / ``.webp``: the picture;
* ``.txt``: the caption;
* ``.json``: ``{"objects": [...]}`` (shapes-world scene objects, optional);
* ``.tokens.npy``: the picture already encoded by a tokenizer, an int16 (H, W) grid, so generator training
  skips the VQ encoder.

``index.json`` next to the shards records each shard's sample count (and, for token shards, the tokenizer's
vocabulary and grid), so a reader can check them before training. Nothing is unpickled: pixlm decodes the
members itself (``.npy`` with ``allow_pickle=False``) instead of webdataset's automatic decoders.
"""

from __future__ import annotations

import glob
import io
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image, ImageOps
from torch.utils.data import IterableDataset
from webdataset.shardlists import expand_urls
from webdataset.utils import pytorch_worker_info

from pixlm.data.batch import flatten_alpha, image_to_tensor

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
INDEX = "index.json"


class ShardError(ValueError):
    """A shard pattern that matches nothing, a shard that is not a tar file, or a sample that cannot be read."""


# ---------------------------------------------------------------------------------------------- naming
def expand_shards(spec: str | os.PathLike) -> list[Path]:
    """Shard files named by ``spec``: ``dir/name-{000000..000009}.tar``, a glob, a folder of ``*.tar`` or one file.

    Several specs may be joined with ``::``; brace ranges are expanded as webdataset expands them. Every
    file must exist.
    """
    paths: list[Path] = []
    for part in expand_urls(str(spec)):
        if any(c in part for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(part))
            if not found:
                raise ShardError(f"no shard files match {part!r}")
            paths += found
        elif Path(part).is_dir():
            found = sorted(Path(part).glob("*.tar"))
            if not found:
                raise ShardError(f"folder {part!r} holds no .tar shards")
            paths += found
        else:
            paths.append(Path(part))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ShardError(f"shard file(s) not found: {', '.join(missing[:3])}" + (" …" if len(missing) > 3 else ""))
    return paths


def looks_like_shards(spec: str) -> bool:
    """True when ``spec`` names tar shards rather than an imagefolder."""
    if ".tar" in spec or "{" in spec or "::" in spec:
        return True
    p = Path(spec)
    return p.is_dir() and not (p / "metadata.jsonl").exists() and any(p.glob("*.tar"))


def read_index(spec: str | os.PathLike) -> dict[str, Any] | None:
    """``index.json`` of the folder holding the first shard of ``spec`` (None if it has none)."""
    first = expand_shards(spec)[0]
    path = first.parent / INDEX
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------- writing
class ShardWriter:
    """Write samples (``{"__key__": str, "png": bytes, "txt": str, "json": dict, "tokens.npy": array}``) into
    tar shards of ``shard_size`` samples with ``webdataset.ShardWriter``, which encodes values by extension.

    Each shard is written as ``NAME-000000.tar.tmp`` and renamed when full, so a crash never leaves a
    truncated ``.tar``; ``close`` writes ``index.json``. Tar headers carry a fixed time, so the same samples
    always give the same bytes.
    """

    def __init__(self, out: str | os.PathLike, shard_size: int, prefix: str = "shard",
                 info: dict[str, Any] | None = None) -> None:
        if shard_size < 1:
            raise ShardError(f"shard_size={shard_size} must be at least 1 sample per shard")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
            raise ShardError(f"prefix={prefix!r} may hold only letters, digits, '_', '.' and '-'")
        self.out, self.shard_size, self.prefix = Path(out), shard_size, prefix
        self.out.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.out.glob(f"{prefix}-*.tar"))
        if existing:
            raise ShardError(f"{self.out} already holds shards ({existing[0].name} …); choose an empty folder")
        self.info = dict(info or {})
        self.counts: list[int] = []
        self.paths: list[Path] | None = None  # set by close
        self._writer: wds.ShardWriter | None = None  # opened by the first sample, so no samples make no shard
        self._file: IO[bytes] | None = None

    def _open(self, name: str) -> IO[bytes]:
        self._file = open(name + ".tmp", "wb")
        return self._file

    def _publish(self, name: str) -> None:  # webdataset calls this when a shard is complete
        assert self._file is not None
        self._file.close()
        os.replace(name + ".tmp", name)

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        if not key or "." in key or "/" in key:
            raise ShardError(f"sample key {key!r} must be non-empty without '.' or '/'")
        if self._writer is None:
            self._writer = wds.ShardWriter(str(self.out / f"{self.prefix}-%06d.tar"), maxcount=self.shard_size,
                                           verbose=0, opener=self._open, post=self._publish, mtime=0, mode=0o644)
        self._writer.write(sample)
        shard = self._writer.shard - 1  # the number of the shard this sample went into
        self.counts += [0] * (shard + 1 - len(self.counts))
        self.counts[shard] += 1

    def close(self) -> list[Path]:
        """Finish the last shard and write ``index.json``; returns the shard paths."""
        if self.paths is not None:
            return self.paths
        if self._writer is not None:
            self._writer.close()
        names = [f"{self.prefix}-{i:06d}.tar" for i in range(len(self.counts))]
        index = {**self.info, "shards": [{"name": n, "samples": c} for n, c in zip(names, self.counts)],
                 "samples": sum(self.counts)}
        tmp = self.out / (INDEX + ".tmp")
        tmp.write_text(json.dumps(index, indent=2) + "\n")
        os.replace(tmp, self.out / INDEX)
        self.paths = [self.out / n for n in names]
        return self.paths

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        elif self._file is not None:
            self._file.close()  # the unfinished shard stays a .tar.tmp


def shard_imagefolder(folder: str | os.PathLike, out: str | os.PathLike, shard_size: int = 1000,
                      prefix: str = "shard", tokenizer: str | None = None, size: int = 64,
                      batch_size: int = 64) -> list[Path]:
    """Convert an imagefolder into shards: the image files as they are, or (with ``tokenizer``) token grids.

    Token shards hold ``tokens.npy`` (the pictures scaled to ``size`` and encoded by the tokenizer folder)
    instead of the picture, plus the caption and objects.
    """
    from pixlm.data.folder import ImageFolder, read_metadata

    rows = read_metadata(folder)
    digits = max(6, len(str(len(rows) - 1)))
    if tokenizer is None:
        with ShardWriter(out, shard_size, prefix, {"kind": "images"}) as w:
            for i, row in enumerate(rows):
                ext = row.path.suffix.lower().lstrip(".")
                if ext not in IMAGE_EXTS:
                    raise ShardError(f"{row.file_name}: image type {ext!r} is not one of {IMAGE_EXTS}")
                sample = {"__key__": f"{i:0{digits}d}", ext: row.path.read_bytes(), "txt": row.text}
                if row.objects is not None:
                    sample["json"] = {"objects": row.objects}
                w.write(sample)
        return w.close()
    from pixlm.models.vq import VQModel

    vq = VQModel.from_pretrained(tokenizer)
    ds = ImageFolder(folder, size=size)
    info = {"kind": "tokens", "vocab_size": vq.vocab_size, "tokenizer": str(tokenizer)}
    with ShardWriter(out, shard_size, prefix, info) as w:
        for start in range(0, len(ds), batch_size):
            items = [ds[i] for i in range(start, min(len(ds), start + batch_size))]
            with torch.no_grad():
                grids = vq.encode(torch.stack([it["image"] for it in items])).to(torch.int16).numpy()  # (B, h, w)
            for k, (it, grid) in enumerate(zip(items, grids)):
                sample = {"__key__": f"{start + k:0{digits}d}", "tokens.npy": grid, "txt": it["text"]}
                if it["objects"] is not None:
                    sample["json"] = {"objects": it["objects"]}
                w.write(sample)
            w.info["grid"] = list(grids.shape[1:])
    return w.close()


# ---------------------------------------------------------------------------------------------- reading
def decode_sample(raw: dict[str, Any], size: int | None = None) -> dict[str, Any]:
    """Raw webdataset sample → ``{"text", "objects", "image" (3, H, W) in [-1, 1] and/or "tokens" (H*W,) int64}``.

    With ``size`` pictures are scaled (shorter side) and centre-cropped to ``size``×``size``, as ``ImageFolder`` does.
    """
    where = f"sample {raw['__key__']!r} of {raw.get('__url__')}"
    if "txt" not in raw:
        raise ShardError(f"{where} has no .txt caption")
    out: dict[str, Any] = {"text": raw["txt"].decode("utf-8"), "objects": None}
    if "json" in raw:
        meta = json.loads(raw["json"])
        out["objects"] = meta.get("objects") if isinstance(meta, dict) else meta
    if "tokens.npy" in raw:
        grid = np.load(io.BytesIO(raw["tokens.npy"]), allow_pickle=False)
        out["tokens"] = torch.from_numpy(grid.astype(np.int64)).flatten()
    for ext in IMAGE_EXTS:
        if ext in raw:
            with Image.open(io.BytesIO(raw[ext])) as im:
                im.load()
                img = flatten_alpha(im)
            if size is not None and img.size != (size, size):
                img = ImageOps.fit(img, (size, size), Image.BICUBIC)
            out["image"] = image_to_tensor(img)
            break
    if "tokens" not in out and "image" not in out:
        raise ShardError(f"{where} has neither an image ({', '.join(IMAGE_EXTS)}) nor tokens.npy")
    return out


def reader_info(rank: int, world_size: int) -> tuple[int, int]:
    """(this reader, number of readers): one reader per (process, DataLoader worker) pair."""
    _, _, worker, workers = pytorch_worker_info()
    return rank * workers + worker, world_size * workers


def split_shards(urls: Iterable[dict[str, Any]], rank: int, world_size: int) -> Iterator[dict[str, Any]]:
    """Webdataset node splitter: each reader takes every n-th shard, or every shard when there are fewer
    shards than readers (then ``split_samples`` splits the samples)."""
    urls = list(urls)
    reader, readers = reader_info(rank, world_size)
    yield from urls[reader::readers] if len(urls) >= readers else urls


def split_samples(samples: Iterable[dict[str, Any]], shards: int, rank: int,
                  world_size: int) -> Iterator[dict[str, Any]]:
    """Every n-th sample for this reader when there are fewer shards than readers; else all of them."""
    reader, readers = reader_info(rank, world_size)
    yield from samples if shards >= readers else itertools.islice(samples, reader, None, readers)


def raise_shard_error(exn: Exception) -> bool:
    """Webdataset error handler: name the shard (webdataset appends its URL to the exception's args)."""
    url = next((a for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), "?")
    raise ShardError(f"cannot read shard {url}: {exn.args[0] if exn.args else exn!r}") from exn


class ShardStream(IterableDataset):
    """Endless (or ``epochs``-long) shuffled stream of decoded samples from tar shards, read by webdataset.

    Processes (``rank``/``world_size``) and DataLoader workers each read a disjoint part: whole shards when
    there are at least as many shards as readers, otherwise every n-th sample. Each epoch visits the
    reader's shards in an order drawn from (seed, epoch), and samples pass through a shuffle buffer of
    ``shuffle`` samples seeded by (seed, epoch) (0 = file order). The stream is a pure function of (shards,
    seed, rank, world size, workers), and ``skip`` drops that many samples from the start without decoding
    them, which is how a resumed run continues where it stopped. ``size`` scales and crops every picture.
    """

    def __init__(self, shards: str | os.PathLike | list[Path], shuffle: int = 1000, seed: int = 0, rank: int = 0,
                 world_size: int = 1, epochs: int | None = None, skip: int = 0, size: int | None = None) -> None:
        self.shards = shards if isinstance(shards, list) else expand_shards(shards)
        if shuffle < 0:
            raise ShardError(f"shuffle={shuffle} must be a buffer size >= 0")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ShardError(f"rank={rank} must lie in [0, world_size={world_size})")
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.epochs, self.skip, self.size = epochs, skip, size

    def pipeline(self) -> wds.WebDataset:
        """One epoch of raw samples as a ``webdataset.WebDataset``; iterating it again starts the next epoch."""
        n = len(self.shards)
        ds = wds.WebDataset([str(p) for p in self.shards], handler=raise_shard_error, shardshuffle=n,
                            detshuffle=True, seed=self.seed, empty_check=False, workersplitter=None,
                            nodesplitter=partial(split_shards, rank=self.rank, world_size=self.world_size))
        ds = ds.compose(partial(split_samples, shards=n, rank=self.rank, world_size=self.world_size))
        if self.shuffle:
            ds = ds.compose(wds.detshuffle(self.shuffle, initial=self.shuffle, seed=self.seed))
        return ds

    def raw(self) -> Iterator[dict[str, Any]]:
        """Undecoded samples in stream order (after the split and the shuffle buffer)."""
        pipeline = self.pipeline()
        for _ in range(self.epochs) if self.epochs is not None else itertools.count():
            n = 0
            for n, sample in enumerate(pipeline, 1):
                yield sample
            if n == 0:
                raise ShardError(f"shards {[str(p) for p in self.shards[:3]]} hold no samples for reader "
                                 f"{reader_info(self.rank, self.world_size)[0]}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for sample in itertools.islice(self.raw(), self.skip, None):
            yield decode_sample(sample, self.size)

