"""Captions mention every object, say only true things, and the world is deterministic."""

from __future__ import annotations

import io
import random
import re
from collections import Counter

import pytest

from pixlm.data.shapes import SHAPES, caption, group_relation_scene, iter_scenes, random_scene, render, satisfies
from pixlm.data.specs import parse_prompt

# Surface nouns of each shape (the canonical word and the paraphrase synonyms), singular and plural.
NOUNS = {
    "circle": ("circle", "circles"), "disk": ("circle", "disks"), "round dot": ("circle", "round dots"),
    "square": ("square", "squares"), "box": ("square", "boxes"), "block": ("square", "blocks"),
    "triangle": ("triangle", "triangles"), "diamond": ("diamond", "diamonds"), "rhombus": ("diamond", "rhombuses"),
}
NUMBERS = {"two": 2, "three": 3, "four": 4}


def count_mentions(text: str) -> Counter:
    """Objects per shape named in a caption: a singular noun is one, a plural takes the last number word."""
    counts: Counter = Counter()
    words = {form: w for w, (_, plural) in NOUNS.items() for form in (w, plural)}
    pattern = re.compile(r"\b(" + "|".join(sorted(words, key=len, reverse=True)) + r"|two|three|four)\b")
    number = 1
    for tok in pattern.findall(text):
        if tok in NUMBERS:
            number = NUMBERS[tok]
            continue
        singular = words[tok]
        plural = tok != singular
        counts[NOUNS[singular][0]] += number if plural else 1
        number = 1
    return counts


def test_count_mentions_helper() -> None:
    assert count_mentions("a picture of two small red circles and a box in the center") == {"circle": 2, "square": 1}
    assert count_mentions("four rhombuses") == {"diamond": 4}


def test_every_object_is_mentioned() -> None:
    for seed in range(40):
        for _, text, scene in iter_scenes(seed, 25):
            want = Counter(o.shape for o in scene.objects)
            assert count_mentions(text) == want, (seed, text, scene.to_dicts())


def test_captions_are_true_and_complete() -> None:
    """Read back as an exact spec, each caption is satisfied by its own scene (and only holds its objects)."""
    for _, text, scene in iter_scenes(11, 1500):
        assert satisfies(scene.to_dicts(), parse_prompt(text)), (text, scene.to_dicts())


def test_captions_vary() -> None:
    texts = [t for _, t, _ in iter_scenes(5, 1500)]
    joined = " ".join(texts)
    for phrase in ["two", "three", "small", "large", "in the top left", "at the bottom", "in the center",
                   "to the left of", "to the right of", "above", "below", "a picture of"]:
        assert phrase in joined, phrase
    assert any(not any(c in t for c in ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"))
               for t in texts)  # colour is sometimes left out
    assert len(set(texts)) > 0.8 * len(texts)


def test_scene_rules() -> None:
    rng = random.Random(0)
    counts = Counter()
    for _ in range(2000):
        scene = random_scene(rng)
        assert 1 <= len(scene.objects) <= 4
        assert len({(o.row, o.col) for o in scene.objects}) == len(scene.objects)
        assert all(-1 <= dx <= 1 and -1 <= dy <= 1 for dx, dy in scene.jitter)
        counts[len(scene.objects)] += 1
        counts.update(o.shape for o in scene.objects)
    assert set(counts) >= {1, 2, 3, 4, *SHAPES}


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_same_seed_same_bytes() -> None:
    a = [(png_bytes(i), t, s.to_dicts(), s.jitter) for i, t, s in iter_scenes(42, 30)]
    b = [(png_bytes(i), t, s.to_dicts(), s.jitter) for i, t, s in iter_scenes(42, 30)]
    assert a == b


def test_different_seeds_differ() -> None:
    a = [(i.tobytes(), t) for i, t, _ in iter_scenes(1, 10)]
    b = [(i.tobytes(), t) for i, t, _ in iter_scenes(2, 10)]
    assert all(x != y for x, y in zip(a, b))


def test_caption_depends_only_on_rng() -> None:
    scene = random_scene(random.Random(3))
    assert caption(scene, random.Random(9)) == caption(scene, random.Random(9))
    assert render(scene).tobytes() == render(scene).tobytes()


@pytest.mark.parametrize("text", ["a red circle", "two small blue squares and a diamond in the top left",
                                  "an orange triangle to the left of a pink disk", "there is three boxes"])
def test_parse_prompt_examples(text: str) -> None:
    spec = parse_prompt(text)
    assert spec["exact"] is True
    assert all("shape" in o for o in spec["objects"])


def test_group_relation_scenes_satisfy_their_captions() -> None:
    """Captions such as "two red circles above a blue square": every one parses to a spec its scene satisfies."""
    rng = random.Random(0)
    counts = set()
    for _ in range(300):
        scene, text = group_relation_scene(rng)
        spec = parse_prompt(text)
        assert satisfies([o.to_dict() for o in scene.objects], spec), text
        assert spec["relations"] and 3 <= len(scene.objects) <= 4
        counts.add(len(spec["relations"]))
    assert counts == {2, 3, 4}  # 2+1 and 1+2 → 2 relations, 3+1 / 1+3 → 3, 2+2 → 4
