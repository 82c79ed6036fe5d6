"""Loose prompts and the canonical captions they mean: training pairs for the prompt expander, and a benchmark.

An *intent* is what a user means: a few parts, each either a group of identical objects (a single object may
carry a position) or two groups joined by a relation. ``canonical(intent)`` writes it in the caption grammar that
``specs.parse_prompt`` reads ("two red circles, a blue square in the top left and a green diamond above a small
triangle"); ``loose(intent, rng)`` says it the way people type ("2 red balls + blue box up left, green rhombus
over a tiny triangle"). Intents come from random shapes scenes, so every one of them can be drawn.

Vague wording is part of it: "a few blue things" names neither the count nor the shape. Its canonical caption is
one plausible reading ("three blue squares"); ``intended_specs`` lists every reading it allows, as specs that
``shapes.satisfies`` checks (an image is right when it satisfies any of them).

Training pairs come from ``training_pair(rng)``; the benchmark set from ``loose_prompt_set(seed, n)`` with a seed
the training stream never uses (training draws from ``random.Random(seed * 1_000_003 + step)``).
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass, replace
from itertools import permutations, product
from typing import Any

from pixlm.data.shapes import (
    _PLURAL,
    _PREFIXES,
    _SYNONYMS,
    COLORS,
    INVERSE_RELATION,
    NUMBER_WORDS,
    POSITIONS,
    RELATION_WORDS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    random_scene,
    relation_holds,
)

BENCHMARK_SEED = 20_261_128  # the default seed of the held-out loose-prompt set (never a training step RNG)


@dataclass(frozen=True)
class Group:
    """``count`` identical objects. ``cell`` (row, col) only for a single object."""

    shape: str
    count: int = 1
    color: str | None = None
    size: str | None = None
    cell: tuple[int, int] | None = None
    vague_shape: bool = False  # said as "thing"/"shape": the canonical caption still names ``shape``
    counts: tuple[int, ...] = ()  # counts a vague word allows ("a few" → (2, 3)); () means exactly ``count``

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape={self.shape!r} is not one of {SHAPES}")
        if self.count not in (1, 2, 3, 4):
            raise ValueError(f"count={self.count!r} must be 1, 2, 3 or 4")
        if self.color is not None and self.color not in COLORS:
            raise ValueError(f"color={self.color!r} is not one of {COLORS}")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"size={self.size!r} is not one of {SIZES}")
        if self.cell is not None and (self.count != 1 or self.cell not in POSITIONS):
            raise ValueError(f"cell={self.cell!r} needs count 1 and a (row, col) in 0..2, got count {self.count}")
        if self.counts and self.count not in self.counts:
            raise ValueError(f"count={self.count} is not among the allowed counts {self.counts}")


@dataclass(frozen=True)
class Part:
    """One clause of a caption: a group, or group ``a`` in relation ``rel`` to group ``b``."""

    a: Group
    rel: str | None = None
    b: Group | None = None

    def __post_init__(self) -> None:
        if (self.rel is None) != (self.b is None):
            raise ValueError("a relation part needs both rel and b")
        if self.rel is not None and self.rel not in RELATIONS:
            raise ValueError(f"rel={self.rel!r} is not one of {RELATIONS}")
        if self.rel is not None and (self.a.cell or self.b.cell):  # type: ignore[union-attr]
            raise ValueError("groups in a relation part carry no position (the grammar has either)")


Intent = tuple[Part, ...]


# ---------------------------------------------------------------------------------------------- canonical
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def canonical_np(g: Group) -> str:
    """Canonical noun phrase: "a small red circle", "three diamonds"."""
    words = [w for w in (g.size, g.color) if w]
    words.append(_PLURAL[g.shape] if g.count > 1 else g.shape)
    head = NUMBER_WORDS[g.count] if g.count > 1 else _article(words[0])
    return " ".join([head, *words])


def canonical_part(p: Part) -> str:
    text = canonical_np(p.a)
    if p.rel is not None:
        return f"{text} {RELATION_WORDS[p.rel]} {canonical_np(p.b)}"  # type: ignore[arg-type]
    if p.a.cell is not None:
        text += " " + POSITIONS[p.a.cell]
    return text


def canonical(intent: Intent) -> str:
    """The intent in the caption grammar, parts in the given order joined by ", " and a final " and "."""
    if not intent:
        raise ValueError("an intent needs at least one part")
    parts = [canonical_part(p) for p in intent]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def intended_specs(intent: Intent) -> list[dict[str, Any]]:
    """Every exact spec the intent allows (one per combination of vague counts); see ``shapes.satisfies``."""
    groups = [g for p in intent for g in ((p.a,) if p.b is None else (p.a, p.b))]
    options = [g.counts or (g.count,) for g in groups]
    specs = []
    for counts in product(*options):
        objects: list[dict[str, Any]] = []
        relations: list[list[Any]] = []
        idx = iter(counts)
        for p in intent:
            ia = _add_group(objects, p.a, next(idx))
            if p.b is not None:
                ib = _add_group(objects, p.b, next(idx))
                relations.extend([i, p.rel, j] for i in ia for j in ib)
        specs.append({"objects": objects, "relations": relations, "exact": True})
    return specs


def _add_group(objects: list[dict[str, Any]], g: Group, count: int) -> list[int]:
    obj: dict[str, Any] = {} if g.vague_shape else {"shape": g.shape}
    obj.update({k: v for k, v in (("color", g.color), ("size", g.size)) if v is not None})
    if g.cell is not None:
        obj.update(row=g.cell[0], col=g.cell[1])
    start = len(objects)
    objects.extend(dict(obj) for _ in range(count))
    return list(range(start, len(objects)))


# ---------------------------------------------------------------------------------------------- intents
def intent_from_scene(scene: Scene, rng: random.Random) -> Intent:
    """What a user might mean by this scene: every object mentioned; detail, grouping and relations vary."""
    show_size, show_color, show_pos = rng.random() < 0.4, rng.random() < 0.85, rng.random() < 0.6

    def key(o) -> tuple:
        return (o.shape, o.color if show_color else None, o.size if show_size else None)

    groups: dict[tuple, list] = {}
    for o in scene.objects:
        groups.setdefault(key(o), []).append(o)
    singles = [g[0] for g in groups.values() if len(g) == 1]
    multi = [g for g in groups.values() if len(g) > 1]
    if multi and rng.random() < 0.25:  # identical objects listed one by one, each with its place
        singles.extend(multi.pop(rng.randrange(len(multi))))
    parts: list[Part] = []
    for g in multi:
        o = g[0]
        parts.append(Part(Group(o.shape, len(g), o.color if show_color else None, o.size if show_size else None)))
    rng.shuffle(singles)

    def single(o, pos: bool) -> Group:
        color = o.color if (show_color if rng.random() > 0.1 else not show_color) else None
        size = o.size if (show_size if rng.random() > 0.1 else not show_size) else None
        return Group(o.shape, 1, color, size, (o.row, o.col) if pos else None)

    if len(singles) >= 2 and rng.random() < 0.35:
        a, b = singles.pop(), singles.pop()
        rel = rng.choice([r for r in RELATIONS if relation_holds(a, r, b)])
        parts.append(Part(single(a, False), rel, single(b, False)))
    for o in singles:
        parts.append(Part(single(o, show_pos if rng.random() > 0.1 else not show_pos)))
    rng.shuffle(parts)
    return tuple(parts)


VAGUE_COUNTS: dict[str, tuple[int, ...]] = {  # loose word → the counts it allows
    "a few": (2, 3), "some": (2, 3), "several": (3, 4), "a couple of": (2,), "a couple": (2,), "a pair of": (2,),
    "lots of": (3, 4), "many": (3, 4), "a bunch of": (3, 4), "multiple": (2, 3, 4),
}


def make_vague(intent: Intent, rng: random.Random) -> Intent:
    """Blur one group: its shape becomes "thing", or its count a word such as "a few" (when it allows it)."""
    slots = [(i, w) for i, p in enumerate(intent) for w in (("a",) if p.b is None else ("a", "b"))]
    i, which = rng.choice(slots)
    g: Group = getattr(intent[i], which)
    words = [w for w, allowed in VAGUE_COUNTS.items() if g.count in allowed and len(allowed) > 1]
    if g.count > 1 and words and rng.random() < 0.7:
        word = rng.choice(words)
        g = replace(g, counts=VAGUE_COUNTS[word])
        if rng.random() < 0.5:
            g = replace(g, vague_shape=True)
    else:
        g = replace(g, vague_shape=True)
    parts = list(intent)
    parts[i] = replace(intent[i], **{which: g})
    return tuple(parts)


# ---------------------------------------------------------------------------------------------- loose wording
NOUNS: dict[str, list[tuple[str, str]]] = {  # shape → (singular, plural) surface forms; canonical first
    "circle": [("circle", "circles"), ("ball", "balls"), ("dot", "dots"), ("disk", "disks"), ("disc", "discs"),
               ("round dot", "round dots"), ("circle shape", "circle shapes"), ("round thing", "round things"),
               ("orb", "orbs"), ("blob", "blobs")],
    "square": [("square", "squares"), ("box", "boxes"), ("block", "blocks"), ("cube", "cubes"),
               ("rectangle", "rectangles"), ("square shape", "square shapes"), ("sq", "sqs")],
    "triangle": [("triangle", "triangles"), ("tri", "tris"), ("pyramid", "pyramids"), ("wedge", "wedges"),
                 ("triangle shape", "triangle shapes"), ("triangel", "triangels")],
    "diamond": [("diamond", "diamonds"), ("rhombus", "rhombuses"), ("rhombus", "rhombi"), ("gem", "gems"),
                ("diamond shape", "diamond shapes"), ("kite", "kites")],
}
VAGUE_NOUNS = [("thing", "things"), ("shape", "shapes"), ("object", "objects"), ("item", "items")]
COLOR_WORDS: dict[str, list[str]] = {  # canonical first; a loose prompt mostly keeps the canonical name
    "red": ["red", "crimson", "scarlet"], "orange": ["orange", "tangerine"], "yellow": ["yellow", "gold", "golden"],
    "green": ["green", "lime", "emerald"], "cyan": ["cyan", "turquoise", "aqua", "teal"],
    "blue": ["blue", "navy", "royal blue"], "purple": ["purple", "violet", "lilac"],
    "pink": ["pink", "magenta", "rose"],
}
SIZE_WORDS = {"small": ["small", "little", "tiny", "smallish", "mini"], "large": ["large", "big", "huge", "giant"]}
COUNT_WORDS = {1: ["a", "one", "1", "a single"], 2: ["two", "2", "a pair of", "a couple of"],
               3: ["three", "3"], 4: ["four", "4"]}
POSITION_WORDS: dict[tuple[int, int], list[str]] = {
    (0, 0): ["in the top left", "top left", "top-left", "upper left", "up left", "in the upper left",
             "in the top left corner", "top left corner", "at the top left", "upper-left corner", "left top"],
    (0, 1): ["at the top", "top", "top middle", "top center", "top centre", "up top", "in the top middle",
             "at the top center", "upper middle", "top-center", "at the top in the middle"],
    (0, 2): ["in the top right", "top right", "top-right", "upper right", "up right", "in the upper right",
             "in the top right corner", "top right corner", "at the top right", "upper-right corner", "right top"],
    (1, 0): ["on the left", "left", "middle left", "center left", "left side", "on the left side", "at the left",
             "left-middle", "mid left", "on the middle left"],
    (1, 1): ["in the center", "center", "centre", "middle", "in the middle", "in the centre", "centered",
             "dead center", "at the center", "in the very middle"],
    (1, 2): ["on the right", "right", "middle right", "center right", "right side", "on the right side",
             "at the right", "right-middle", "mid right", "on the middle right"],
    (2, 0): ["in the bottom left", "bottom left", "bottom-left", "lower left", "down left", "in the lower left",
             "in the bottom left corner", "bottom left corner", "at the bottom left", "lower-left corner",
             "left bottom"],
    (2, 1): ["at the bottom", "bottom", "bottom middle", "bottom center", "bottom centre", "down bottom",
             "in the bottom middle", "at the bottom center", "lower middle", "bottom-center"],
    (2, 2): ["in the bottom right", "bottom right", "bottom-right", "lower right", "down right",
             "in the lower right", "in the bottom right corner", "bottom right corner", "at the bottom right",
             "lower-right corner", "right bottom"],
}
REL_WORDS = {
    "above": ["above", "over", "on top of", "higher than", "atop", "up above"],
    "below": ["below", "under", "beneath", "underneath", "lower than", "down below"],
    "left of": ["to the left of", "left of", "on the left of", "left from", "to the left side of"],
    "right of": ["to the right of", "right of", "on the right of", "right from", "to the right side of"],
}
JOINERS = [", ", ", ", " and ", ", and ", " & ", " + ", " with ", "; ", " plus ", " , ", " and also ", " also "]
PREFIXES = ["draw ", "draw me ", "make ", "show ", "show me ", "picture of ", "a picture of ", "an image of ",
            "image with ", "i want ", "generate ", "can you draw ", "please draw ", "render ", "paint ",
            "there is ", "there are ", "give me ", "create ", "a drawing of ", "scene: ", "pic of ", "i'd like "]
SUFFIXES = [".", "!", " please", " on white", " on a white background", ", thanks", " pls", "?"]
FILLERS = ["nice", "simple", "cute", "bright", "solid", "plain", "flat", "lovely", "clean"]


def _pick(rng: random.Random, words: list, canonical_weight: float) -> Any:
    """The first (canonical) entry with probability ``canonical_weight``, else any entry."""
    return words[0] if rng.random() < canonical_weight else rng.choice(words)


def _loose_np(g: Group, rng: random.Random, style: dict) -> str:
    if g.vague_shape:
        sing, plur = rng.choice(VAGUE_NOUNS)
    else:
        sing, plur = _pick(rng, NOUNS[g.shape], style["canon"])
    noun = plur if g.count > 1 else sing
    if g.counts and len(g.counts) > 1:
        head = rng.choice([w for w, allowed in VAGUE_COUNTS.items() if allowed == g.counts])
    elif g.count == 1:
        head = style["article"] if rng.random() < 0.85 else rng.choice(["a", "", "one"])
        if head == "a" and rng.random() < 0.8:  # mostly the right article; people slip
            head = None  # resolved below once the next word is known
    else:
        head = _pick(rng, COUNT_WORDS[g.count], style["canon"])
    adjs = []
    if g.size:
        adjs.append(_pick(rng, SIZE_WORDS[g.size], style["canon"]))
    color = _pick(rng, COLOR_WORDS[g.color], 0.8) if g.color else None
    if rng.random() < 0.04:
        adjs.insert(0, rng.choice(FILLERS))
    post = ""
    if color and rng.random() < style["color_after"]:
        post = rng.choice([f", {color}", f" in {color}", f" colored {color}", f" that is {color}",
                           f" ({color})", f" {color}"]) if g.count == 1 else \
            rng.choice([f" in {color}", f", {color}", f" colored {color}", f" that are {color}", f" ({color})"])
    elif color:
        adjs.append(rng.choice([color, color, color, f"{color}-colored", f"{color} colored"]))
    if len(adjs) == 2 and rng.random() < 0.3:
        adjs.reverse()
    words = [*adjs, noun]
    if head is None:
        head = _article(words[0])
    return " ".join(w for w in (head, *words) if w) + post


def _loose_part(p: Part, rng: random.Random, style: dict) -> str:
    a = _loose_np(p.a, rng, style)
    if p.rel is not None:
        return f"{a} {_pick(rng, REL_WORDS[p.rel], style['canon'])} {_loose_np(p.b, rng, style)}"  # type: ignore
    if p.a.cell is None:
        return a
    where = _pick(rng, POSITION_WORDS[p.a.cell], style["canon"])
    if style["pos_before"]:  # one placement per prompt, so a position never reads as the next object's
        return rng.choice([f"{where}: {a}", f"{where} {a}", f"{where} {a}", f"{where} is {a}"])
    if rng.random() < 0.08:
        return f"{a} placed {where}" if rng.random() < 0.5 else f"{a} located {where}"
    return f"{a} {where}" if rng.random() < 0.8 else f"{a}, {where}"


def loose(intent: Intent, rng: random.Random) -> str:
    """One informal way to say the intent: synonyms, numerals, dropped words, reordered phrases, fillers."""
    style = {
        "canon": rng.choice([0.2, 0.5, 0.8]),  # how often the canonical word is kept
        "article": rng.choice(["a", "a", "", "", "one", "1"]),
        "color_after": rng.choice([0.0, 0.0, 0.15, 0.5]),
        "pos_before": rng.random() < 0.2,
    }
    parts = [_loose_part(p, rng, style) for p in intent]
    joiner = rng.choice(JOINERS)
    if len(parts) == 1:
        text = parts[0]
    elif rng.random() < 0.5:
        text = joiner.join(parts)
    else:
        text = ", ".join(parts[:-1]) + rng.choice([" and ", " & ", ", and ", " + ", " with "]) + parts[-1]
    if rng.random() < 0.35:
        text = rng.choice(PREFIXES) + text
    if rng.random() < 0.15:
        text += rng.choice(SUFFIXES)
    if rng.random() < 0.05:  # a word the expander has never seen: it must learn to skip <unk>
        words = text.split(" ")
        junk = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 8)))
        words.insert(rng.randrange(len(words) + 1), junk)
        text = " ".join(words)
    r = rng.random()
    if r < 0.08:
        text = text[0].upper() + text[1:]
    elif r < 0.1:
        text = text.upper()
    return text


# ---------------------------------------------------------------------------------------------- pairs and sets
def training_pair(rng: random.Random, vague: float = 0.15, identity: float = 0.1) -> tuple[str, str]:
    """(loose prompt, canonical caption) for a random scene; ``identity`` of them are already canonical."""
    intent = intent_from_scene(random_scene(rng), rng)
    if rng.random() < vague:
        intent = make_vague(intent, rng)
    target = canonical(intent)
    if rng.random() < identity:
        prefix = rng.choice(_PREFIXES) if rng.random() < 0.3 else ""
        text = prefix + _caption_synonyms(target, rng)
        if prefix == "there is " and not text[len(prefix):].startswith(("a ", "an ")):
            text = "there are " + text[len(prefix):]
        return text, target
    return loose(intent, rng), target


def _caption_synonyms(text: str, rng: random.Random) -> str:
    """The caption with, sometimes, the synonyms ``shapes.caption`` itself uses ("disk", "little", "rhombus")."""
    if rng.random() < 0.7:
        return text

    def swap(m: re.Match) -> str:
        w = m[0]
        singular = next((s for s, p in _PLURAL.items() if p == w), w)
        if singular in _SYNONYMS:
            choice = rng.choice(_SYNONYMS[singular])
            return _PLURAL.get(choice, choice + "s") if singular != w else choice
        return w

    return re.sub(r"[a-z]+", swap, text)


def loose_prompt_set(seed: int = BENCHMARK_SEED, n: int = 200, vague: float = 0.2) -> list[dict[str, Any]]:
    """``n`` distinct loose prompts with their intents, deterministic in ``seed``.

    Rows: ``{"prompt", "canonical", "category", "specs"}``; an image is right for a row when it satisfies any
    of ``specs``. ``category`` is "vague", "relation", "position", "counting", "multiple" or "single".
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:
        intent = intent_from_scene(random_scene(rng), rng)
        if rng.random() < vague:
            intent = make_vague(intent, rng)
        prompt = loose(intent, rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"prompt": prompt, "canonical": canonical(intent), "category": intent_category(intent),
                     "specs": intended_specs(intent)})
    return rows


