"""The embedded "shapes" world: coloured shapes on a 3×3 grid, with captions and exact scene labels.

Geometry (for the default 64 px canvas; every number scales with ``size``):
cells of side size/3, row 0 at the top; a large object's box is 0.8 × cell, a small one's 0.5 × cell;
the box centre is the cell centre plus uniform jitter in [-size/48, +size/48] on each axis.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import permutations
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (235, 200, 30),
    "green": (40, 160, 60),
    "cyan": (30, 180, 200),
    "blue": (40, 80, 220),
    "purple": (140, 60, 180),
    "pink": (230, 90, 170),
}
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ("small", "large")
SIZE_FRACTION = {"large": 0.8, "small": 0.5}
BACKGROUND = (255, 255, 255)
NUMBER_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
POSITIONS = {  # (row, col) -> canonical phrase
    (0, 0): "in the top left", (0, 1): "at the top", (0, 2): "in the top right",
    (1, 0): "on the left", (1, 1): "in the center", (1, 2): "on the right",
    (2, 0): "in the bottom left", (2, 1): "at the bottom", (2, 2): "in the bottom right",
}
RELATIONS = ("above", "below", "left of", "right of")
RELATION_WORDS = {"above": "above", "below": "below", "left of": "to the left of", "right of": "to the right of"}
OBJECT_KEYS = ("shape", "color", "size", "row", "col")


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene. ``row``/``col`` index the 3×3 grid, (0, 0) is the top-left cell."""

    shape: str
    color: str
    size: str
    row: int
    col: int

    def __post_init__(self) -> None:
        for key, allowed in (("shape", SHAPES), ("color", COLORS), ("size", SIZES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key}={getattr(self, key)!r} is not one of {allowed}")
        for key in ("row", "col"):
            if getattr(self, key) not in (0, 1, 2):
                raise ValueError(f"{key}={getattr(self, key)!r} must be 0, 1 or 2")

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "row": self.row, "col": self.col}


@dataclass
class Scene:
    """A structured scene: objects in distinct cells plus the sub-pixel jitter of each box centre."""

    objects: list[ShapeObject]
    jitter: list[tuple[float, float]] = field(default_factory=list)  # in units of size/48, each in [-1, 1]

    def __post_init__(self) -> None:
        cells = [(o.row, o.col) for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two objects share a cell: {cells}")
        if not self.jitter:
            self.jitter = [(0.0, 0.0)] * len(self.objects)
        if len(self.jitter) != len(self.objects):
            raise ValueError("jitter must have one (dx, dy) pair per object")

    def to_dicts(self) -> list[dict]:
        return [o.to_dict() for o in self.objects]

    @classmethod
    def from_dicts(cls, objects: list[dict]) -> "Scene":
        return cls([ShapeObject(**{k: o[k] for k in OBJECT_KEYS}) for o in objects])


def random_scene(rng: random.Random, min_objects: int = 1, max_objects: int = 4) -> Scene:
    """Sample 1–4 objects in distinct cells. Identical objects are made likelier so counting is learnable."""
    n = rng.randint(min_objects, max_objects)
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], n)
    objects = []
    for i, (r, c) in enumerate(cells):
        if i > 0 and rng.random() < 0.3:  # copy shape/colour/size of an earlier object: groups like "three red circles"
            o = rng.choice(objects)
            objects.append(ShapeObject(o.shape, o.color, o.size, r, c))
        else:
            objects.append(ShapeObject(rng.choice(SHAPES), rng.choice(COLORS), rng.choice(SIZES), r, c))
    jitter = [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in objects]
    return Scene(objects, jitter)


def object_box(o: ShapeObject, jitter: tuple[float, float], size: int = 64) -> tuple[float, float, float]:
    """Centre x, centre y and side of the object's bounding box, in pixels."""
    cell = size / 3
    side = SIZE_FRACTION[o.size] * cell
    cx = (o.col + 0.5) * cell + jitter[0] * size / 48
    cy = (o.row + 0.5) * cell + jitter[1] * size / 48
    return cx, cy, side


