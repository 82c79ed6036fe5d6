"""Free wording → the caption grammar: ``normalize_prompt`` rewrites a freely worded prompt with the synonyms the
training phrasings use (:mod:`pixlm.data.phrasing`), and ``parse_free_prompt`` reads it with ``specs.parse_prompt``.

It sits above ``specs``, ``loose`` and ``phrasing`` (it reads their word lists), so none of them imports it.
"""

from __future__ import annotations

import re

from pixlm.data import loose, phrasing
from pixlm.data.shapes import _PLURAL, _PREFIXES, COLORS, NUMBER_WORDS, POSITIONS, RELATION_WORDS, SHAPES
from pixlm.data.specs import _POS_WORDS, _REL_WORDS, Spec, SpecError, _alternation, parse_prompt


def _free_tables() -> tuple[dict[str, str], re.Pattern]:
    """Surface phrase → canonical phrase for every word list the training phrasings use, and one regex over them
    (longest phrase first, whole words only)."""
    table: dict[str, str] = {}

    def add(words: list[str], canon: str) -> None:
        for w in words:
            table.setdefault(w.lower(), canon)

    for color, words in phrasing.COLOR_WORDS.items():
        add(words, color)
    for shape, forms in phrasing.NOUNS.items():
        add([s for s, _ in forms], shape)
        add([p for _, p in forms], _PLURAL[shape])
    for size, words in phrasing.SIZE_WORDS.items():
        add(words, size)
    for n, words in phrasing.COUNT_WORDS.items():
        add([w for w in words if w not in ("a", "an")], "a" if n == 1 else NUMBER_WORDS[n])
    for cell, words in phrasing.POSITION_WORDS.items():
        add(words, POSITIONS[cell])
    for rel, words in phrasing.REL_WORDS.items():
        add(words, RELATION_WORDS[rel])
    for us_uk in phrasing.BRITISH:
        table.setdefault(us_uk[1], us_uk[0])
    for joiner in (" & ", " + ", " plus ", " with ", " as well as ", " together with ", " and also ", " also ",
                   ", and ", " next to ", " beside ", " alongside "):  # "next to" states no side: two objects
        table.setdefault(joiner.strip(), "and")
    for filler in loose.FILLERS:
        table.setdefault(filler, "")
    pattern = re.compile(rf"(?<![\w-])(?:{_alternation(list(table))})(?![\w-])")
    return table, pattern


_FREE: tuple[dict[str, str], re.Pattern] | None = None
_FREE_PREFIXES = sorted({p.strip().lower() for p in (*_PREFIXES, "draw", "draw me", "please make", "please draw",
                                                     "make", "make me", "i want", "i'd like", "can you draw",
                                                     "show me", "give me", "create", "paint", "render",
                                                     "generate", "sketch", "put", "i need") if p.strip()},
                        key=len, reverse=True)


def normalize_prompt(text: str) -> str:
    """Rewrite a freely worded prompt in the caption grammar as far as simple rules can: colour, shape, size, count,
    position and relation synonyms (those ``pixlm.data.phrasing`` trains on) become canonical; imperatives
    ("draw me", "please make"), trailing punctuation, British spellings and "a box coloured blue" word order are
    undone. What the rules do not cover is left as it is (``parse_prompt`` then rejects it)."""
    global _FREE
    if _FREE is None:
        _FREE = _free_tables()
    table, pattern = _FREE
    body = re.sub(r"\s+", " ", text.strip().lower())
    body = re.sub(r"(?:[.!?]+|,? please|,? thanks|\.? thx| on (?:a )?white(?: background)?)$", "", body).strip()
    body = re.sub(r"(?:[.!?]+|,? please|,? thanks|\.? thx)$", "", body).strip()
    for _ in range(2):  # "please draw me ..."
        for p in _FREE_PREFIXES:
            if body.startswith(p + " ") or body.startswith(p + ":"):
                body = body[len(p) + 1:].lstrip(" :")
                break
    body = body.replace(";", ",")
    body = pattern.sub(lambda m: table[m[0]], body)
    colors, nouns = _alternation(list(COLORS)), _alternation([*SHAPES, *(_PLURAL[s] for s in SHAPES)])
    body = re.sub(rf"\b({colors})[- ]colou?red\b", r"\1", body)  # "a blue-colored box"
    body = re.sub(rf"\b({nouns}) (?:colou?red|in|painted|that is|that are) ({colors})\b", r"\2 \1", body)
    body = re.sub(rf"\b({nouns})(?:, | \()({colors})\)?(?=$|,| and )", r"\2 \1", body)  # "a box, blue"
    body = re.sub(rf"\b(?:is|are|placed|located|sitting|positioned) (?=(?:{_alternation(list(_REL_WORDS))}|in the "
                  rf"|at the |on the ))", "", body)
    body = re.sub(r"\b(?:just|only|exactly) (?=a |an |two |three |four )", "", body)
    where = _alternation(list(_POS_WORDS))
    body = re.sub(rf"^({where})(?::|,)? ((?:a|an) (?:(?! and )[^,])*)$", r"\2 \1", body)  # "top left: a red circle"
    body = re.sub(r"\ba (?=[aeiou])", "an ", body)
    body = re.sub(r"\ban (?=[^aeiou\s])", "a ", body)
    return re.sub(r"\s+", " ", body).strip(" ,")


def parse_free_prompt(text: str) -> Spec:
    """``parse_prompt(normalize_prompt(text))``: the spec of a freely worded prompt, or SpecError naming both forms."""
    norm = normalize_prompt(text)
    try:
        return parse_prompt(norm)
    except SpecError as e:
        raise SpecError(f"prompt {text!r} (normalised to {norm!r}) is outside the grammar: {e}") from None
