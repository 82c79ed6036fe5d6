"""Free wording → the caption grammar: ``read_free_prompt`` reads a freely worded prompt ("Draw me a big azure
box!", "a crimson disc along the top edge", "two shapes: a dot and a triangular one") into the objects it names,
``parse_free_prompt`` gives its exact spec and ``canonical_prompt`` rewrites it in the caption grammar the
generator was trained on ("a large blue square"). The vocabulary is the training phrasings' word lists
(:mod:`pixlm.data.phrasing`) plus common variants; no evaluation prompt is part of it.

It sits above ``specs``, ``loose`` and ``phrasing`` (it reads their word lists), so none of them imports it.
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass
from typing import Any

from pixlm.data import loose, phrasing
from pixlm.data.loose import Group, Part, canonical, intended_specs
from pixlm.data.shapes import SHAPES
from pixlm.data.specs import Spec, SpecError


# ---------------------------------------------------------------------------------------------- the slot reader
# A freely worded prompt is read word by word into typed slots (count, size, colour, shape noun, vague noun,
# position, relation, separator); everything else ("please", "that is", "placed", "the") carries no meaning here.
# Objects form around the nouns: attributes said before a noun belong to it, attributes said after it ("a box,
# blue and tiny", "a diamond that is orange") to the noun before them. A position before a clause's noun ("top
# left: a red circle") belongs to that noun, after it to the noun before. A relation joins the object before it
# to the object after it ("a square with a circle above it": the circle is above the square). Unknown words of
# four letters or more are matched to the vocabulary when they are one slip away ("trinagle", "purpel").
_VERT = {"top": 0, "upper": 0, "up": 0, "bottom": 2, "lower": 2, "down": 2, "middle": 1, "center": 1, "centre": 1,
         "mid": 1, "central": 1}
_HORIZ = {"left": 0, "right": 2, "middle": 1, "center": 1, "centre": 1, "mid": 1, "central": 1}
_AREA = ("corner", "side", "edge", "part", "area", "region", "half", "hand side", "handside", "section", "spot")
_CANVAS = ("picture", "image", "canvas", "frame", "page", "scene", "drawing", "grid", "box", "square")
_EXTRA_SHAPES = {"circle": ["circular", "round", "rounded", "roundish", "oval", "ring less circle"],
                 "square": ["rectangular", "squared", "boxy", "square shaped", "quadrilateral"],
                 "triangle": ["triangular", "triangle shaped", "three sided", "3 sided"],
                 "diamond": ["rhomboid", "diamond shaped", "rhombic", "lozenge shaped"]}
_EXTRA_SIZES = {"small": ["teeny", "teensy", "minuscule", "petite", "smaller", "little bitty", "itty bitty",
                          "small sized", "mini sized", "wee little"],
                "large": ["oversized", "enormous", "gigantic", "massive", "bigger", "larger", "large sized",
                          "big sized", "jumbo", "mega", "very large", "very big", "really big", "extra large"]}
_SEPARATORS = ["and", ",", ";", "&", "+", "plus", "with", "as well as", "together with", "also", "along with",
               "alongside", "next to", "beside", "besides", "and also", "then", "and then", "as well"]
_PRONOUNS = ("it", "them", "that one", "this one", "that", "this", "those", "these")
_GENERIC = {w: plural for s, p in phrasing.VAGUE_NOUNS for w, plural in ((s, False), (p, True)) if w != "one"} | {
    "ones": True, "something": False, "somethings": True, "form": False, "forms": True, "piece": False, "pieces": True,
    "element": False, "elements": True, "mark": False, "marks": True}
_Slot = tuple[str, Any]  # (kind, value)


def _combine(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Two positions said one after the other: an edge and a side make a corner; the centre yields to the other."""
    if a == (1, 1):
        return b
    if b == (1, 1):
        return a
    row = a[0] if a[0] != 1 else b[0]
    col = a[1] if a[1] != 1 else b[1]
    return (row, col)