def intent_category(intent: Intent) -> str:
    """A coarse label for reporting: the hardest feature the intent has."""
    groups = [g for p in intent for g in ((p.a,) if p.b is None else (p.a, p.b))]
    if any(g.vague_shape or len(g.counts) > 1 for g in groups):
        return "vague"
    if any(p.rel for p in intent):
        return "relation"
    if any(g.cell for g in groups):
        return "position"
    if any(g.count > 1 for g in groups):
        return "counting"
    return "multiple" if len(groups) > 1 else "single"


# ---------------------------------------------------------------------------------------------- checking
def spec_implies(spec: dict[str, Any], want: dict[str, Any]) -> bool:
    """True when every image exactly matching ``spec`` also matches ``want``: same object count, each wanted
    attribute stated alike, each wanted relation stated (either way round) or implied by stated cells."""
    have, need = spec["objects"], want["objects"]
    if len(have) != len(need):
        return False
    if len(need) > 8:
        raise ValueError(f"spec_implies compares at most 8 objects, got {len(need)}")
    rels = {tuple(r) for r in spec.get("relations", [])}
    rels |= {(j, INVERSE_RELATION[r], i) for i, r, j in spec.get("relations", [])}
    for perm in permutations(range(len(have))):
        if not all(all(have[perm[i]].get(k) == v for k, v in w.items()) for i, w in enumerate(need)):
            continue

        def holds(i: int, rel: str, j: int) -> bool:
            a, b = have[perm[i]], have[perm[j]]
            if (perm[i], rel, perm[j]) in rels:
                return True
            return all(k in o for o in (a, b) for k in ("row", "col")) and relation_holds(a, rel, b)

        if all(holds(i, rel, j) for i, rel, j in want.get("relations", [])):
            return True
    return False


