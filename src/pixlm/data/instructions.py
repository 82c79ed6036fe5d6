"""Instruction edits on shapes-world scenes: "make the circle blue" + a scene → the scene it asks for.

This module is pure scene logic (no images, no models); :func:`pixlm.pipelines.editing.instruct` uses it to decide which
cells of a picture change and what the new picture must show. Supported instructions (case and a trailing
period ignored, "please" allowed)::

    make|turn|paint|colour|color <ref> <attributes>   make the circle blue · make it large · make the red square a
                                                      small green circle · turn the square into a triangle
    remove|delete|erase <ref>                         remove the square · delete all circles · remove the red ones
    add <noun phrase> [<position>]                    add a red triangle in the top right · add two blue squares
    move <ref> to <position> | move <ref> <direction> move the circle to the bottom left · move it up
    replace <ref> with <noun phrase>                  replace the square with a yellow diamond

A reference ``<ref>`` is "it", "the <[size] [colour] shape> [position]", "the <colour|size> one", or a plural
("the circles", "all red shapes", "the red ones") that names every match. A singular reference must match exactly
one object; otherwise the error names the candidates. Attributes an "add" leaves out are drawn from ``rng``
(size defaults to large); the returned spec leaves them free so a judge does not demand them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from pixlm.data.shapes import _PLURAL, _SYNONYMS, COLORS, NUMBER_WORDS, OBJECT_KEYS, POSITIONS, SHAPES, SIZES

OPS = ("set", "remove", "add", "move")
_POS = {phrase.split(" ", 1)[1]: cell for cell, phrase in POSITIONS.items()}  # "the top left" → (0, 0)
_POS.update({"the centre": (1, 1), "the middle": (1, 1)})
_DIRECTIONS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
_SHAPE_WORDS: dict[str, tuple[str, bool]] = {}
for _s in SHAPES:
    for _w in set(_SYNONYMS.get(_s, [_s])) | {_s}:
        _SHAPE_WORDS[_w] = (_s, False)
        _SHAPE_WORDS[_PLURAL.get(_w, _w + "s")] = (_s, True)
_GENERIC = {"shape": False, "shapes": True, "object": False, "objects": True, "one": False, "ones": True,
            "thing": False, "things": True}
_SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "smaller": "small", "large": "large",
               "big": "large", "bigger": "large", "larger": "large", "huge": "large"}
_COUNTS = {"a": 1, "an": 1, "one": 1, **{w: n for n, w in NUMBER_WORDS.items() if n > 1}}


class InstructionError(ValueError):
    """An instruction outside the grammar, or one that does not fit the scene (no match, occupied cell, …)."""


@dataclass
class Instruction:
    """A parsed instruction. ``ref`` is a partial object (``{}`` with ``it`` for "it"); ``attrs`` the new values."""

    op: str
    ref: dict[str, Any] = field(default_factory=dict)
    plural: bool = False
    it: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)  # set/add: shape/color/size(/row/col); move: row/col
    delta: tuple[int, int] | None = None  # move by one cell
    count: int = 1  # add


@dataclass
class EditPlan:
    """What an instruction does to a scene."""

    source: list[dict]
    target: list[dict]  # complete objects, reading order
    spec: dict  # what the edited picture must satisfy (``shapes.satisfies``); free where the instruction was vague
    changed_cells: list[tuple[int, int]]  # cells whose content differs between source and target
    instruction: Instruction


def _clean(text: str) -> str:
    t = re.sub(r"[^a-z ]+", " ", text.lower())
    t = re.sub(r"\b(please|can you|could you|now)\b", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def _attributes(words: list[str], context: str) -> tuple[dict[str, Any], bool | None]:
    """Size/colour/shape words → partial object, and whether the noun was plural (None: no noun)."""
    out: dict[str, Any] = {}
    plural: bool | None = None
    for w in words:
        if w in ("a", "an", "the", "and", "into", "to", "all", "of", "every", "each"):
            continue
        if w in _SIZE_WORDS:
            key, val = "size", _SIZE_WORDS[w]
        elif w in COLORS:
            key, val = "color", w
        elif w in _SHAPE_WORDS:
            (val, plural), key = _SHAPE_WORDS[w], "shape"
        elif w in _GENERIC:
            plural = _GENERIC[w]
            continue
        else:
            raise InstructionError(f"unknown word {w!r} in {context!r}; expected sizes {SIZES}, colours {COLORS}, "
                                   f"shapes {SHAPES}")
        if key in out and out[key] != val:
            raise InstructionError(f"{context!r} names two {key}s ({out[key]!r} and {val!r})")
        out[key] = val
    return out, plural


def _split_position(text: str) -> tuple[str, tuple[int, int] | None]:
    """"red circle in the top left" → ("red circle", (0, 0)); no position → (text, None)."""
    for phrase in sorted(_POS, key=len, reverse=True):
        for prep in ("in ", "at ", "on ", "to ", ""):
            suffix = prep + phrase
            if text == suffix:
                return "", _POS[phrase]
            if text.endswith(" " + suffix):
                return text[: -len(suffix) - 1], _POS[phrase]
    return text, None


def _reference(text: str) -> tuple[dict[str, Any], bool, bool]:
    """"the red circle in the top left" → (partial object, plural, it)."""
    if text in ("it", "this", "that", "the shape", "the object"):
        return {}, False, text == "it" or text in ("this", "that")
    rest, cell = _split_position(text)
    words = rest.split()
    if not words:
        raise InstructionError(f"expected an object after the verb, got {text!r}")
    plural_words = words[0] in ("all", "every", "each")
    if words[0] not in ("the", "all", "every", "each"):
        raise InstructionError(f"refer to an existing object with 'the', 'all' or 'it', got {text!r}")
    ref, plural = _attributes(words, text)
    if plural is None:
        raise InstructionError(f"{text!r} names no object: add a noun ('the red circle', 'the red one')")
    if cell is not None:
        ref["row"], ref["col"] = cell
    return ref, bool(plural) or plural_words, False


def _noun_phrase(text: str) -> tuple[dict[str, Any], int]:
    """"two small red circles in the top left" → (partial object with row/col when given, count)."""
    rest, cell = _split_position(text)
    words = rest.split()
    count = 1
    if words and words[0] in _COUNTS:
        count = _COUNTS[words.pop(0)]
    obj, plural = _attributes(words, text)
    if "shape" not in obj:
        raise InstructionError(f"{text!r} names no shape; say e.g. 'a red triangle'")
    if plural is not None and plural != (count > 1):
        raise InstructionError(f"{text!r}: the number does not agree with the noun")
    if cell is not None:
        if count > 1:
            raise InstructionError(f"{text!r}: one position for {count} objects")
        obj["row"], obj["col"] = cell
    return obj, count


def parse_instruction(text: str) -> Instruction:
    """Parse an edit instruction (see the module docstring for the grammar); raises InstructionError."""
    t = _clean(text)
    if not t:
        raise InstructionError("empty instruction")
    verb, _, rest = t.partition(" ")
    if verb in ("remove", "delete", "erase"):
        ref, plural, it = _reference(rest)
        return Instruction("remove", ref, plural, it)
    if verb == "add":
        obj, count = _noun_phrase(rest)
        return Instruction("add", attrs=obj, count=count)
    if verb == "replace":
        m = re.fullmatch(r"(.+?) with (.+)", rest)
        if not m:
            raise InstructionError(f"expected 'replace <object> with <noun phrase>', got {text!r}")
        ref, plural, it = _reference(m[1])
        obj, count = _noun_phrase(m[2])
        if count != 1 or {"row", "col"} & set(obj):
            raise InstructionError(f"replace with a single object and no position, got {m[2]!r}")
        return Instruction("set", ref, plural, it, attrs=obj)
    if verb == "move":
        m = re.fullmatch(r"(.+?) (?:(up|down|left|right)|to (.+))", rest)
        if not m:
            raise InstructionError(f"expected 'move <object> to <position>' or 'move <object> up|down|left|right', "
                                   f"got {text!r}")
        ref, plural, it = _reference(m[1])
        if plural:
            raise InstructionError(f"move one object at a time, got {m[1]!r}")
        if m[2]:
            return Instruction("move", ref, False, it, delta=_DIRECTIONS[m[2]])
        where = m[3]
        cell = _POS.get(where)
        if cell is None:
            raise InstructionError(f"unknown position {where!r}; use one of {sorted(_POS)}")
        return Instruction("move", ref, False, it, attrs={"row": cell[0], "col": cell[1]})
    if verb in ("make", "turn", "paint", "color", "colour", "change"):
        words = rest.split()
        # the reference is the shortest prefix that reads as one; the remainder lists the new attributes
        for cut in range(1, len(words)):
            head, tail = " ".join(words[:cut]), words[cut:]
            if tail[0] in ("to", "into"):
                tail = tail[1:]
            try:
                ref, plural, it = _reference(head)
                attrs, _ = _attributes(tail, " ".join(tail))
            except InstructionError:
                continue
            if attrs:
                return Instruction("set", ref, plural, it, attrs=attrs)
        raise InstructionError(f"expected '{verb} <object> <new size/colour/shape>', e.g. 'make the circle blue', "
                               f"got {text!r}")
    raise InstructionError(f"unknown edit verb {verb!r} in {text!r}; use make/turn/paint, remove/delete, add, move "
                           "or replace")


def _where(o: dict) -> str:
    return POSITIONS[(o["row"], o["col"])]


def _describe(o: dict) -> str:
    return f"the {o['size']} {o['color']} {o['shape']} {_where(o)}"


def _matches(objects: list[dict], ins: Instruction, text: str) -> list[int]:
    if ins.it:
        if len(objects) != 1:
            raise InstructionError(f"'it' in {text!r} is ambiguous: the picture has {len(objects)} objects; name one")
        return [0]
    hits = [i for i, o in enumerate(objects) if all(o[k] == v for k, v in ins.ref.items())]
    if not hits:
        have = "; ".join(_describe(o) for o in objects) or "no objects"
        raise InstructionError(f"no object matches {text!r}; the picture has {have}")
    if len(hits) > 1 and not ins.plural:
        which = "; ".join(_describe(objects[i]) for i in hits)
        raise InstructionError(f"{text!r} is ambiguous: {len(hits)} objects match ({which}); say which one")
    return hits


def _full(o: dict) -> dict:
    return {k: o[k] for k in OBJECT_KEYS}


def plan_edit(objects: list[dict], instruction: str | Instruction, rng: random.Random | None = None) -> EditPlan:
    """Apply an instruction to a scene's objects; returns the target scene, a judging spec and the changed cells."""
    rng = rng or random.Random(0)
    ins = parse_instruction(instruction) if isinstance(instruction, str) else instruction
    text = instruction if isinstance(instruction, str) else ins.op
    source = sorted((_full(o) for o in objects), key=lambda o: (o["row"], o["col"]))
    target = [dict(o) for o in source]
    spec_objs = [dict(o) for o in source]  # the spec keeps every object's full description unless left free
    occupied = {(o["row"], o["col"]) for o in source}
    if ins.op == "add":
        free = [c for c in POSITIONS if c not in occupied]
        if "row" in ins.attrs:
            cell = (ins.attrs["row"], ins.attrs["col"])
            if cell in occupied:
                o = next(o for o in source if (o["row"], o["col"]) == cell)
                raise InstructionError(f"cannot add there: the cell {_where(o)} already holds {_describe(o)}")
            cells = [cell]
        else:
            if len(free) < ins.count:
                raise InstructionError(f"cannot add {ins.count} object(s): only {len(free)} empty cell(s) left")
            cells = rng.sample(free, ins.count)
        for r, c in cells:
            new = {"shape": ins.attrs["shape"], "color": ins.attrs.get("color", rng.choice(COLORS)),
                   "size": ins.attrs.get("size", "large"), "row": r, "col": c}
            target.append(new)
            spec_objs.append({k: v for k, v in new.items() if k in ins.attrs or k == "shape"})
    else:
        hits = _matches(source, ins, text)
        if ins.op == "remove":
            target = [o for i, o in enumerate(target) if i not in hits]
            spec_objs = [o for i, o in enumerate(spec_objs) if i not in hits]
        elif ins.op == "set":
            for i in hits:
                target[i].update(ins.attrs)
                spec_objs[i].update(ins.attrs)
        else:  # move
            (i,) = hits
            o = target[i]
            if ins.delta is not None:
                r, c = o["row"] + ins.delta[0], o["col"] + ins.delta[1]
                if not (0 <= r < 3 and 0 <= c < 3):
                    raise InstructionError(f"cannot move {_describe(o)} further in that direction (off the grid)")
            else:
                r, c = ins.attrs["row"], ins.attrs["col"]
            if (r, c) != (o["row"], o["col"]) and (r, c) in occupied:
                other = next(x for x in source if (x["row"], x["col"]) == (r, c))
                raise InstructionError(f"cannot move there: the cell {POSITIONS[(r, c)]} already holds {_describe(other)}")
            o.update(row=r, col=c)
            spec_objs[i].update(row=r, col=c)
    target.sort(key=lambda o: (o["row"], o["col"]))
    return EditPlan(source, target, {"objects": spec_objs, "relations": [], "exact": True},
                    changed_cells(source, target), ins)