def _lexicon() -> tuple[dict[tuple[str, ...], _Slot], int, list[str], set[str]]:
    """Word sequence → slot, the longest entry's length, the content words a typo may be matched to, and every
    word the entries use (never taken for a typo)."""
    lex: dict[tuple[str, ...], _Slot] = {}

    def add(phrase: str, slot: _Slot) -> None:
        key = tuple(re.sub(r"[-_]", " ", phrase.lower()).replace("'", " '").split())
        if key:
            lex.setdefault(key, slot)

    for sep in _SEPARATORS:
        add(sep, ("sep", sep))
    for rel, words in phrasing.REL_WORDS.items():
        for w in words:
            add(w, ("rel", rel))
    for rel, words in {"above": ["on top of", "over top of", "higher up than", "up above", "directly above",
                                 "right above", "sitting on", "resting on", "stacked on"],
                       "below": ["underneath", "beneath", "lower down than", "directly below", "right below",
                                 "under neath", "supporting"],
                       "left of": ["to the left of", "on the left of", "left of", "west of", "on the left side of"],
                       "right of": ["to the right of", "on the right of", "right of", "east of",
                                    "on the right side of"]}.items():
        for w in words:
            add(w, ("rel", rel))
    for rel, side in (("left of", "left"), ("right of", "right")):
        for w in (f"to its {side}", f"on its {side}", f"at its {side}", f"to the {side} of it", f"on the {side} of it"):
            add(w, ("rel_it", rel))
    for rel, words in {"above": ["above it", "over it", "on top of it", "on it"], "below": ["below it", "under it",
                                                                                            "beneath it"]}.items():
        for w in words:
            add(w, ("rel_it", rel))
    for color, words in phrasing.COLOR_WORDS.items():
        for w in words + [color]:
            add(w, ("color", color))
            for suffix in ("colored", "coloured", "color", "colour", "hued", "tinted", "ish"):
                add(f"{w} {suffix}", ("color", color))
    for shape, forms in phrasing.NOUNS.items():
        for s, p in forms:
            add(s, ("shape", (shape, False)))
            add(p, ("shape", (shape, True)))
        for w in _EXTRA_SHAPES[shape]:
            add(w, ("shape", (shape, False)))
    for size, words in {**phrasing.SIZE_WORDS}.items():
        for w in words + _EXTRA_SIZES[size] + [size]:
            add(w, ("size", size))
    for n, words in phrasing.COUNT_WORDS.items():
        for w in words:
            if w not in ("a", "an", "one", "1"):
                add(w, ("count", n))
    for n, w in enumerate("five six seven eight nine ten eleven twelve".split(), start=5):  # read, then refused
        add(w, ("count", n))
        add(str(n), ("count", n))
    for w, allowed in loose.VAGUE_COUNTS.items():
        add(w, ("count", allowed[0]))
    for w, n in (("pair of", 2), ("couple of", 2), ("trio of", 3), ("quartet of", 4), ("both", None),
                 ("two of", 2), ("three of", 3), ("four of", 4)):
        add(w, ("count", n) if n else ("skip", None))
    for cell, words in phrasing.POSITION_WORDS.items():
        for w in words:
            add(w, ("pos", cell))
    for v, row in _VERT.items():  # every "<vertical> <horizontal> [corner|side|…] [of the picture]" and the reverse
        for h, col in _HORIZ.items():
            for a, b in ((v, h), (h, v)):
                for area in ("", *_AREA):
                    add(f"{a} {b} {area}", ("pos", (row, col)))
    for w, cell in (("left", (1, 0)), ("right", (1, 2)), ("top", (0, 1)), ("bottom", (2, 1)), ("upper", (0, 1)),
                    ("lower", (2, 1)), ("middle", (1, 1)), ("center", (1, 1)), ("centre", (1, 1)),
                    ("centered", (1, 1)), ("centred", (1, 1)), ("dead center", (1, 1)), ("dead centre", (1, 1))):
        for area in ("", *_AREA):
            add(f"{w} {area}", ("pos", cell))
    for key, slot in list(lex.items()):  # "… of the picture", "… of the image"
        if slot[0] == "pos":
            for canvas in _CANVAS:
                lex.setdefault((*key, "of", "the", canvas), slot)
    for w in _GENERIC:
        add(w, ("noun", (None, _GENERIC[w])))
    for w in _PRONOUNS:
        add(w, ("pron", None))
    known = {w for k in lex for w in k}
    content = sorted({w for k, (kind, _) in lex.items() for w in k if w.isalpha() and len(w) >= 4
                      and kind in ("color", "shape", "size", "count", "noun", "rel", "pos")} - _PLAIN_WORDS)
    return lex, max(len(k) for k in lex), content, known


