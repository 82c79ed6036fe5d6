"""Webdataset-format tar shards: write them from an imagefolder, stream them back shuffled and split.

A shard is a plain tar file ``NAME-000000.tar``; the files of one sample share a key and sit next to each
other (``00042.png``, ``00042.txt``, ``00042.json``), which is the `webdataset <https://github.com/webdataset>`_
convention, so its tools read pixlm shards and pixlm reads theirs. Members pixlm understands:

* ``.png`` / ``.jpg`` / ``.jpeg`` / ``.webp``: the picture;
* ``.txt``: the caption;
* ``.json``: ``{"objects": [...]}`` (shapes-world scene objects, optional);
* ``.tokens.npy``: the picture already encoded by a tokenizer, an int16 (H, W) grid, so generator training
  skips the VQ encoder.

``index.json`` next to the shards records each shard's sample count (and, for token shards, the tokenizer's
vocabulary and grid), so a reader can check them before training. Only the standard library's ``tarfile``
is used; nothing is unpickled (``.npy`` members load with ``allow_pickle=False``).
"""

from __future__ import annotations

import glob
import io
import json
import os
import random
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import IterableDataset, get_worker_info

from pixlm.data.batch import flatten_alpha, image_to_tensor

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
INDEX = "index.json"


class ShardError(ValueError):
    """A shard pattern that matches nothing, a shard that is not a tar file, or a sample that cannot be read."""


