"""The judge: reads a shapes-world image back into its objects ``{shape, color, size, row, col}``.

Two readers cross-check each other:

* the geometric reader (:mod:`pixlm.data.geometric`) measures each cell's pixels; it is exact on clean renders
  but brittle on blurred, noisy or off-colour pictures;
* the learned reader (:class:`JudgeNet`) is a small CNN trained on renders degraded by
  :func:`pixlm.eval.augment.degrade`; it predicts, for each of the 9 cells, empty-or-shape, colour and size.

The combined verdict takes the learned reading of each cell, except where the learned reader is unsure
(its own reading has probability < ``unsure``) and still finds the geometric reading plausible
(probability ≥ ``plausible``): there the exact measurement breaks the tie. On held-out data the learned
reader alone is already right on clean and degraded renders, and the geometric override only helps on
heavier degradations than it was trained on; the main use of the geometric reader is as an independent
cross-check: every reading says whether the two readers agreed, and the report gives the agreement rate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from pixlm.checkpoint import Pretrained
from pixlm.data.shapes import COLORS, SHAPES, SIZES
from pixlm.data.geometric import read_scene

DEFAULT_JUDGE_DIR = Path(__file__).resolve().parent.parent / "assets" / "judge"
SHAPE_CLASSES = ("empty",) + SHAPES  # class 0 of the shape head means "no object in this cell"
N_CELLS = 9


@dataclass
class JudgeConfig:
    input_size: int = 72  # images are resized to this; a multiple of 24 aligns the 3×3 cells with the 9×9 map
    channels: tuple[int, ...] = (32, 48, 96)  # widths of the 36, 18 and 9 px stages
    cell_hidden: int = 128
    feature_dim: int = 32  # per-cell penultimate features; the image embedding has 9 × feature_dim values

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) != 3:
            raise ValueError(f"channels={self.channels}: need 3 entries (36, 18 and 9 px stages)")
        if self.input_size % 24 != 0:
            raise ValueError(f"input_size={self.input_size} must be a multiple of 24 (3 cells × stride 8)")

    @property
    def embedding_dim(self) -> int:
        return N_CELLS * self.feature_dim


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class JudgeNet(nn.Module, Pretrained):
    """Small CNN: image → per-cell logits for shape-or-empty (5), colour (8) and size (2)."""

    config_class = JudgeConfig
    kind = "judge"

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        self.backbone = nn.Sequential(  # (B, 3, 72, 72) → (B, c3, 9, 9)
            _conv(3, c1, 2), _conv(c1, c1),
            _conv(c1, c2, 2), _conv(c2, c2),
            _conv(c2, c3, 2), _conv(c3, c3),
        )
        # A 3×3 stride-3 convolution on the 9×9 map sees exactly one grid cell per output position.
        self.cell = nn.Sequential(
            nn.Conv2d(c3, config.cell_hidden, 3, 3), nn.ReLU(inplace=True),
            nn.Conv2d(config.cell_hidden, config.feature_dim, 1), nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(config.feature_dim, len(SHAPE_CLASSES) + len(COLORS) + len(SIZES), 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-cell penultimate features (B, feature_dim, 3, 3) of images (B, 3, H, W) in [-1, 1]."""
        s = self.config.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return self.cell(self.backbone(x))  # (B, D, 3, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (B, 9, 5), (B, 9, 8), (B, 9, 2); cell index is row * 3 + col."""
        logits = self.head(self.features(x)).flatten(2).transpose(1, 2)  # (B, 9, 15)
        ns, nc = len(SHAPE_CLASSES), len(COLORS)
        return logits[..., :ns], logits[..., ns:ns + nc], logits[..., ns + nc:]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image embedding (B, 9 × feature_dim) used for distribution distances."""
        return self.features(x).flatten(1)


def scene_targets(objects: Sequence[dict]) -> np.ndarray:
    """(9, 3) int64 targets per cell: shape class (0 = empty), colour index, size index (-100 = ignore)."""
    t = np.full((N_CELLS, 3), -100, dtype=np.int64)
    t[:, 0] = 0
    for o in objects:
        k = o["row"] * 3 + o["col"]
        t[k] = (SHAPE_CLASSES.index(o["shape"]), COLORS.index(o["color"]), SIZES.index(o["size"]))
    return t


def as_image(image: Image.Image | np.ndarray, index: int = 0) -> Image.Image:
    """An RGB PIL image from a PIL image or a uint8 (H, W, 3) array; errors name the image's index."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {index}: expected an (H, W, 3) array, got shape {image.shape}")
        image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    if not isinstance(image, Image.Image):
        raise TypeError(f"image {index}: expected a PIL image or numpy array, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def images_to_batch(images: Sequence[Image.Image | np.ndarray], size: int = 64) -> torch.Tensor:
    """PIL images or uint8 (H, W, 3) arrays → float (B, 3, size, size) in [-1, 1] (resized when needed)."""
    arrs = []
    for i, im in enumerate(images):
        im = as_image(im, i)
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        arrs.append(np.asarray(im, dtype=np.uint8))
    if not arrs:
        return torch.zeros(0, 3, size, size)
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float()
    return x.div(127.5).sub(1.0)


@dataclass
class JudgeReading:
    """The verdict on one image plus what each reader saw."""

    objects: list[dict]
    geometric: list[dict]
    learned: list[dict]
    agree: bool  # the two readers found exactly the same objects
    confidence: float  # lowest per-cell probability of the learned reader's own reading
    cell_probs: list[float] = field(default_factory=list)  # learned probability of the chosen reading, per cell


def _sorted(objs: list[dict]) -> list[dict]:
    return sorted(objs, key=lambda o: (o["row"], o["col"]))


class Judge:
    """Combined geometric + learned judge. ``mode`` is "combined", "learned" or "geometric"."""

    MODES = ("combined", "learned", "geometric")

    def __init__(self, net: JudgeNet, mode: str = "combined", unsure: float = 0.5, plausible: float = 0.05,
                 batch_size: int = 256) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode={mode!r} is not one of {self.MODES}")
        for name, v in (("unsure", unsure), ("plausible", plausible)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}={v} must be in [0, 1]")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.net = net.eval()
        self.mode = mode
        self.unsure, self.plausible = unsure, plausible
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, mode: str = "combined", **kwargs) -> "Judge":
        """Load the judge network from ``path`` (default: the shipped ``assets/judge``)."""
        directory = Path(path) if path is not None else DEFAULT_JUDGE_DIR
        return cls(JudgeNet.from_pretrained(directory), mode=mode, **kwargs)

    @torch.no_grad()
    def probabilities(self, images: Sequence[Image.Image | np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Softmax probabilities (N, 9, 5), (N, 9, 8), (N, 9, 2) of the learned reader."""
        ps, pc, pz = [], [], []
        for i in range(0, len(images), self.batch_size):
            s, c, z = self.net(images_to_batch(images[i:i + self.batch_size]))
            ps.append(s.softmax(-1).numpy())
            pc.append(c.softmax(-1).numpy())
            pz.append(z.softmax(-1).numpy())
        if not ps:
            return np.zeros((0, 9, 5)), np.zeros((0, 9, 8)), np.zeros((0, 9, 2))
        return np.concatenate(ps), np.concatenate(pc), np.concatenate(pz)

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """Image embeddings (N, 9 × feature_dim) as float64, for distribution distances."""
        out = [self.net.embed(images_to_batch(images[i:i + self.batch_size])).double().numpy()
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.net.config.embedding_dim))

    def read_many(self, images: Sequence[Image.Image | np.ndarray]) -> list[JudgeReading]:
        """Read every image; see the module docstring for how the two readers are combined."""
        images = [as_image(im, i) for i, im in enumerate(images)]
        ps, pc, pz = self.probabilities(images)
        readings = []
        for n, im in enumerate(images):
            geo = {(o["row"], o["col"]): o for o in read_scene(im)}
            chosen, learned, probs, own = [], [], [], []
            for k in range(N_CELLS):
                r, c = divmod(k, 3)
                s, col, z = int(ps[n, k].argmax()), int(pc[n, k].argmax()), int(pz[n, k].argmax())
                if s == 0:
                    lo, p_lo = None, float(ps[n, k, 0])
                else:
                    lo = {"shape": SHAPE_CLASSES[s], "color": COLORS[col], "size": SIZES[z], "row": r, "col": c}
                    p_lo = float(ps[n, k, s] * pc[n, k, col] * pz[n, k, z])
                g = geo.get((r, c))
                if g is None:
                    p_g = float(ps[n, k, 0])
                else:
                    p_g = float(ps[n, k, SHAPE_CLASSES.index(g["shape"])] * pc[n, k, COLORS.index(g["color"])]
                                * pz[n, k, SIZES.index(g["size"])])
                if lo is not None:
                    learned.append(lo)
                own.append(p_lo)
                override = self.mode == "combined" and p_lo < self.unsure and p_g >= self.plausible
                if self.mode == "geometric" or override:
                    pick, p = g, p_g
                else:
                    pick, p = lo, p_lo
                if pick is not None:
                    chosen.append(pick)
                probs.append(p)
            geometric = _sorted(list(geo.values()))
            readings.append(JudgeReading(
                objects=_sorted(chosen), geometric=geometric, learned=_sorted(learned),
                agree=geometric == _sorted(learned), confidence=float(min(own)), cell_probs=probs,
            ))
        return readings

    def read(self, image: Image.Image | np.ndarray) -> list[dict]:
        """Objects ``{shape, color, size, row, col}`` in one image, sorted by cell."""
        return self.read_many([image])[0].objects


_DEFAULT: Judge | None = None


def default_judge() -> Judge:
    """The shipped combined judge, loaded once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Judge.load()
    return _DEFAULT


def judge_image(image: Image.Image | np.ndarray) -> list[dict]:
    """Objects found in ``image`` by the shipped combined judge (64×64 canonical; other sizes are resized)."""
    return default_judge().read(image)