_LEX: tuple[dict[tuple[str, ...], _Slot], int, list[str], set[str]] | None = None
_PLAIN_WORDS = frozenset(  # common words of prompts that sit one slip away from a colour or shape word
    "please draw make show give want need like would could have that this there their these those then than "
    "with without where which while what when place placed plain blur sure create created creating great".split())


def _slots(text: str) -> list[_Slot]:
    """The prompt as a list of slots (see the section comment); words outside the vocabulary are dropped."""
    global _LEX
    if _LEX is None:
        _LEX = _lexicon()
    lex, longest, vocab, known = _LEX
    body = text.lower().replace("’", "'")
    body = re.sub(r"[\"“”()\[\]{}]", " , ", body)
    body = re.sub(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)", " ", body)  # "2circles"
    body = re.sub(r"[-_/]", " ", body)
    body = re.sub(r"([,;:&+])", r" \1 ", body)
    body = re.sub(r"[.!?]+", " ", body)
    body = body.replace("'", " '")
    words = body.split()
    for i, w in enumerate(words):  # one slip away from a vocabulary word: a typo
        if w.isalpha() and len(w) >= 4 and w not in known and w not in _PLAIN_WORDS:
            close = difflib.get_close_matches(w, vocab, n=1, cutoff=0.8)
            if close:
                words[i] = close[0]
    out: list[_Slot] = []
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            slot = lex.get(tuple(words[i:i + n]))
            if slot is not None:
                break
        else:
            if words[i] == ":":
                out.append(("colon", None))
            elif words[i] == "one" or words[i] == "1":
                out.append(("one", None))
            i += 1
            continue
        if slot[0] == "pos" and words[i] == "right" and n == 1 and i + 1 < len(words) and words[i + 1] in (
                "in", "at", "on", "by", "next", "there", "here", "inside", "along", "near"):
            slot = ("skip", None)  # "right in the middle": not a position
        if slot[0] == "rel_it":
            out.extend([("rel", slot[1]), ("pron", None)])
        elif slot[0] != "skip":
            out.append(slot)
        i += n
    for j, (kind, _) in enumerate(out):  # "one": a count before a noun phrase, else a vague noun ("a blue one")
        if kind == "one":
            nxt = out[j + 1][0] if j + 1 < len(out) else None
            prev = out[j - 1][0] if j else None
            count = nxt in ("size", "color", "noun", "shape") and prev not in ("size", "color")
            out[j] = ("count", 1) if count else ("noun", (None, False))
    return out


@dataclass
class _Obj:
    shape: str | None = None
    count: int | None = None
    plural: bool = False
    color: str | None = None
    size: str | None = None
    cell: tuple[int, int] | None = None


