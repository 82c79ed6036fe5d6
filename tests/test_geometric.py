"""The independent geometric checker reads rendered scenes back exactly (issue 2's "done when")."""

from __future__ import annotations

from pixlm.data.shapes import iter_scenes
from pixlm.data.geometric import read_scene


def key(objects: list[dict]) -> list[tuple]:
    return sorted((o["row"], o["col"], o["shape"], o["color"], o["size"]) for o in objects)


def test_checker_recovers_at_least_99_percent() -> None:
    scenes = list(iter_scenes(7, 300))
    exact = sum(key(read_scene(img)) == key(scene.to_dicts()) for img, _, scene in scenes)
    assert exact / len(scenes) >= 0.99, f"{exact}/{len(scenes)} scenes recovered exactly"
