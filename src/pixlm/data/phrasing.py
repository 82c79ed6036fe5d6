"""Training phrasings for the generator: the weak categories, drawn more often and said every reasonable way.

``training_pair(rng)`` returns a (scene, prompt) pair whose scene satisfies what the prompt says. The intents
(``pixlm.data.loose``: groups of identical objects, positions, relations) are drawn with extra weight on what the
generator gets wrong most often: two objects without colours, colours without shapes ("a red thing and a blue
one"), 2–4 of a kind, a count with a relation ("two red circles above a blue square") and their mixtures. The
scene is then built *from* the intent, so whatever the prompt leaves open (colour, size, shape, cell) varies
freely and the generator learns that only the words matter.

The wording is kept apart from the evaluation's paraphrase set (``pixlm.eval.paraphrase``): this module has its
own sentence templates and larger word lists (a superset of ``loose``'s), and it is only ever drawn with training
seeds. A quarter of the prompts stay canonical, 15% use ``loose.loose``, the rest this module's phrasing:
colour synonyms (crimson, azure, teal, amber, …), shape words (disc, box, tile, wedge, lozenge, …), positions
(upper left corner, along the top edge, near the bottom, centre), sizes, numerals and count words, word order
("a circle, red", "a box coloured blue"), imperatives ("draw me", "please make", "I want"), British spellings,
light typos and trailing punctuation.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from pixlm.data import loose
from pixlm.data.loose import VAGUE_COUNTS, Group, Intent, Part, canonical, intended_specs
from pixlm.data.shapes import COLORS, INVERSE_RELATION, POSITIONS, RELATIONS, SHAPES, SIZES, Scene, ShapeObject

# Each colour word names the palette colour nearest to it in hue (shapes.PALETTE hues: red 0°, orange 31°, yellow 50°,
# green 130°, cyan 187°, blue 227°, purple 280°, pink 326°; the words' usual RGB values): amber (45°), gold (51°) and
# lemon (58°) are yellow, pumpkin (24°) and tangerine (33°) orange, azure (210°), cobalt (215°), sapphire (216°) and
# navy (240°) blue, teal (180°) and turquoise (174°) cyan, violet (274°), lavender (275°) and lilac (300°) purple,
# rose (330°) pink. Magenta (300°) is a near tie by hue; it is pink here (as in ``loose``): the palette's pink is the
# closer colour in RGB. Words that sit between two palette hues (aquamarine, jade, plum) are left out.
EXTRA_COLOR_WORDS: dict[str, list[str]] = {
    "red": ["ruby", "cherry red", "bright red"], "orange": ["pumpkin", "tangerine", "bright orange"],
    "yellow": ["amber", "lemon", "lemon yellow", "gold"], "green": ["grass green", "forest green"],
    "cyan": ["teal", "light teal"], "blue": ["azure", "cobalt", "sapphire", "dark blue"],
    "purple": ["lavender", "violet"], "pink": ["hot pink", "magenta"],
}
COLOR_WORDS: dict[str, list[str]] = {c: list(dict.fromkeys(loose.COLOR_WORDS[c] + EXTRA_COLOR_WORDS[c]))
                                     for c in COLORS}
NOUNS: dict[str, list[tuple[str, str]]] = {  # loose.NOUNS plus more; canonical first
    s: list(dict.fromkeys(loose.NOUNS[s] + extra)) for s, extra in {
        "circle": [("disc", "discs"), ("round", "rounds"), ("coin", "coins"), ("sphere", "spheres")],
        "square": [("tile", "tiles"), ("square block", "square blocks"), ("crate", "crates")],
        "triangle": [("pyramid", "pyramids"), ("wedge", "wedges"), ("arrowhead", "arrowheads"), ("cone", "cones")],
        "diamond": [("lozenge", "lozenges"), ("rhombus", "rhombuses"), ("kite", "kites"), ("gem", "gems"),
                    ("diamond shape", "diamond shapes")],
    }.items()}
VAGUE_NOUNS = [("thing", "things"), ("shape", "shapes"), ("object", "objects"), ("one", "ones"),
               ("item", "items"), ("figure", "figures")]
SIZE_WORDS = {"small": loose.SIZE_WORDS["small"] + ["wee", "small-ish"],
              "large": loose.SIZE_WORDS["large"] + ["massive", "big fat"]}
COUNT_WORDS = {1: ["a", "one", "1", "a single", "just one"], 2: ["two", "2", "a pair of", "a couple of", "twin"],
               3: ["three", "3", "a trio of", "a group of three"], 4: ["four", "4", "a set of four",
                                                                        "a group of four"]}
EXTRA_POSITIONS: dict[tuple[int, int], list[str]] = {
    (0, 0): ["in the upper left corner", "in the top-left corner", "up in the top left", "at the upper left"],
    (0, 1): ["along the top edge", "near the top", "at the top edge", "up top in the middle", "top centre",
             "at the top of the picture", "in the upper middle"],
    (0, 2): ["in the upper right corner", "in the top-right corner", "up in the top right", "at the upper right"],
    (1, 0): ["along the left edge", "near the left edge", "on the left-hand side", "at the left edge",
             "halfway up the left side"],
    (1, 1): ["in the centre", "in the middle of the picture", "at the centre", "right in the middle", "centred"],
    (1, 2): ["along the right edge", "near the right edge", "on the right-hand side", "at the right edge",
             "halfway up the right side"],
    (2, 0): ["in the lower left corner", "in the bottom-left corner", "down in the bottom left", "at the lower left"],
    (2, 1): ["along the bottom edge", "near the bottom", "at the bottom edge", "down at the bottom",
             "at the bottom of the picture", "in the lower middle"],
    (2, 2): ["in the lower right corner", "in the bottom-right corner", "down in the bottom right",
             "at the lower right"],
}
POSITION_WORDS = {cell: list(dict.fromkeys(loose.POSITION_WORDS[cell] + EXTRA_POSITIONS[cell])) for cell in POSITIONS}
REL_WORDS = {r: loose.REL_WORDS[r] + extra for r, extra in {
    "above": ["sitting above", "placed over", "just above", "higher up than"],
    "below": ["sitting below", "placed under", "just below", "lower down than"],
    "left of": ["to the left side of", "further left than", "left of and beside"],
    "right of": ["to the right side of", "further right than", "right of and beside"]}.items()}
PREFIXES = ["draw me ", "draw ", "please make ", "please draw ", "make me ", "i want ", "i'd like ", "I want ",
            "can you draw ", "could you paint ", "paint ", "sketch ", "show me ", "give me ", "render ",
            "generate ", "create ", "put ", "i need ", "let's see ", "a picture with ", "an image showing ",
            "picture: ", "there is ", "there are "]
SUFFIXES = [".", "!", "?", " please", ", please", ". thanks", " thx", "!!", " on a white background", "..."]
JOINERS = [" and ", ", ", ", and ", " plus ", " with ", " as well as ", " together with ", "; ", " & ",
           " and also "]
BRITISH = [("centered", "centred"), ("center", "centre"), ("colored", "coloured"), ("color", "colour")]


# ---------------------------------------------------------------------------------------------- intents
def _group(rng: random.Random, count: int = 1, color: bool | float = 0.5, size: float = 0.25,
           shape: str | None = None) -> Group:
    show_color = color if isinstance(color, bool) else rng.random() < color
    return Group(shape or rng.choice(SHAPES), count, rng.choice(COLORS) if show_color else None,
                 rng.choice(SIZES) if rng.random() < size else None)


def _distinct(rng: random.Random, n: int) -> list[str]:
    return rng.sample(SHAPES, n)


def _two_objects(rng: random.Random) -> Intent:
    """Two (sometimes three) objects of different shapes and no colour: "a circle and a square"."""
    shapes = _distinct(rng, 3 if rng.random() < 0.2 else 2)
    return tuple(Part(_group(rng, color=False, shape=s)) for s in shapes)


def _color_binding(rng: random.Random) -> Intent:
    """Two or three coloured objects, each colour bound to its own shape: "a red circle and a blue square"."""
    n = 3 if rng.random() < 0.25 else 2
    shapes = _distinct(rng, n) if rng.random() < 0.75 else [rng.choice(SHAPES)] * n
    colors = rng.sample(COLORS, n)
    return tuple(Part(replace(_group(rng, color=False, shape=s), color=c)) for s, c in zip(shapes, colors))


def _colors_only(rng: random.Random) -> Intent:
    """Colours without shapes: "a red thing and a blue one", "three green shapes"."""
    if rng.random() < 0.3:
        return (Part(replace(_group(rng, rng.randint(2, 4), color=True), vague_shape=True)),)
    colors = rng.sample(COLORS, rng.choice([1, 2, 2, 3]))
    return tuple(Part(replace(_group(rng, color=False), color=c, vague_shape=True)) for c in colors)


def _counting(rng: random.Random) -> Intent:
    """2–4 of a kind, sometimes with a vague count word ("a few", "several")."""
    g = _group(rng, rng.randint(2, 4), color=0.6)
    if rng.random() < 0.1:
        words = [allowed for allowed in VAGUE_COUNTS.values() if g.count in allowed and len(allowed) > 1]
        g = replace(g, counts=rng.choice(words))
    return (Part(g),)


def _count_relation(rng: random.Random) -> Intent:
    """Two groups (1–3 objects each, at most 4 in all) in a relation: "two red circles above a blue square"."""
    ka, kb = rng.choice([(2, 1), (1, 2), (3, 1), (1, 3), (2, 2), (1, 1)])
    a, b = _distinct(rng, 2) if rng.random() < 0.8 else [rng.choice(SHAPES)] * 2
    ga, gb = _group(rng, ka, color=0.85, shape=a), _group(rng, kb, color=0.85, shape=b)
    if ga.color is not None and ga.color == gb.color and a == b:
        gb = replace(gb, color=rng.choice([c for c in COLORS if c != ga.color]))
    if ga.size is not None and gb.size is not None and ga == replace(gb, count=ga.count):
        gb = replace(gb, size=None)
    return (Part(ga, rng.choice(RELATIONS), gb),)


def _placed(rng: random.Random) -> Intent:
    """One or two objects, each in its cell: "a crimson disc along the top edge"."""
    cells = rng.sample(sorted(POSITIONS), 2 if rng.random() < 0.3 else 1)
    return tuple(Part(replace(_group(rng, color=0.85, size=0.3), cell=cell)) for cell in cells)


def _mixture(rng: random.Random) -> Intent:
    """A count, a relation or a coloured pair, plus one more part: a group, or a single object with a place."""
    first = rng.choice([_counting, _count_relation, _color_binding])(rng)
    used = sum(g.count for p in first for g in ((p.a,) if p.b is None else (p.a, p.b)))
    if used >= 5:
        return first
    if rng.random() < 0.5:
        (r, c) = rng.choice(sorted(POSITIONS))
        extra = Part(replace(_group(rng, color=0.8), cell=(r, c)))
    else:
        extra = Part(_group(rng, rng.randint(1, min(3, 5 - used)), color=0.7))
    return (*first, extra) if rng.random() < 0.6 else (extra, *first)


CATEGORY_WEIGHTS: dict[str, float] = {
    "two_objects": 0.15, "color_binding": 0.17, "colors_only": 0.08, "counting": 0.14, "count_relation": 0.18,
    "mixture": 0.14, "placed": 0.14,
}
_SAMPLERS = {"two_objects": _two_objects, "color_binding": _color_binding, "colors_only": _colors_only,
             "counting": _counting, "count_relation": _count_relation, "mixture": _mixture, "placed": _placed}


def weak_intent(rng: random.Random, category: str | None = None) -> Intent:
    """An intent of one of ``CATEGORY_WEIGHTS`` (drawn by weight unless ``category`` is given)."""
    if category is None:
        category = rng.choices(list(CATEGORY_WEIGHTS), weights=list(CATEGORY_WEIGHTS.values()))[0]
    if category not in _SAMPLERS:
        raise ValueError(f"category={category!r} is not one of {sorted(_SAMPLERS)}")
    return _SAMPLERS[category](rng)


# ---------------------------------------------------------------------------------------------- scenes
def scene_for(intent: Intent, rng: random.Random, tries: int = 2000) -> Scene:
    """A random scene satisfying the intent (``loose.intended_specs``): unnamed attributes vary per object.

    A vague count takes one of its allowed values. Raises ValueError when no placement is found in ``tries``."""
    spec = rng.choice(intended_specs(intent))
    want, rels = spec["objects"], spec["relations"]
    if len(want) > 9:
        raise ValueError(f"intent names {len(want)} objects; the 3×3 grid holds at most 9")
    fixed = {i: (o["row"], o["col"]) for i, o in enumerate(want) if "row" in o}
    free_cells = [(r, c) for r in range(3) for c in range(3) if (r, c) not in fixed.values()]
    free = [i for i in range(len(want)) if i not in fixed]
    for _ in range(tries):
        cells = dict(fixed)
        cells.update(zip(free, rng.sample(free_cells, len(free))))
        if all(_holds(cells[i], rel, cells[j]) for i, rel, j in rels):
            break
    else:
        raise ValueError(f"no placement of {canonical(intent)!r} found in {tries} tries")
    objects = [ShapeObject(o.get("shape") or rng.choice(SHAPES), o.get("color") or rng.choice(COLORS),
                           o.get("size") or rng.choice(SIZES), *cells[i]) for i, o in enumerate(want)]
    return Scene(objects, [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in objects])


def _holds(a: tuple[int, int], rel: str, b: tuple[int, int]) -> bool:
    from pixlm.data.shapes import relation_holds

    return relation_holds({"row": a[0], "col": a[1]}, rel, {"row": b[0], "col": b[1]})


# ---------------------------------------------------------------------------------------------- wording
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" and not word.startswith("one") else "a"


def _noun_phrase(g: Group, rng: random.Random, canon: float) -> str:
    """One way to say a group: count, size, colour and noun in one of several orders."""
    sing, plur = rng.choice(VAGUE_NOUNS) if g.vague_shape else (
        NOUNS[g.shape][0] if rng.random() < canon else rng.choice(NOUNS[g.shape]))
    noun = plur if g.count > 1 else sing
    if g.counts and len(g.counts) > 1:
        head = rng.choice([w for w, allowed in VAGUE_COUNTS.items() if allowed == g.counts])
    else:
        head = COUNT_WORDS[g.count][0] if rng.random() < canon else rng.choice(COUNT_WORDS[g.count])
    size = (SIZE_WORDS[g.size][0] if rng.random() < canon else rng.choice(SIZE_WORDS[g.size])) if g.size else None
    color = (COLOR_WORDS[g.color][0] if rng.random() < max(canon, 0.3) else rng.choice(COLOR_WORDS[g.color])) \
        if g.color else None
    pre = [w for w in (size, color) if w]
    order = rng.random()
    if color and order < 0.12:  # "a big box coloured blue", "two circles in red"
        verb = rng.choice(["colored", "in", "that is" if g.count == 1 else "that are", "painted"])
        body = " ".join(w for w in (size, noun) if w) + f" {verb} {color}"
    elif color and order < 0.2:  # "a circle, red" / "a circle (red)"
        body = " ".join(w for w in (size, noun) if w) + rng.choice([f", {color}", f" ({color})"])
    elif color and order < 0.27:
        body = " ".join(w for w in (size, f"{color}-colored", noun) if w)
    elif len(pre) == 2 and order < 0.4:
        body = f"{color} {size} {noun}"
    else:
        body = " ".join([*pre, noun])
    if head == "a":
        head = _article(body)
    return f"{head} {body}"


def _part(p: Part, rng: random.Random, canon: float) -> str:
    a = _noun_phrase(p.a, rng, canon)
    if p.rel is not None:
        b = _noun_phrase(p.b, rng, canon)  # type: ignore[arg-type]
        if rng.random() < 0.3:  # said from the other group's side
            word = rng.choice(REL_WORDS[INVERSE_RELATION[p.rel]])
            verb = rng.choice(["", "", "is " if p.b.count == 1 else "are "])  # type: ignore[union-attr]
            return f"{b} {verb}{word} {a}"
        word = REL_WORDS[p.rel][0] if rng.random() < canon else rng.choice(REL_WORDS[p.rel])
        return f"{a} {word} {b}"
    if p.a.cell is None:
        return a
    r = rng.random()  # the edge/corner/centre forms loose.py lacks get half of the non-canonical draws
    where = POSITION_WORDS[p.a.cell][0] if r < canon else rng.choice(
        EXTRA_POSITIONS[p.a.cell] if r < (1 + canon) / 2 else POSITION_WORDS[p.a.cell])
    r = rng.random()
    if r < 0.15:
        return f"{where}, {a}" if rng.random() < 0.5 else f"{where}: {a}"
    if r < 0.25:
        return f"{a} {rng.choice(['placed', 'located', 'sitting', 'positioned'])} {where}"
    return f"{a} {where}" if r < 0.9 else f"{a}, {where}"


def phrase(intent: Intent, rng: random.Random) -> str:
    """This module's own wording of the intent (see the module docstring)."""
    canon = rng.choice([0.15, 0.4, 0.7])
    parts = [_part(p, rng, canon) for p in intent]
    if len(parts) > 1 and rng.random() < 0.3:
        rng.shuffle(parts)
    if len(parts) == 1:
        text = parts[0]
    elif rng.random() < 0.5:
        text = ", ".join(parts[:-1]) + rng.choice([" and ", ", and ", " plus ", " & "]) + parts[-1]
    else:
        text = rng.choice(JOINERS).join(parts)
    if rng.random() < 0.45:
        prefix = rng.choice(PREFIXES)
        if prefix == "there is " and not text.startswith(("a ", "an ", "one ", "1 ", "just ")):
            prefix = "there are "
        text = prefix + text
    return text


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.4:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind < 0.7:  # drop one letter
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double one letter