def read_free_prompt(text: str) -> tuple[list[_Obj], list[tuple[int, str, int]]]:
    """The groups a freely worded prompt names and the relations between them, or SpecError saying why not.

    Each group is a number of identical objects (``count``, 1 unless said), with the shape left None when the
    prompt only says "thing", "shape" or "one"."""
    slots = _slots(text)
    objs: list[_Obj] = []
    rels: list[tuple[int, str, int]] = []
    pending: dict[str, Any] = {}  # attributes waiting for the noun after them
    pending_cell: tuple[int, int] | None = None
    pending_rel: str | None = None
    back_rel: tuple[str, int] | None = None  # "…, and below it a square": (relation, the object "it" names)
    last_kind: str | None = None
    prev_cell: tuple[int, int] | None = None
    attrs_since_shape = False  # only attributes said since a shape noun ("a round red …")
    last_sep: str | None = None  # the separator said last ("," or "and" …)

    def fail(why: str) -> SpecError:
        return SpecError(f"prompt {text!r} is outside the grammar: {why}")

    def attach(o: _Obj, key: str, value: Any) -> None:
        old = getattr(o, key)
        if old is not None and old != value:
            raise fail(f"two {key}s for one object ({old!r} and {value!r})")
        setattr(o, key, value)

    def flush_back() -> None:  # attributes after a noun belong to the noun before them
        nonlocal pending
        if pending:
            if not objs:
                raise fail(f"{', '.join(map(str, pending.values()))} names no shape")
            for k, v in pending.items():
                attach(objs[-1], k, v)
            pending = {}

    for j, (kind, value) in enumerate(slots):
        nxt = slots[j + 1][0] if j + 1 < len(slots) else None
        attrs_since_shape = last_kind == "shape" or (attrs_since_shape and last_kind in ("size", "color"))
        if last_kind == "sep":
            last_sep = slots[j - 1][1]
        if kind in ("count", "size", "color"):
            key = kind
            if key in pending and pending[key] != value:  # a second colour before one noun: the first one
                flush_back()  # belonged to the noun before ("a circle, red, blue square")
            pending[key] = value
            if kind != "count" and nxt not in ("size", "color", "noun", "shape"):
                flush_back()  # "a box, blue and tiny": said after the noun
        elif kind in ("shape", "noun"):
            shape, plural = value
            if shape is None and objs and (last_kind == "shape" or (attrs_since_shape and pending)):
                objs[-1].plural = objs[-1].plural or plural  # "a triangle shape", "a round red shape"
                for k, v in pending.items():
                    attach(objs[-1], k, v)
                pending = {}
                continue
            if kind == "shape" and last_kind == "noun" and objs and objs[-1].shape is None and not pending:
                objs[-1].shape = shape  # "a shape: triangle"
                continue
            o = _Obj(shape=shape, plural=plural)
            for k, v in pending.items():
                setattr(o, k, v)
            pending = {}
            objs.append(o)
            if pending_cell is not None:
                o.cell, pending_cell = pending_cell, None
            if pending_rel is not None:
                rels.append((len(objs) - 2, pending_rel, len(objs) - 1))
                pending_rel = None
            if back_rel is not None:
                rels.append((len(objs) - 1, back_rel[0], back_rel[1]))
                back_rel = None
        elif kind == "pos":
            if last_kind == "pos":  # "in the middle of the left side", "at the top, on the left"
                value = _combine(prev_cell, value)  # type: ignore[arg-type]
                if pending_cell is not None:
                    pending_cell = None
                elif objs:
                    objs[-1].cell = None
            prev_cell = value
            np_start = ("colon", "count", "size", "color", "noun", "shape")
            after = slots[j + 2][0] if j + 2 < len(slots) else None
            if not objs or (last_kind in ("sep", "colon") and (nxt in np_start or (
                    nxt == "sep" and slots[j + 1][1] == "," and after in np_start and last_sep != ","))):
                if pending_cell is not None:
                    raise fail("two positions before one object")
                pending_cell = value  # "top left: a red circle", "…, and in the corner a square"
            else:
                attach(objs[-1], "cell", value)
        elif kind == "rel":
            flush_back()
            if nxt == "pron":
                later = [k for k, _ in slots[j + 2:] if k in ("sep", "noun", "shape", "rel")]
                if objs and later and later[0] in ("noun", "shape"):  # "a circle, and below it a square"
                    back_rel = (value, len(objs) - 1)
                elif len(objs) >= 2:  # "a square with a circle above it"
                    rels.append((len(objs) - 1, value, len(objs) - 2))
                else:
                    raise fail(f"'{value} it' with nothing for 'it' to name")
            elif not objs:
                raise fail(f"the relation {value!r} has nothing on its left")
            else:
                pending_rel = value
        elif kind == "colon":
            if objs and objs[-1].shape is None and objs[-1].plural and not objs[-1].color and not objs[-1].size:
                objs.pop()  # "two shapes: a dot and a triangle"
        last_kind = kind
    flush_back()
    if pending_rel is not None:
        raise fail(f"the relation {pending_rel!r} has nothing on its right")
    if pending_cell is not None:
        if len(objs) == 1 and objs[0].cell is None:
            objs[0].cell = pending_cell
        else:
            raise fail("a position that belongs to no object")
    if not objs:
        raise fail("it names no object")
    for o in objs:
        if o.count is None:
            o.count = 2 if o.plural else 1
        if o.count == 1 and o.plural and o.shape is not None:
            raise fail(f"'one' with the plural {o.shape}s")
        if not 1 <= o.count <= 4:
            raise fail(f"{o.count} of one kind; at most 4")
        if o.cell is not None and o.count > 1:
            raise fail("a position needs a single object")
    in_rel = [i for a, _, b in rels for i in (a, b)]
    if any(objs[i].cell is not None for i in in_rel):
        raise fail("an object with both a position and a relation")
    if len(set(in_rel)) < len(in_rel):
        raise fail("an object in more than one relation")
    if sum(o.count for o in objs) > 9:  # type: ignore[misc]
        raise fail("more than 9 objects; a 3×3 grid holds at most 9")
    return objs, rels


