"""Reference scenes for specs, the Fréchet distance and k-NN metrics on judge features."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from pixlm.data.shapes import satisfies
from pixlm.data.specs import load_specs
from pixlm.eval.fid import distribution_metrics, frechet_distance, knn_metrics, reference_images, sample_scene_for_spec
from pixlm.eval.judge import Judge


def test_sample_scene_for_every_dev_spec() -> None:
    rng = random.Random(0)
    for row in load_specs():
        scene = sample_scene_for_spec(row["spec"], rng)
        assert satisfies(scene.to_dicts(), row["spec"])


def test_sample_scene_respects_fixed_cells_and_relations() -> None:
    spec = {"objects": [{"shape": "circle", "row": 2}, {"color": "red"}, {}], "relations": [[1, "below", 0]]}
    with pytest.raises(ValueError, match="no placement"):
        sample_scene_for_spec(spec, random.Random(0))  # nothing is below row 2
    spec = {"objects": [{"shape": "circle", "row": 0}, {"color": "red"}], "relations": [[1, "below", 0]]}
    for seed in range(20):
        objs = sample_scene_for_spec(spec, random.Random(seed)).to_dicts()
        assert objs[0]["row"] == 0 and objs[1]["row"] > 0 and objs[1]["color"] == "red"
    cycle = {"objects": [{}, {}], "relations": [[0, "above", 1], [1, "above", 0]]}
    with pytest.raises(ValueError, match="no placement"):
        sample_scene_for_spec(cycle, random.Random(0))
    with pytest.raises(ValueError, match="10 objects"):
        sample_scene_for_spec({"objects": [{}] * 10}, random.Random(0))


def test_frechet_distance_on_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([3.0, 0, 0, 0, 0, 0])
    assert frechet_distance(a, a + shift) == pytest.approx(9.0, rel=1e-6)  # equal covariances: |Δμ|²
    # Covariance 4Σ against Σ: Tr(Σ + 4Σ − 2·2Σ) = Tr(Σ); the means differ by μ.
    expected = np.trace(np.cov(a, rowvar=False)) + (a.mean(0) ** 2).sum()
    assert frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"\(500, 6\) and \(500, 5\)"):
        frechet_distance(a, a[:, :5])


def test_knn_metrics_identical_and_disjoint() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(60, 4))
    same = knn_metrics(a, a)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = knn_metrics(a, a + 100.0)
    assert far["precision"] == far["recall"] == far["coverage"] == 0.0


def test_judge_fid_identical_zero_and_different_positive() -> None:
    judge = Judge.load()
    specs = [r["spec"] for r in load_specs()] * 2  # 600 images: with fewer, sampling noise swamps the signal
    real = judge.embed(reference_images(specs, seed=1))
    real2 = judge.embed(reference_images(specs, seed=2))
    blank = judge.embed([Image.new("RGB", (64, 64), "white")] * len(specs))
    wrong = judge.embed(reference_images([{"objects": [{}] * 4} for _ in specs], seed=1))  # always 4 objects
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    floor = frechet_distance(real, real2)
    assert floor > 0
    assert frechet_distance(wrong, real) > 1.5 * floor
    assert frechet_distance(blank, real) > 10 * floor
    m = distribution_metrics(blank, real, real2)
    assert m["fid"] > m["fid_floor"] and m["coverage"] < 0.1 and m["feature_dim"] == real.shape[1]
    assert "Inception" in m["note"]
