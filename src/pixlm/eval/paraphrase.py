"""Paraphrase-robustness prompts: the dev-set tasks said in words and structures the captions never use.

The first part keeps colours canonical (the world has exactly eight); nouns, sizes, numbers, positions, relations
and sentence structure vary: "one square that is blue", "a blue tile located top-left", "2 red balls", "a pair of
lozenges", "a green ball under a pink lozenge". The second part (kinds ``free_*``, issue 22) says things the way
people type them: colour synonyms ("crimson", "azure", "teal", "amber"), shape words ("disc", "wedge", "lozenge"),
edges and corners ("along the top edge", "in the lower right corner"), imperatives ("draw me", "please make"),
British spellings, trailing punctuation, counts with relations ("2 crimson discs above a navy box") and colours
without shapes ("a crimson thing and a teal one"). Every row carries the spec of what the image must show, in the
dev-set format, with category ``paraphrase`` and the task it rephrases in ``kind``.

The generator's training phrasings (``pixlm.data.phrasing``) are a separate code path with their own templates and
are only drawn with training seeds; these word lists and templates are written for this set alone.

Regenerate the shipped file with::

    python -m pixlm.eval.paraphrase --out src/pixlm/assets/paraphrase_prompts.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any, Callable

from pixlm.data.shapes import COLORS, INVERSE_RELATION, SHAPES, SIZES

CATEGORY = "paraphrase"
KINDS = ("single_object", "position", "two_objects", "counting", "color_attribution", "relation")

NOUNS: dict[str, list[tuple[str, str]]] = {  # shape -> (singular, plural) surface forms
    "circle": [("ball", "balls"), ("dot", "dots"), ("round shape", "round shapes"), ("circle", "circles")],
    "square": [("tile", "tiles"), ("square shape", "square shapes"), ("square", "squares")],
    "triangle": [("triangle shape", "triangle shapes"), ("triangular shape", "triangular shapes"),
                 ("triangle", "triangles")],
    "diamond": [("lozenge", "lozenges"), ("diamond shape", "diamond shapes"), ("diamond", "diamonds")],
}
SIZE_WORDS = {"small": ["tiny", "little", "smallish"], "large": ["big", "huge", "oversized"]}
POSITION_WORDS: dict[tuple[int, int], list[str]] = {
    (0, 0): ["top-left", "in the upper left corner", "up in the top-left corner"],
    (0, 1): ["top center", "in the top middle", "up at the top center"],
    (0, 2): ["top-right", "in the upper right corner", "up in the top-right corner"],
    (1, 0): ["on the left side", "at the middle left", "left-center"],
    (1, 1): ["in the middle", "dead center", "right in the middle"],
    (1, 2): ["on the right-hand side", "at the middle right", "right-center"],
    (2, 0): ["bottom-left", "in the lower left corner", "down in the bottom-left corner"],
    (2, 1): ["bottom center", "in the bottom middle", "down at the bottom center"],
    (2, 2): ["bottom-right", "in the lower right corner", "down in the bottom-right corner"],
}
RELATION_WORDS = {
    "above": ["over", "higher up than", "placed above"],
    "below": ["under", "beneath", "lower down than"],
    "left of": ["left of", "on the left of", "further left than"],
    "right of": ["right of", "on the right of", "further right than"],
}
COUNT_FORMS = {2: ["2", "a pair of", "exactly two"], 3: ["3", "exactly three", "a trio of"], 4: ["4", "exactly four"]}


# ---- free forms (kinds ``free_*``): each colour synonym names the palette colour nearest to it in hue
FREE_COLORS = {"red": ["crimson", "scarlet"], "orange": ["tangerine"], "yellow": ["gold", "amber"],
               "green": ["lime", "emerald"], "cyan": ["teal", "turquoise"], "blue": ["azure", "navy"],
               "purple": ["violet", "lilac"], "pink": ["rose", "magenta"]}
FREE_NOUNS: dict[str, list[tuple[str, str]]] = {
    "circle": [("disc", "discs"), ("ball", "balls"), ("dot", "dots")],
    "square": [("box", "boxes"), ("block", "blocks"), ("tile", "tiles")],
    "triangle": [("pyramid", "pyramids"), ("wedge", "wedges"), ("triangle shape", "triangle shapes")],
    "diamond": [("rhombus", "rhombuses"), ("lozenge", "lozenges"), ("kite", "kites"), ("gem", "gems")],
}
FREE_SIZES = {"small": ["tiny", "little"], "large": ["big", "huge"]}
FREE_POSITIONS: dict[tuple[int, int], list[str]] = {
    (0, 0): ["in the upper left corner", "in the top-left corner"],
    (0, 1): ["along the top edge", "near the top", "at the top edge"],
    (0, 2): ["in the upper right corner", "in the top-right corner"],
    (1, 0): ["along the left edge", "at the left edge"],
    (1, 1): ["in the centre", "in the middle", "right at the center"],
    (1, 2): ["along the right edge", "at the right edge"],
    (2, 0): ["in the lower left corner", "in the bottom-left corner"],
    (2, 1): ["along the bottom edge", "near the bottom", "at the bottom edge"],
    (2, 2): ["in the lower right corner", "in the bottom-right corner"],
}
FREE_RELATIONS = {"above": ["above", "over"], "below": ["below", "under"], "left of": ["to the left of", "left of"],
                  "right of": ["to the right of", "right of"]}
FREE_COUNTS = {2: ["2", "two", "a pair of"], 3: ["3", "three"], 4: ["4", "four"]}
IMPERATIVES = ["", "", "draw me ", "please make ", "I want ", "can you draw ", "make me "]
ENDINGS = ["", "", "", ".", "!", " please"]


def _free_color(rng: random.Random) -> tuple[str, str]:
    color = rng.choice(COLORS)
    return color, rng.choice(FREE_COLORS[color])


def _free_noun(rng: random.Random, shape: str, plural: bool = False) -> str:
    sing, plur = rng.choice(FREE_NOUNS[shape])
    return plur if plural else sing


def _say(rng: random.Random, body: str) -> str:
    start = rng.choice(IMPERATIVES)
    end = rng.choice([e for e in ENDINGS if not ("please" in start and "please" in e)])
    return start + body + end


def _free_single(rng: random.Random) -> tuple[str, dict]:
    shape, (color, cw) = rng.choice(SHAPES), _free_color(rng)
    size = rng.choice(SIZES) if rng.random() < 0.5 else None
    sz = rng.choice(FREE_SIZES[size]) + " " if size else ""
    noun = _free_noun(rng, shape)
    body = rng.choice([f"{_a(sz + cw)} {noun}", f"{_a(sz + noun)} coloured {cw}", f"one {sz}{cw} {noun}"])
    return _say(rng, body), _spec([_obj(shape=shape, color=color, size=size)])


def _free_position(rng: random.Random) -> tuple[str, dict]:
    shape, (color, cw) = rng.choice(SHAPES), _free_color(rng)
    (row, col), words = rng.choice(sorted(FREE_POSITIONS.items()))
    noun, where = _free_noun(rng, shape), rng.choice(words)
    body = rng.choice([f"{_a(cw)} {noun} {where}", f"{where}, {_a(cw)} {noun}"])
    return _say(rng, body), _spec([_obj(shape=shape, color=color, row=row, col=col)])


def _free_two_objects(rng: random.Random) -> tuple[str, dict]:
    a, b = rng.sample(SHAPES, 2)
    na, nb = _free_noun(rng, a), _free_noun(rng, b)
    return _say(rng, rng.choice([f"{_a(na)} and {_a(nb)}", f"{_a(na)} & {_a(nb)}"])), _spec([{"shape": a},
                                                                                           {"shape": b}])


def _free_counting(rng: random.Random) -> tuple[str, dict]:
    shape, count = rng.choice(SHAPES), rng.randint(2, 4)
    color, cw = _free_color(rng) if rng.random() < 0.7 else (None, "")
    nouns = _free_noun(rng, shape, plural=True)
    body = f"{rng.choice(FREE_COUNTS[count])} {cw + ' ' if cw else ''}{nouns}"
    return _say(rng, body), _spec([_obj(shape=shape, color=color) for _ in range(count)])


def _free_color_attribution(rng: random.Random) -> tuple[str, dict]:
    a, b = rng.sample(SHAPES, 2)
    ca, cb = rng.sample(COLORS, 2)
    wa, wb = rng.choice(FREE_COLORS[ca]), rng.choice(FREE_COLORS[cb])
    na, nb = _free_noun(rng, a), _free_noun(rng, b)
    body = rng.choice([f"{_a(wa)} {na} and {_a(wb)} {nb}", f"{_a(na)} coloured {wa} and {_a(nb)} coloured {wb}",
                       f"{_a(wa)} {na} next to {_a(wb)} {nb}"])
    return _say(rng, body), _spec([{"shape": a, "color": ca}, {"shape": b, "color": cb}])


def _free_colors_only(rng: random.Random) -> tuple[str, dict]:
    ca, cb = rng.sample(COLORS, 2)
    wa, wb = rng.choice(FREE_COLORS[ca]), rng.choice(FREE_COLORS[cb])
    body = rng.choice([f"{_a(wa)} thing and {_a(wb)} one", f"{_a(wa)} shape and {_a(wb)} shape",
                       f"something {wa} and something {wb}"])
    return _say(rng, body), _spec([{"color": ca}, {"color": cb}])


def _free_count_relation(rng: random.Random) -> tuple[str, dict]:
    (a, b), ca, cb = rng.sample(SHAPES, 2), rng.choice(COLORS), rng.choice(COLORS)
    ka, kb = rng.choice([(2, 1), (1, 2), (3, 1), (2, 2)])
    rel = rng.choice(list(FREE_RELATIONS))
    wa, wb = rng.choice(FREE_COLORS[ca]), rng.choice(FREE_COLORS[cb])

    def np_(k: int, w: str, shape: str) -> str:
        return f"{_a(w)} {_free_noun(rng, shape)}" if k == 1 else \
            f"{rng.choice(FREE_COUNTS[k])} {w} {_free_noun(rng, shape, plural=True)}"

    body = f"{np_(ka, wa, a)} {rng.choice(FREE_RELATIONS[rel])} {np_(kb, wb, b)}"
    objects = [{"shape": a, "color": ca} for _ in range(ka)] + [{"shape": b, "color": cb} for _ in range(kb)]
    return _say(rng, body), _spec(objects, [[i, rel, ka + j] for i in range(ka) for j in range(kb)])


def _noun(rng: random.Random, shape: str, plural: bool = False) -> str:
    sing, plur = rng.choice(NOUNS[shape])
    return plur if plural else sing


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _obj(**attrs: Any) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if v is not None}


def _spec(objects: list[dict], relations: list[list] | None = None) -> dict:
    return {"objects": objects, "relations": relations or [], "exact": True}


def _single_object(rng: random.Random) -> tuple[str, dict]:
    shape, color = rng.choice(SHAPES), rng.choice(COLORS)
    size = rng.choice(SIZES) if rng.random() < 0.4 else None
    noun = _noun(rng, shape)
    sz = rng.choice(SIZE_WORDS[size]) if size else None
    forms = [
        f"one {noun} that is {color}" + (f" and {sz}" if sz else ""),
        f"{_a(sz + ' ' + noun) if sz else _a(noun)} colored {color}",
        f"draw {_a(sz + ' ' + color) if sz else _a(color)} {noun}",
        f"just a single {sz + ' ' if sz else ''}{color} {noun}",
        f"{_a(noun)} in {color}" + (f", {sz}" if sz else ""),
        f"show me {_a(f'{sz} {color}-colored' if sz else f'{color}-colored')} {noun}",
    ]
    return rng.choice(forms), _spec([_obj(shape=shape, color=color, size=size)])


def _position(rng: random.Random) -> tuple[str, dict]:
    shape, color = rng.choice(SHAPES), rng.choice(COLORS)
    (row, col), words = rng.choice(sorted(POSITION_WORDS.items()))
    where = rng.choice(words)
    noun = _noun(rng, shape)
    forms = [
        f"{_a(color)} {noun} located {where}",
        f"there's {_a(color)} {noun} {where}",
        f"{where}: {_a(color)} {noun}",
        f"one {noun}, {color}, placed {where}",
        f"{_a(noun)} that is {color}, {where}",
    ]
    return rng.choice(forms), _spec([_obj(shape=shape, color=color, row=row, col=col)])


def _two_objects(rng: random.Random) -> tuple[str, dict]:
    a, b = rng.sample(SHAPES, 2)
    na, nb = _noun(rng, a), _noun(rng, b)
    forms = [f"{_a(na)} with {_a(nb)}", f"one {na} plus one {nb}", f"{_a(na)} as well as {_a(nb)}",
             f"two shapes: {_a(na)} and {_a(nb)}", f"both {_a(na)} and {_a(nb)}"]
    return rng.choice(forms), _spec([{"shape": a}, {"shape": b}])


def _counting(rng: random.Random) -> tuple[str, dict]:
    shape, count = rng.choice(SHAPES), rng.randint(2, 4)
    color = rng.choice(COLORS) if rng.random() < 0.6 else None
    nouns = _noun(rng, shape, plural=True)
    num = rng.choice(COUNT_FORMS[count])
    body = f"{color} {nouns}" if color else nouns
    forms = [f"{num} {body}", f"{body}, {count} of them", f"a picture with {num} {body}"]
    return rng.choice(forms), _spec([_obj(shape=shape, color=color) for _ in range(count)])


def _color_attribution(rng: random.Random) -> tuple[str, dict]:
    (a, b), (ca, cb) = rng.sample(SHAPES, 2), rng.sample(COLORS, 2)
    na, nb = _noun(rng, a), _noun(rng, b)
    forms = [
        f"{_a(na)} that is {ca} and {_a(nb)} that is {cb}",
        f"{_a(ca + '-colored')} {na} alongside {_a(cb)} {nb}",
        f"one {na} in {ca}, one {nb} in {cb}",
        f"{_a(na)} colored {ca} together with {_a(nb)} colored {cb}",
    ]
    return rng.choice(forms), _spec([{"shape": a, "color": ca}, {"shape": b, "color": cb}])


def _relation(rng: random.Random) -> tuple[str, dict]:
    (a, b), ca, cb = rng.sample(SHAPES, 2), rng.choice(COLORS), rng.choice(COLORS)
    rel = rng.choice(list(RELATION_WORDS))
    na, nb = _noun(rng, a), _noun(rng, b)
    spec = _spec([{"shape": a, "color": ca}, {"shape": b, "color": cb}], [[0, rel, 1]])
    word, inverse = rng.choice(RELATION_WORDS[rel]), rng.choice(RELATION_WORDS[INVERSE_RELATION[rel]])
    forms = [
        f"{_a(ca)} {na} {word} {_a(cb)} {nb}",
        f"{_a(cb)} {nb} with {_a(ca)} {na} {word} it",
        f"{_a(cb)} {nb} {inverse} {_a(ca)} {na}",  # same spec, said from the other object's side
        f"there is {_a(ca)} {na}, and it is {word} {_a(cb)} {nb}",
    ]
    return rng.choice(forms), spec


GENERATORS: dict[str, Callable[[random.Random], tuple[str, dict]]] = {
    "single_object": _single_object, "position": _position, "two_objects": _two_objects,
    "counting": _counting, "color_attribution": _color_attribution, "relation": _relation,
}


FREE_GENERATORS: dict[str, Callable[[random.Random], tuple[str, dict]]] = {
    "free_single_object": _free_single, "free_position": _free_position, "free_two_objects": _free_two_objects,
    "free_counting": _free_counting, "free_color_attribution": _free_color_attribution,
    "free_colors_only": _free_colors_only, "free_count_relation": _free_count_relation,
}
FREE_KINDS = tuple(FREE_GENERATORS)


def make_paraphrase_set(seed: int = 0, n_per_kind: int = 20, n_free_per_kind: int = 15) -> list[dict]:
    """``n_per_kind`` distinct paraphrased prompts for each dev-set task, then ``n_free_per_kind`` for each of
    ``FREE_KINDS`` (0 = none); deterministic in ``seed``."""
    if n_per_kind < 1:
        raise ValueError(f"n_per_kind={n_per_kind} must be >= 1")
    if n_free_per_kind < 0:
        raise ValueError(f"n_free_per_kind={n_free_per_kind} must be >= 0")
    rows: list[dict] = []
    kinds = [(kind, GENERATORS[kind], n_per_kind, seed * 7919 + k) for k, kind in enumerate(KINDS)]
    kinds += [(kind, FREE_GENERATORS[kind], n_free_per_kind, seed * 7919 + 100 + k) for k, kind in enumerate(FREE_KINDS)]
    for kind, generate, n, rng_seed in kinds:
        rng = random.Random(rng_seed)
        seen: set[str] = set()
        for _ in range(n):
            for _attempt in range(200):  # draw until a new prompt turns up (small kinds may repeat)
                prompt, spec = generate(rng)
                if prompt not in seen and not (kind in FREE_GENERATORS and _in_grammar(prompt)):
                    break
            seen.add(prompt)
            rows.append({"prompt": prompt, "category": CATEGORY, "kind": kind, "spec": spec})
    return rows


def _in_grammar(prompt: str) -> bool:
    """True when the caption grammar (``specs.parse_prompt``) already reads the prompt ("two boxes")."""
    from pixlm.data.specs import SpecError, parse_prompt

    try:
        parse_prompt(prompt)
    except SpecError:
        return False
    return True


def paraphrase_prompts_path() -> Path:
    """Where the shipped paraphrase prompt file lives (``pixlm/assets/paraphrase_prompts.jsonl``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "paraphrase_prompts.jsonl"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the paraphrase-robustness prompt-spec file.")
    p.add_argument("--out", default=str(paraphrase_prompts_path()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-per-kind", type=int, default=20)
    p.add_argument("--n-free-per-kind", type=int, default=15)
    a = p.parse_args(argv)
    rows = make_paraphrase_set(a.seed, a.n_per_kind, a.n_free_per_kind)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} paraphrase prompts to {out}")


if __name__ == "__main__":
    main()