def parse_free_prompt(text: str) -> Spec:
    """The exact spec of a freely worded prompt (see ``read_free_prompt``); a shape the prompt leaves open is left
    out of its objects. SpecError when the prompt cannot be read."""
    objs, rels = read_free_prompt(text)
    objects: list[dict[str, Any]] = []
    index: list[list[int]] = []
    for o in objs:
        index.append(list(range(len(objects), len(objects) + o.count)))  # type: ignore[arg-type]
        for _ in range(o.count):  # type: ignore[arg-type]
            d = {k: v for k, v in (("shape", o.shape), ("color", o.color), ("size", o.size)) if v is not None}
            if o.cell is not None:
                d.update(row=o.cell[0], col=o.cell[1])
            objects.append(d)
    relations = [[i, rel, j] for a, rel, b in rels for i in index[a] for j in index[b]]
    return {"objects": objects, "relations": relations, "exact": True}


def canonical_prompt(text: str, rng: random.Random | None = None, layout: bool | str = False) -> str:
    """A freely worded prompt rewritten in the caption grammar the generator was trained on ("Draw me a big azure
    box!" → "a large blue square"). A shape the prompt leaves open ("a red thing") is drawn from ``rng`` (default:
    the first shape). SpecError when the prompt cannot be read.

    ``layout=True`` also plans where each object of a scene of two or more goes, as a language model grounding a
    picture would (a layout first, then the picture): every object gets a grid cell of its own, drawn from ``rng``
    among the placements that keep the prompt's positions and relations, and the caption names each object with its
    cell ("two red circles above a blue square" → "a red circle in the top left, a red circle at the top and a blue
    square in the bottom right"). The generator draws single objects in a named cell far more reliably than counts
    and relations (README, "Reading prompts"). ``layout="all"`` places a lone object too (for few-step students,
    which cannot settle an open position in one step: ``pixlm.train.distill``)."""
    if layout not in (False, True, "all"):
        raise ValueError(f"layout={layout!r} must be False, True or 'all'")
    rng = rng or random.Random(0)
    objs, rels = read_free_prompt(text)
    groups = [Group(shape=o.shape or rng.choice(SHAPES), count=o.count, color=o.color, size=o.size,
                    cell=o.cell) for o in objs]
    partner = {a: (rel, b) for a, rel, b in rels}
    right = {b for _, _, b in rels}
    intent = tuple(Part(g, partner[i][0], groups[partner[i][1]]) if i in partner else Part(g)
                   for i, g in enumerate(groups) if i not in right)
    if not layout or (layout is True and sum(g.count for g in groups) < 2):  # one object: nothing to lay out
        return canonical(intent)
    try:
        scene = phrasing.scene_for(intent, rng, tries=500)
    except ValueError:  # no placement keeps every relation: say it without one
        return canonical(intent)
    want = intended_specs(intent)[0]["objects"]  # scene_for's objects come in this order
    return canonical(tuple(Part(Group(shape=w["shape"], color=w.get("color"), size=w.get("size"), cell=(o.row, o.col)))
                           for w, o in zip(want, scene.objects)))