def expansion_correct(text: str, specs: list[dict[str, Any]]) -> bool:
    """True when ``text`` parses (``specs.parse_prompt``) to a spec implying one of the intended ``specs``."""
    from pixlm.data.specs import SpecError, parse_prompt

    try:
        parsed = parse_prompt(text)
    except SpecError:
        return False
    return any(spec_implies(parsed, s) for s in specs)


def vocabulary_words() -> set[str]:
    """Every phrase this module (or ``shapes.caption``) can write, as raw strings, for building a vocabulary."""
    phrases: list[str] = [*COLORS, *SHAPES, *SIZES, *_PLURAL, *_PLURAL.values(), *NUMBER_WORDS.values(), "an",
                          *POSITIONS.values(), *RELATION_WORDS.values(), *_PREFIXES, *PREFIXES, *SUFFIXES,
                          *FILLERS, *JOINERS, *VAGUE_COUNTS, "placed located is that are colored ( ) : - ' ? ! ; . ,",
                          *(w for ws in _SYNONYMS.values() for w in ws)]
    for table in (NOUNS,):
        phrases += [w for forms in table.values() for pair in forms for w in pair]
    phrases += [w for pair in VAGUE_NOUNS for w in pair]
    for table2 in (COLOR_WORDS, SIZE_WORDS, POSITION_WORDS, REL_WORDS):
        phrases += [w for ws in table2.values() for w in ws]  # type: ignore[attr-defined]
    phrases += [w for ws in COUNT_WORDS.values() for w in ws]
    phrases += [f"{c}-colored" for c in COLORS]
    return set(phrases)
