"""Paraphrase-robustness prompts: the dev-set tasks said in words and structures the captions never use.

Colours stay canonical (the world has exactly eight); nouns, sizes, numbers, positions, relations and sentence
structure vary: "one square that is blue", "a blue tile located top-left", "2 red balls", "a pair of
lozenges", "a green ball under a pink lozenge". Every row carries the spec of what the image must show,
in the dev-set format, with category ``paraphrase`` and the dev-set task it rephrases in ``kind``.

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


def make_paraphrase_set(seed: int = 0, n_per_kind: int = 20) -> list[dict]:
    """``n_per_kind`` distinct paraphrased prompts for each dev-set task, deterministic in ``seed``."""
    if n_per_kind < 1:
        raise ValueError(f"n_per_kind={n_per_kind} must be >= 1")
    rows: list[dict] = []
    for k, kind in enumerate(KINDS):
        rng = random.Random(seed * 7919 + k)
        seen: set[str] = set()
        for _ in range(n_per_kind):
            for _attempt in range(200):  # draw until a new prompt turns up (small kinds may repeat)
                prompt, spec = GENERATORS[kind](rng)
                if prompt not in seen:
                    break
            seen.add(prompt)
            rows.append({"prompt": prompt, "category": CATEGORY, "kind": kind, "spec": spec})
    return rows


def paraphrase_prompts_path() -> Path:
    """Where the shipped paraphrase prompt file lives (``pixlm/assets/paraphrase_prompts.jsonl``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "paraphrase_prompts.jsonl"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the paraphrase-robustness prompt-spec file.")
    p.add_argument("--out", default=str(paraphrase_prompts_path()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-per-kind", type=int, default=20)
    a = p.parse_args(argv)
    rows = make_paraphrase_set(a.seed, a.n_per_kind)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} paraphrase prompts to {out}")


if __name__ == "__main__":
    main()
