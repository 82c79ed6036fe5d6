"""Detailed captions: one canonical sentence that names every object with size, colour, shape and position.

Objects are listed in reading order (row by row, left to right), each as "a <size> <colour> <shape> <position>",
joined by ", "::

    a large red circle in the top left, a small blue square at the bottom

The wording is the canonical vocabulary of the shapes world, so :func:`pixlm.data.specs.parse_prompt` reads it
back; :func:`parse_detailed` adds the checks that make the reading a complete scene (every attribute present,
one object per cell).
"""

from __future__ import annotations

from pixlm.data.shapes import OBJECT_KEYS, POSITIONS, Scene, ShapeObject
from pixlm.data.specs import SpecError, parse_prompt


def _objects(scene: Scene | list[dict] | list[ShapeObject]) -> list[dict]:
    items = scene.objects if isinstance(scene, Scene) else scene
    return [o.to_dict() if isinstance(o, ShapeObject) else dict(o) for o in items]


def object_phrase(obj: dict | ShapeObject) -> str:
    """"a large red circle in the top left" for one object."""
    o = obj.to_dict() if isinstance(obj, ShapeObject) else obj
    missing = [k for k in OBJECT_KEYS if k not in o]
    if missing:
        raise ValueError(f"object {o!r} lacks {missing}; a detailed caption needs {OBJECT_KEYS}")
    return f"a {o['size']} {o['color']} {o['shape']} {POSITIONS[(o['row'], o['col'])]}"


def detailed_caption(scene: Scene | list[dict] | list[ShapeObject]) -> str:
    """The canonical full description of a scene (objects in reading order); "nothing" for an empty scene."""
    objs = sorted(_objects(scene), key=lambda o: (o["row"], o["col"]))
    if not objs:
        return "nothing"
    return ", ".join(object_phrase(o) for o in objs)


def scene_prompt(scene: Scene | list[dict] | list[ShapeObject]) -> str:
    """The detailed caption with the last ", " turned into " and " — the form ``shapes.caption`` writes,
    which is what a text-to-image model trained on shapes captions has seen most."""
    objs = sorted(_objects(scene), key=lambda o: (o["row"], o["col"]))
    if not objs:
        raise ValueError("an empty scene has no prompt")
    parts = [object_phrase(o) for o in objs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def parse_detailed(text: str) -> list[dict]:
    """Objects ``{shape, color, size, row, col}`` (reading order) named by a detailed caption.

    Raises ``SpecError`` when the text is outside the grammar, an object lacks an attribute, or two objects
    share a cell. "nothing" reads as an empty scene.
    """
    if text.strip().lower() in ("nothing", ""):
        return []
    spec = parse_prompt(text)
    if spec["relations"]:
        raise SpecError(f"a detailed caption has no relations, got {text!r}")
    objects = []
    for o in spec["objects"]:
        missing = [k for k in OBJECT_KEYS if k not in o]
        if missing:
            raise SpecError(f"object {o!r} in {text!r} lacks {missing}")
        objects.append({k: o[k] for k in OBJECT_KEYS})
    cells = [(o["row"], o["col"]) for o in objects]
    if len(set(cells)) != len(cells):
        raise SpecError(f"two objects share a cell in {text!r}")
    return sorted(objects, key=lambda o: (o["row"], o["col"]))


def same_scene(a: list[dict], b: list[dict]) -> bool:
    """True when two object lists describe the same scene (order ignored)."""
    key = lambda o: tuple(o[k] for k in OBJECT_KEYS)  # noqa: E731
    return sorted(map(key, a)) == sorted(map(key, b))


__all__ = ["detailed_caption", "parse_detailed", "scene_prompt", "object_phrase", "same_scene"]