def changed_cells(source: list[dict], target: list[dict]) -> list[tuple[int, int]]:
    """Cells whose object (or emptiness) differs between two scenes, in reading order."""
    a = {(o["row"], o["col"]): _full(o) for o in source}
    b = {(o["row"], o["col"]): _full(o) for o in target}
    return sorted(c for c in set(a) | set(b) if a.get(c) != b.get(c))


def _compatible(want: dict, obj: dict) -> bool:
    return all(obj.get(k) == v for k, v in want.items())


def _interpretations(spec_objs: list[dict], kept: list[dict]) -> list[dict[int, dict]]:
    """Ways to read a prompt, each a map from the spec objects that describe kept objects to those objects (the
    other spec objects are new): first as the whole scene (each kept object named by one compatible spec object,
    only when some are left over), then as new content only (an empty map)."""
    ways: list[dict[int, dict]] = []
    if kept and len(spec_objs) > len(kept):
        order = sorted(range(len(spec_objs)), key=lambda i: "row" not in spec_objs[i])
        named: dict[int, dict] = {}
        for o in kept:  # greedy: positioned descriptions first, so "a circle in the top left" names that circle
            hit = next((i for i in order if i not in named and _compatible(spec_objs[i], o)), None)
            if hit is None:
                break
            named[hit] = o
        else:
            ways.append(named)
    ways.append({})
    return ways


