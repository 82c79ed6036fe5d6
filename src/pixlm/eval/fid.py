"""Distribution distances between generated images and real renders of the same prompts.

The usual FID uses ImageNet Inception-v3 features; those weights cannot be downloaded here, and ImageNet
features would say little about 64×64 flat-coloured shapes anyway. We use a network trained on the shapes
domain instead: the learned judge's penultimate layer (9 cells × 32 features = 288 values per image).
Numbers computed this way are comparable with each other, not with published FIDs.

For every generated image the reference set holds one real render of a random scene that satisfies the
same prompt spec (:func:`sample_scene_for_spec`), so both sets follow the same prompt distribution.
Alongside the Fréchet distance we report k-NN precision/recall (Kynkäänniemi et al., 2019) and
density/coverage (Naeem et al., 2020), and the Fréchet distance between two independent real sets as the
floor that finite samples alone produce.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
from PIL import Image

from pixlm.data.shapes import COLORS, SHAPES, SIZES, Scene, ShapeObject, relation_holds, render, satisfies

FEATURE_NAME = "pixlm judge penultimate layer (9 cells × 32), trained on degraded shapes renders"


def sample_scene_for_spec(spec: dict, rng: random.Random) -> Scene:
    """A random scene that satisfies ``spec``: unstated attributes and cells drawn at random.

    Only the spec's objects are placed (a scene without extra objects satisfies exact and non-exact specs
    alike). Raises ValueError when no placement on the 3×3 grid can satisfy the spec.
    """
    want = list(spec.get("objects", []))
    rels = [tuple(r) for r in spec.get("relations", [])]
    if len(want) > 9:
        raise ValueError(f"spec has {len(want)} objects; a 3×3 grid holds at most 9")
    attrs = []
    for i, o in enumerate(want):
        bad = set(o) - {"shape", "color", "size", "row", "col"}
        if bad:
            raise ValueError(f"spec object {i} has unknown keys {sorted(bad)}")
        attrs.append((o.get("shape", rng.choice(SHAPES)), o.get("color", rng.choice(COLORS)),
                      o.get("size", rng.choice(SIZES))))
    cells = [(r, c) for r in range(3) for c in range(3)]
    candidates = []
    for o in want:
        cand = [(r, c) for r, c in cells if o.get("row", r) == r and o.get("col", c) == c]
        rng.shuffle(cand)
        candidates.append(cand)

    placed: list[tuple[int, int]] = []

    def ok(k: int) -> bool:  # relations whose both ends are among the first k + 1 placed objects
        for i, rel, j in rels:
            if max(i, j) == k and not relation_holds(
                    {"row": placed[i][0], "col": placed[i][1]}, rel, {"row": placed[j][0], "col": placed[j][1]}):
                return False
        return True

    def search(k: int) -> bool:  # backtracking over shuffled cells: random, yet finds a placement if one exists
        if k == len(want):
            return True
        for cell in candidates[k]:
            if cell in placed:
                continue
            placed.append(cell)
            if ok(k) and search(k + 1):
                return True
            placed.pop()
        return False

    if not search(0):
        raise ValueError(f"no placement on the 3×3 grid satisfies spec {spec!r}")
    objects = [ShapeObject(s, c, z, r, col) for (s, c, z), (r, col) in zip(attrs, placed)]
    scene = Scene(objects, [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in objects])
    assert satisfies(scene.to_dicts(), spec), (spec, scene.to_dicts())  # the search is exact; guard regressions
    return scene


def reference_images(specs: Sequence[dict], seed: int = 0) -> list[Image.Image]:
    """One real render per spec, deterministic in ``seed``."""
    rng = random.Random(seed)
    return [render(sample_scene_for_spec(s, rng)) for s in specs]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, D) and ``b`` (M, D).

    Uses Tr(sqrt(S_a S_b)) = Σ sqrt(eig(sqrt(S_a) S_b sqrt(S_a))), which stays real and stable in numpy.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ s_b @ root_a
    tr_cross = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_cross)
    return max(d, 0.0)


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.clip((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T, 0, None)


def knn_metrics(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """k-NN precision, recall, density and coverage of ``fake`` against ``real`` (both (N, D))."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"need more than k={k} samples per set, got {len(real)} real and {len(fake)} fake")
    d_rr, d_ff, d_rf = _sq_dists(real, real), _sq_dists(fake, fake), _sq_dists(real, fake)
    r_real = np.sort(d_rr, axis=1)[:, k]  # k-th neighbour radius (index 0 is the point itself)
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside_real = d_rf <= r_real[:, None]  # (R, F): fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d_rf <= r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((d_rf.min(axis=1) <= r_real).mean()),
    }


def distribution_metrics(generated: np.ndarray, reference: np.ndarray, reference2: np.ndarray | None = None,
                         k: int = 3) -> dict:
    """FID-style distance and k-NN metrics from judge features of generated and reference images.

    ``reference2`` (a second, independent real set) gives ``fid_floor``: the distance sampling noise alone
    produces at this sample size.
    """
    out: dict = {"fid": frechet_distance(generated, reference), "n": int(len(generated)),
                 "feature": FEATURE_NAME, "feature_dim": int(generated.shape[1]),
                 "note": "ImageNet Inception weights cannot be downloaded here; features come from a network "
                         "trained on the shapes domain, so values compare across pixlm runs only."}
    if reference2 is not None:
        out["fid_floor"] = frechet_distance(reference2, reference)
    if min(len(generated), len(reference)) > k:
        out.update(knn_metrics(reference, generated, k))
        out["k"] = k
    return out