# ---------------------------------------------------------------------------------------------- naming
def expand_shards(spec: str | os.PathLike) -> list[Path]:
    """Shard files named by ``spec``: ``dir/name-{000000..000009}.tar``, a glob, a folder of ``*.tar`` or one file.

    Several specs may be joined with ``::``. Every file must exist.
    """
    paths: list[Path] = []
    for part in str(spec).split("::"):
        m = re.search(r"\{(\d+)\.\.(\d+)\}", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ShardError(f"shard range {m.group(0)!r} in {part!r} runs backwards")
            width = len(m.group(1))
            paths += [Path(part[:m.start()] + f"{i:0{width}d}" + part[m.end():]) for i in range(lo, hi + 1)]
        elif any(c in part for c in "*?["):
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
    """Write samples (``{"__key__": str, "png": bytes, "txt": bytes, ...}``) into tar shards of ``shard_size``.

    Each shard is written as ``NAME-000000.tar.tmp`` and renamed when full, so a crash never leaves a
    truncated ``.tar``; ``close`` writes ``index.json``. Tar headers carry no time or owner, so the same
    samples always give the same bytes.
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
        self._tar: tarfile.TarFile | None = None

    def _roll(self) -> None:
        self._finish()
        self._tmp = self.out / f"{self.prefix}-{len(self.counts):06d}.tar.tmp"
        self._tar = tarfile.open(self._tmp, "w")
        self.counts.append(0)

    def _finish(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(self._tmp, self._tmp.with_suffix(""))
            self._tar = None

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        if not key or "." in key or "/" in key:
            raise ShardError(f"sample key {key!r} must be non-empty without '.' or '/'")
        if self._tar is None or self.counts[-1] >= self.shard_size:
            self._roll()
        assert self._tar is not None
        for ext, data in sample.items():
            if ext == "__key__":
                continue
            member = tarfile.TarInfo(f"{key}.{ext}")
            member.size, member.mode, member.mtime = len(data), 0o644, 0
            self._tar.addfile(member, io.BytesIO(data))
        self.counts[-1] += 1

    def close(self) -> list[Path]:
        """Finish the last shard and write ``index.json``; returns the shard paths."""
        if self.paths is not None:
            return self.paths
        self._finish()
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
        elif self._tar is not None:
            self._tar.close()


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
                sample = {"__key__": f"{i:0{digits}d}", ext: row.path.read_bytes(), "txt": row.text.encode()}
                if row.objects is not None:
                    sample["json"] = json.dumps({"objects": row.objects}).encode()
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
                buf = io.BytesIO()
                np.save(buf, grid, allow_pickle=False)
                sample = {"__key__": f"{start + k:0{digits}d}", "tokens.npy": buf.getvalue(),
                          "txt": it["text"].encode()}
                if it["objects"] is not None:
                    sample["json"] = json.dumps({"objects": it["objects"]}).encode()
                w.write(sample)
            w.info["grid"] = list(grids.shape[1:])
    return w.close()


# ---------------------------------------------------------------------------------------------- reading
def iter_tar(path: Path) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard in file order: ``{"__key__", "__shard__", ext: bytes, ...}``."""
    try:
        tar = tarfile.open(path, "r")
    except (tarfile.TarError, OSError) as e:
        raise ShardError(f"cannot open shard {path}: {e}") from None
    with tar:
        sample: dict[str, Any] = {}
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            if "." not in base:
                continue
            key, ext = base.split(".", 1)
            if sample and key != sample["__key__"]:
                yield sample
                sample = {}
            if not sample:
                sample = {"__key__": key, "__shard__": str(path)}
            f = tar.extractfile(member)
            assert f is not None
            sample[ext.lower()] = f.read()
        if sample:
            yield sample


def decode_sample(raw: dict[str, Any], size: int | None = None) -> dict[str, Any]:
    """Raw bytes → ``{"text", "objects", "image" (3, H, W) in [-1, 1] and/or "tokens" (H*W,) int64}``.

    With ``size`` pictures are scaled (shorter side) and centre-cropped to ``size``×``size``, as ``ImageFolder`` does.
    """
    where = f"sample {raw['__key__']!r} of {raw['__shard__']}"
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


class ShardStream(IterableDataset):
    """Endless (or ``epochs``-long) shuffled stream of decoded samples from tar shards.

    Each epoch visits the shards in an order drawn from (seed, epoch) and passes samples through a shuffle
    buffer of ``shuffle`` samples (0 = file order). Processes (``rank``/``world_size``) and DataLoader workers
    each read a disjoint part: whole shards when there are at least as many shards as readers, otherwise
    every n-th sample. The stream is a pure function of (shards, seed, rank, world size, workers), and
    ``skip`` drops that many samples from the start without decoding them, which is how a resumed run
    continues where it stopped. ``size`` scales and crops every picture to a square of that side.
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

    def _reader(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def raw(self) -> Iterator[dict[str, Any]]:
        """Undecoded samples in stream order (after the split and the shuffle buffer)."""
        reader, readers = self._reader()
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            order = list(self.shards)
            random.Random(f"{self.seed}/{epoch}").shuffle(order)
            if len(order) >= readers:
                mine, every = order[reader::readers], 1
            else:
                mine, every = order, readers
            rng = random.Random(f"{self.seed}/{epoch}/{reader}")
            buf: list[dict[str, Any]] = []
            n = 0
            for shard in mine:
                for sample in iter_tar(shard):
                    n += 1
                    if every > 1 and (n - 1) % every != reader:
                        continue
                    if self.shuffle == 0:
                        yield sample
                        continue
                    buf.append(sample)
                    if len(buf) >= self.shuffle:
                        j = rng.randrange(len(buf))
                        buf[j], buf[-1] = buf[-1], buf[j]
                        yield buf.pop()
            rng.shuffle(buf)
            yield from buf
            if n == 0:
                raise ShardError(f"shards {[str(p) for p in mine[:3]]} hold no samples")
            epoch += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i, sample in enumerate(self.raw()):
            if i >= self.skip:
                yield decode_sample(sample, self.size)


def batches(stream: Iterable[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Group a stream into lists of ``batch_size`` samples."""
    it = iter(stream)
    while True:
        batch = [s for _, s in zip(range(batch_size), it)]
        if len(batch) < batch_size:
            return
        yield batch