def plan_fill(objects: list[dict], prompt: str, coverage: dict[tuple[int, int], float],
              rng: random.Random | None = None) -> EditPlan:
    """Inpaint/outpaint guided by the picture: ``objects`` is the scene read from it, ``coverage`` the share of each
    cell (row, col) that will be repainted (0–1), ``prompt`` names what to draw there, in free wording ("a blue
    square", "two red circles"), or describes the whole scene (kept objects and the new ones).

    Cells covered at least half are *open*: their objects are dropped and the new objects go there (positions the
    prompt gives are honoured when that cell is open; relations to each other and to kept objects are satisfied
    when some placement does; otherwise the most-covered cells first). When no cell is covered half, the most
    covered one is open. Missing colours are drawn from ``rng`` and sizes default to large, as for "add"; the
    returned spec leaves them free. Raises ``SpecError`` when the prompt is outside the grammar and
    ``InstructionError`` when the new objects do not fit the open cells."""
    from itertools import permutations

    from pixlm.data.free_wording import parse_free_prompt
    from pixlm.data.shapes import relation_holds

    rng = rng or random.Random(0)
    bad = [c for c in coverage if c not in POSITIONS]
    if bad:
        raise ValueError(f"coverage has cells {bad} outside the 3×3 grid")
    spec = parse_free_prompt(prompt)
    want = [dict(o) for o in spec["objects"]]
    if not want:
        raise InstructionError(f"prompt {prompt!r} names nothing to draw")
    candidates = sorted(c for c, v in coverage.items() if v >= 0.5)
    rng.shuffle(candidates)  # equally covered cells (a whole strip) in a random order; the sort below is stable
    open_cells = sorted(candidates, key=lambda c: -coverage[c])
    if not open_cells:
        best = max(coverage.items(), key=lambda cv: (cv[1], cv[0]), default=(None, 0.0))
        if best[1] <= 0:
            raise InstructionError("nothing is repainted, so there is no room for new objects")
        open_cells = [best[0]]
    source = sorted((_full(o) for o in objects), key=lambda o: (o["row"], o["col"]))
    kept = [o for o in source if (o["row"], o["col"]) not in open_cells]
    for kept_of in _interpretations(want, kept):
        new_idx = [i for i in range(len(want)) if i not in kept_of]
        if len(new_idx) > len(open_cells):
            continue
        # relation checks need every spec object placed: the ones naming kept objects where those objects are
        for cells in permutations(open_cells, len(new_idx)):
            pos = {i: c for i, c in zip(new_idx, cells)}
            if any("row" in want[i] and (want[i]["row"], want[i]["col"]) in open_cells
                   and (want[i]["row"], want[i]["col"]) != pos[i] for i in new_idx):
                continue
            where = {i: (o["row"], o["col"]) for i, o in kept_of.items()} | pos
            if all(relation_holds({"row": where[a][0], "col": where[a][1]}, rel,
                                  {"row": where[b][0], "col": where[b][1]}) for a, rel, b in spec["relations"]):
                break
        else:
            continue
        new_objs, spec_objs = [], [dict(o) for o in kept]
        for i in new_idx:
            r, c = pos[i]
            o = {"shape": want[i]["shape"], "color": want[i].get("color") or rng.choice(COLORS),
                 "size": want[i].get("size") or "large", "row": r, "col": c}
            new_objs.append(o)
            spec_objs.append({k: v for k, v in o.items() if k in want[i] or k in ("shape", "row", "col")})
        target = sorted(kept + new_objs, key=lambda o: (o["row"], o["col"]))
        ins = Instruction("add", attrs={}, count=len(new_objs))
        return EditPlan(source, target, {"objects": spec_objs, "relations": [], "exact": True},
                        sorted(set(changed_cells(source, target)) | set(open_cells)), ins)
    raise InstructionError(f"prompt {prompt!r} names {len(want)} object(s) but only {len(open_cells)} cell(s) are "
                           f"repainted at least half ({open_cells}), or no placement there meets its relations")


__all__ = ["Instruction", "EditPlan", "InstructionError", "parse_instruction", "plan_edit", "plan_fill",
           "changed_cells", "OPS"]