def roughen(text: str, rng: random.Random, typo: float = 0.1, british: float = 0.3, punct: float = 0.25,
            case: float = 0.15) -> str:
    """Surface noise people add: British spellings, one light typo in a long word, trailing punctuation, case."""
    if rng.random() < british:
        for us, uk in BRITISH:
            text = re.sub(rf"\b{us}\b", uk, text)
    if rng.random() < typo:
        words = text.split(" ")
        long = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
        if long:
            i = rng.choice(long)
            words[i] = _typo(words[i], rng)
            text = " ".join(words)
    if rng.random() < punct:
        text += rng.choice(SUFFIXES)
    r = rng.random()
    if r < case:
        text = text[0].upper() + text[1:]
    elif r < case + 0.02:
        text = text.upper()
    return text


def say(intent: Intent, rng: random.Random, canonical_share: float = 0.25, loose_share: float = 0.15) -> str:
    """A training prompt for the intent: canonical, ``loose.loose`` or ``phrase``, then ``roughen``ed."""
    r = rng.random()
    if r < canonical_share and not any(g.vague_shape or g.counts for p in intent for g in (p.a, p.b) if g):
        return roughen(canonical(intent), rng, typo=0.0, british=0.1, punct=0.15, case=0.05)
    text = loose.loose(intent, rng) if r < canonical_share + loose_share else phrase(intent, rng)
    return roughen(text, rng)


def training_pair(rng: random.Random) -> tuple[Scene, str]:
    """(scene, prompt) for the generator's pool: a weak-category intent, a scene that satisfies it, its wording."""
    while True:
        intent = weak_intent(rng)
        try:
            scene = scene_for(intent, rng, tries=500)
        except ValueError:  # a rare mixture whose fixed cell leaves its relation no room: draw another
            continue
        return scene, say(intent, rng)