def render(scene: Scene, size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw the scene on a white ``size``×``size`` canvas; edges anti-aliased by supersampling."""
    k = supersample
    img = Image.new("RGB", (size * k, size * k), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o, jit in zip(scene.objects, scene.jitter):
        cx, cy, side = object_box(o, jit, size)
        x0, y0, x1, y1 = [v * k for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)]
        mx, my = cx * k, cy * k
        fill = PALETTE[o.color]
        # PIL rectangles/ellipses include their end pixel, hence the -1 on the far edge.
        if o.shape == "circle":
            draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif o.shape == "square":
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(mx, y0), (x1, y1), (x0, y1)], fill=fill)
        else:  # diamond
            draw.polygon([(mx, y0), (x1, my), (mx, y1), (x0, my)], fill=fill)
    return img.resize((size, size), Image.BOX) if k > 1 else img


# ---------------------------------------------------------------------------------------------- captions
_SYNONYMS = {  # paraphrase variety used in a minority of training captions
    "circle": ["circle", "circle", "circle", "disk", "round dot"],
    "square": ["square", "square", "square", "box", "block"],
    "triangle": ["triangle"],
    "diamond": ["diamond", "diamond", "diamond", "rhombus"],
    "small": ["small", "small", "little", "tiny"],
    "large": ["large", "large", "big"],
}
_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
           "disk": "disks", "round dot": "round dots", "box": "boxes", "block": "blocks", "rhombus": "rhombuses"}
_PREFIXES = ["", "", "", "", "a picture of ", "an image of ", "there is ", "a drawing of ", "this shows ", "there are "]


def _word(rng: random.Random, w: str, paraphrase: bool) -> str:
    return rng.choice(_SYNONYMS.get(w, [w])) if paraphrase else w


def _phrase(rng: random.Random, o: ShapeObject, count: int, show: dict, paraphrase: bool) -> str:
    """Noun phrase for ``count`` identical objects, e.g. "two small red circles"."""
    words = [NUMBER_WORDS[count]]
    if show["size"]:
        words.append(_word(rng, o.size, paraphrase))
    if show["color"]:
        words.append(o.color)
    noun = _word(rng, o.shape, paraphrase)
    words.append(_PLURAL[noun] if count > 1 else noun)
    if count == 1 and words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


def caption(scene: Scene, rng: random.Random, paraphrase: float = 0.15) -> str:
    """A caption that mentions every object; detail, grouping, relations and wording vary with ``rng``."""
    para = rng.random() < paraphrase
    show = {"size": rng.random() < 0.5, "color": rng.random() < 0.85}
    show_pos = rng.random() < 0.7
    # Group identical objects (as described: colour/size only matter when shown).
    def key(o: ShapeObject) -> tuple:
        return (o.shape, o.color if show["color"] else None, o.size if show["size"] else None)

    groups: dict[tuple, list[ShapeObject]] = {}
    for o in scene.objects:
        groups.setdefault(key(o), []).append(o)
    parts: list[str] = []
    singles = [g[0] for g in groups.values() if len(g) == 1]
    multi = [g for g in groups.values() if len(g) > 1]
    if multi and rng.random() < 0.25:  # sometimes list identical objects one by one with their positions
        g = multi.pop(rng.randrange(len(multi)))
        singles.extend(g)
    for g in multi:
        parts.append(_phrase(rng, g[0], len(g), show, para))
    rng.shuffle(singles)
    # Sometimes describe a pair of single objects by a relation that holds between them.
    if len(singles) >= 2 and rng.random() < 0.4:
        a, b = singles.pop(), singles.pop()
        rels = [r for r in RELATIONS if relation_holds(a, r, b)]
        rel = rng.choice(rels)
        parts.append(f"{_phrase(rng, a, 1, show, para)} {RELATION_WORDS[rel]} {_phrase(rng, b, 1, show, para)}")
    for o in singles:
        p = _phrase(rng, o, 1, show, para)
        if show_pos:
            p += " " + POSITIONS[(o.row, o.col)]
        parts.append(p)
    rng.shuffle(parts)
    if len(parts) == 1:
        text = parts[0]
    else:
        text = ", ".join(parts[:-1]) + rng.choice([" and ", ", and ", " and "]) + parts[-1]
    if para or rng.random() < 0.2:
        prefix = rng.choice(_PREFIXES[:-1])
        if prefix == "there is " and not text.startswith(("a ", "an ")):
            prefix = "there are "  # "there are two blue triangles"
        return prefix + text
    return text


INVERSE_RELATION = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


def group_relation_scene(rng: random.Random) -> tuple[Scene, str]:
    """A scene of two groups of identical objects (1–3 each, 3 or 4 in all) with a caption relating them.

    E.g. "two red circles above a blue square": every object of the first group stands in the relation to every
    object of the second (the rows or columns of the two groups do not overlap). ``caption`` only ever relates
    two single objects; these pairs teach the generator counts and relations together.
    """
    rel = rng.choice(RELATIONS)
    ka, kb = rng.choice([(2, 1), (1, 2), (3, 1), (1, 3), (2, 2)])
    split = rng.choice([1, 2])  # first row (or column) of the later band
    first = [(r, c) for r in range(split) for c in range(3)]
    later = [(r, c) for r in range(split, 3) for c in range(3)]
    if rel in ("left of", "right of"):
        first, later = [(c, r) for r, c in first], [(c, r) for r, c in later]
    if rel in ("below", "right of"):
        first, later = later, first  # group a sits in the later band (each band has 3 or 6 cells)
    show = {"size": rng.random() < 0.4, "color": rng.random() < 0.9}
    groups = []
    for cells, k in ((rng.sample(first, ka), ka), (rng.sample(later, kb), kb)):
        shape, color, size = rng.choice(SHAPES), rng.choice(COLORS), rng.choice(SIZES)
        sizes = [size] * k if show["size"] else [rng.choice(SIZES) for _ in range(k)]
        groups.append([ShapeObject(shape, color, z, r, c) for (r, c), z in zip(cells, sizes)])
    a, b = groups
    para = rng.random() < 0.15
    if rng.random() < 0.5:
        text = f"{_phrase(rng, a[0], ka, show, para)} {RELATION_WORDS[rel]} {_phrase(rng, b[0], kb, show, para)}"
    else:
        inv = INVERSE_RELATION[rel]
        text = f"{_phrase(rng, b[0], kb, show, para)} {RELATION_WORDS[inv]} {_phrase(rng, a[0], ka, show, para)}"
    if rng.random() < 0.2:
        prefix = rng.choice(_PREFIXES[:-1])
        text = ("there are " if prefix == "there is " and not text.startswith(("a ", "an ")) else prefix) + text
    objects = a + b
    return Scene(objects, [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in objects]), text


def relation_holds(a: ShapeObject | dict, rel: str, b: ShapeObject | dict) -> bool:
    """Relations compare grid cells: "above" means a strictly smaller row, "left of" a smaller column."""
    ar, ac = (a["row"], a["col"]) if isinstance(a, dict) else (a.row, a.col)
    br, bc = (b["row"], b["col"]) if isinstance(b, dict) else (b.row, b.col)
    if rel == "above":
        return ar < br
    if rel == "below":
        return ar > br
    if rel == "left of":
        return ac < bc
    if rel == "right of":
        return ac > bc
    raise ValueError(f"relation {rel!r} is not one of {RELATIONS}")


# ---------------------------------------------------------------------------------------------- specs
def satisfies(objects: list[dict], spec: dict) -> bool:
    """True when a one-to-one assignment of spec objects to image objects meets every attribute and relation.

    With ``spec["exact"]`` (default True) the image must hold no other object.
    """
    want = spec.get("objects", [])
    rels = spec.get("relations", [])
    if spec.get("exact", True) and len(objects) != len(want):
        return False
    if len(want) > len(objects):
        return False
    for perm in permutations(range(len(objects)), len(want)):
        if all(all(objects[j].get(k) == v for k, v in w.items()) for w, j in zip(want, perm)) and all(
            relation_holds(objects[perm[i]], rel, objects[perm[j]]) for i, rel, j in rels
        ):
            return True
    return False


def iter_scenes(seed: int, n: int | None = None, size: int = 64) -> Iterator[tuple[Image.Image, str, Scene]]:
    """Deterministic stream of (image, caption, scene); infinite when ``n`` is None."""
    rng = random.Random(seed)
    i = 0
    while n is None or i < n:
        scene = random_scene(rng)
        yield render(scene, size), caption(scene, rng), scene
        i += 1


def to_array(img: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) view of a PIL image."""
    return np.asarray(img.convert("RGB"), dtype=np.uint8)
