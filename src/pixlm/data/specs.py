"""Prompt specs for evaluation: what a picture must contain, checked by ``shapes.satisfies``.

A spec file is JSONL, one row per prompt::

    {"prompt": "a red circle above a blue square", "category": "relation",
     "spec": {"objects": [{"shape": "circle", "color": "red"}, {"shape": "square", "color": "blue"}],
              "relations": [[0, "above", 1]], "exact": true}}

``objects`` are partial object dicts (any subset of shape/color/size/row/col); ``relations`` are
``[i, rel, j]`` triples over indices into ``objects``; with ``exact`` (the default) the image may hold no
other object. ``make_dev_set`` writes GenEval-like categories in the exact wording that ``shapes.caption``
uses, so every prompt is in-distribution; ``parse_prompt`` reads that wording back into a spec.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from pixlm.data.jsonl import read_objects
from pixlm.data.shapes import (
    _PLURAL,
    _PREFIXES,
    _SYNONYMS,
    COLORS,
    NUMBER_WORDS,
    OBJECT_KEYS,
    POSITIONS,
    RELATION_WORDS,
    RELATIONS,
    SHAPES,
    SIZES,
)

CATEGORIES = ("single_object", "position", "two_objects", "counting", "color_attribution", "relation")


class Spec(TypedDict):
    """What an image must contain; the argument of ``shapes.satisfies``."""

    objects: list[dict[str, Any]]
    relations: list[list[Any]]
    exact: bool


class SpecRow(TypedDict):
    """One row of a spec file."""

    prompt: str
    category: str
    spec: Spec


class SpecError(ValueError):
    """A malformed spec row or a prompt outside the shapes-world grammar."""


# ---------------------------------------------------------------------------------------------- dev set
def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _np(shape: str, color: str | None = None, size: str | None = None, count: int = 1) -> str:
    """Canonical noun phrase as ``shapes.caption`` writes it: "a small red circle", "three diamonds"."""
    words = [w for w in (size, color) if w]
    words.append(_PLURAL[shape] if count > 1 else shape)
    head = _article(words[0]) if count == 1 else NUMBER_WORDS[count]
    return " ".join([head, *words])


def _obj(**attrs: Any) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if v is not None}


def _single_object(rng: random.Random) -> tuple[str, Spec]:
    shape = rng.choice(SHAPES)
    color = rng.choice(COLORS) if rng.random() < 0.8 else None
    size = rng.choice(SIZES) if rng.random() < 0.3 else None
    return _np(shape, color, size), {"objects": [_obj(shape=shape, color=color, size=size)], "relations": [],
                                     "exact": True}


def _position(rng: random.Random) -> tuple[str, Spec]:
    shape, color = rng.choice(SHAPES), rng.choice(COLORS)
    (row, col), where = rng.choice(sorted(POSITIONS.items()))
    return f"{_np(shape, color)} {where}", {"objects": [_obj(shape=shape, color=color, row=row, col=col)],
                                           "relations": [], "exact": True}


def _two_objects(rng: random.Random) -> tuple[str, Spec]:
    a, b = rng.sample(SHAPES, 2)
    return f"{_np(a)} and {_np(b)}", {"objects": [{"shape": a}, {"shape": b}], "relations": [], "exact": True}


def _counting(rng: random.Random) -> tuple[str, Spec]:
    shape, count = rng.choice(SHAPES), rng.randint(2, 4)
    color = rng.choice(COLORS) if rng.random() < 0.5 else None
    return _np(shape, color, count=count), {"objects": [_obj(shape=shape, color=color) for _ in range(count)],
                                            "relations": [], "exact": True}


def _color_attribution(rng: random.Random) -> tuple[str, Spec]:
    (a, b), (ca, cb) = rng.sample(SHAPES, 2), rng.sample(COLORS, 2)
    return f"{_np(a, ca)} and {_np(b, cb)}", {"objects": [{"shape": a, "color": ca}, {"shape": b, "color": cb}],
                                              "relations": [], "exact": True}


def _relation(rng: random.Random) -> tuple[str, Spec]:
    (a, b), ca, cb = rng.sample(SHAPES, 2), rng.choice(COLORS), rng.choice(COLORS)
    rel = rng.choice(RELATIONS)
    return f"{_np(a, ca)} {RELATION_WORDS[rel]} {_np(b, cb)}", {
        "objects": [{"shape": a, "color": ca}, {"shape": b, "color": cb}], "relations": [[0, rel, 1]], "exact": True}


_GENERATORS: dict[str, Callable[[random.Random], tuple[str, Spec]]] = {
    "single_object": _single_object,
    "position": _position,
    "two_objects": _two_objects,
    "counting": _counting,
    "color_attribution": _color_attribution,
    "relation": _relation,
}


def make_dev_set(seed: int = 0, n_per_category: int = 50) -> list[SpecRow]:
    """``n_per_category`` prompts for each of ``CATEGORIES``, deterministic in ``seed``.

    Prompts within a category are distinct while the category has enough distinct prompts (two_objects has
    only 12); past that they repeat.
    """
    if n_per_category < 1:
        raise ValueError(f"n_per_category={n_per_category} must be >= 1")
    rows: list[SpecRow] = []
    for k, category in enumerate(CATEGORIES):
        rng = random.Random(seed * 1000 + k)
        seen: set[str] = set()
        for _ in range(n_per_category):
            for _attempt in range(200):  # draw until a new prompt turns up (or give up and repeat)
                prompt, spec = _GENERATORS[category](rng)
                if prompt not in seen:
                    break
            seen.add(prompt)
            rows.append({"prompt": prompt, "category": category, "spec": spec})
    return rows


def write_specs(rows: list[SpecRow], path: str | Path) -> Path:
    """Write spec rows as JSONL (one compact row per line) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def dev_prompts_path() -> Path:
    """Where the shipped public dev set lives (``pixlm/assets/dev_prompts.jsonl``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "dev_prompts.jsonl"


# ---------------------------------------------------------------------------------------------- validation
_ALLOWED = {"shape": SHAPES, "color": COLORS, "size": SIZES, "row": (0, 1, 2), "col": (0, 1, 2)}


def validate_spec(spec: Any) -> Spec:
    """Check a spec dict and return it normalised (``relations`` and ``exact`` filled in); raises SpecError."""
    if not isinstance(spec, dict):
        raise SpecError(f"spec must be an object, got {type(spec).__name__}")
    unknown = set(spec) - {"objects", "relations", "exact"}
    if unknown:
        raise SpecError(f"unknown spec keys {sorted(unknown)}; allowed: objects, relations, exact")
    objects = spec.get("objects")
    if not isinstance(objects, list) or not objects:
        raise SpecError(f"spec 'objects' must be a non-empty list, got {objects!r}")
    if len(objects) > 9:
        raise SpecError(f"spec has {len(objects)} objects; a 3×3 grid holds at most 9")
    for i, o in enumerate(objects):
        if not isinstance(o, dict):
            raise SpecError(f"spec object {i} must be an object, got {o!r}")
        for key, value in o.items():
            if key not in _ALLOWED:
                raise SpecError(f"spec object {i} has unknown key {key!r}; allowed: {OBJECT_KEYS}")
            if value not in _ALLOWED[key] or isinstance(value, bool):
                raise SpecError(f"spec object {i}: {key}={value!r} is not one of {_ALLOWED[key]}")
    relations = spec.get("relations", [])
    if not isinstance(relations, list):
        raise SpecError(f"spec 'relations' must be a list, got {relations!r}")
    for r in relations:
        if not (isinstance(r, list) and len(r) == 3):
            raise SpecError(f"relation {r!r} must be [i, relation, j]")
        i, rel, j = r
        for idx in (i, j):
            if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < len(objects):
                raise SpecError(f"relation {r!r}: index {idx!r} must be an int in [0, {len(objects) - 1}]")
        if i == j:
            raise SpecError(f"relation {r!r} relates an object to itself")
        if rel not in RELATIONS:
            raise SpecError(f"relation {r!r}: {rel!r} is not one of {RELATIONS}")
    exact = spec.get("exact", True)
    if not isinstance(exact, bool):
        raise SpecError(f"spec 'exact' must be true or false, got {exact!r}")
    return {"objects": [dict(o) for o in objects], "relations": [list(r) for r in relations], "exact": exact}


def load_specs(path: str | Path | None = None) -> list[SpecRow]:
    """Read and validate a spec JSONL file (default: the shipped dev set). Errors name the file and line."""
    path = Path(path) if path is not None else dev_prompts_path()
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist")
    rows: list[SpecRow] = []
    for _, where, row in read_objects(path, SpecError):
        for key in ("prompt", "category"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise SpecError(f"{where}: {key!r} must be a non-empty string, got {row.get(key)!r}")
        if "spec" not in row:
            raise SpecError(f"{where}: missing 'spec'")
        try:
            spec = validate_spec(row["spec"])
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None
        rows.append({"prompt": row["prompt"], "category": row["category"], "spec": spec})
    if not rows:
        raise SpecError(f"spec file {path} holds no rows")
    return rows


# ---------------------------------------------------------------------------------------------- parsing
def _alternation(words: list[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_NOUNS: dict[str, tuple[str, bool]] = {}  # surface word -> (shape, plural)
for _shape in SHAPES:
    for _w in _SYNONYMS.get(_shape, [_shape]):
        _NOUNS[_w] = (_shape, False)
        _NOUNS[_PLURAL[_w]] = (_shape, True)
_SIZE_WORDS = {w: s for s in SIZES for w in _SYNONYMS.get(s, [s])}
_COUNTS = {"a": 1, "an": 1, "one": 1, **{w: n for n, w in NUMBER_WORDS.items() if n > 1}}
_NP = (rf"(?P<{{p}}num>{_alternation(list(_COUNTS))}) (?:(?P<{{p}}size>{_alternation(list(_SIZE_WORDS))}) )?"
       rf"(?:(?P<{{p}}color>{_alternation(list(COLORS))}) )?(?P<{{p}}noun>{_alternation(list(_NOUNS))})")
_POS_WORDS = {phrase: cell for cell, phrase in POSITIONS.items()}
_REL_WORDS = {phrase: rel for rel, phrase in RELATION_WORDS.items()}
_PART = re.compile(
    rf"^{_NP.format(p='a')}(?: (?:(?P<pos>{_alternation(list(_POS_WORDS))})"
    rf"|(?P<rel>{_alternation(list(_REL_WORDS))}) {_NP.format(p='b')}))?$"
)
_SPLIT = re.compile(r",? and |, ")
_PREFIX = re.compile(rf"^(?:{_alternation([p.strip() for p in _PREFIXES if p.strip()])}) ")


def _np_objects(m: re.Match, p: str) -> list[dict[str, Any]]:
    count, (shape, plural) = _COUNTS[m[f"{p}num"]], _NOUNS[m[f"{p}noun"]]
    if plural != (count > 1):
        raise SpecError(f"{m[0]!r}: number {m[f'{p}num']!r} does not agree with {m[f'{p}noun']!r}")
    size = _SIZE_WORDS[m[f"{p}size"]] if m[f"{p}size"] else None
    return [_obj(shape=shape, color=m[f"{p}color"], size=size) for _ in range(count)]


def parse_prompt(text: str) -> Spec:
    """Turn a shapes-world caption or prompt into an exact spec; raises SpecError outside the grammar.

    The grammar is the one ``shapes.caption`` writes: an optional prefix ("a picture of"), then noun
    phrases ("two small red circles", "a disk") joined by ", " / " and ", each optionally followed by a
    position ("in the top left") or by a relation and a second noun phrase ("above a blue square"). A
    relation between groups holds between every member of one and every member of the other.
    """
    body = _PREFIX.sub("", text.strip().lower().rstrip("."))
    objects: list[dict[str, Any]] = []
    relations: list[list[Any]] = []
    for part in _SPLIT.split(body):
        m = _PART.match(part)
        if m is None:
            raise SpecError(f"cannot parse {part!r} in prompt {text!r}: expected '<number> [size] [colour] "
                            f"<shape>' optionally followed by a position or '<relation> <noun phrase>'")
        first = _np_objects(m, "a")
        if m["pos"]:
            if len(first) > 1:
                raise SpecError(f"{part!r}: a position needs a single object")
            row, col = _POS_WORDS[m["pos"]]
            first[0].update(row=row, col=col)
        ia = list(range(len(objects), len(objects) + len(first)))
        objects.extend(first)
        if m["rel"]:
            second = _np_objects(m, "b")
            ib = list(range(len(objects), len(objects) + len(second)))
            objects.extend(second)
            relations.extend([i, _REL_WORDS[m["rel"]], j] for i in ia for j in ib)
    if len(objects) > 9:
        raise SpecError(f"prompt {text!r} names {len(objects)} objects; a 3×3 grid holds at most 9")
    return {"objects": objects, "relations": relations, "exact": True}
