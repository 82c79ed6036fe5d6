"""Compositional scores: the fraction of images that satisfy their prompt's spec, per category and overall.

An image passes when :func:`pixlm.data.shapes.satisfies` accepts the objects the judge found in it. Each
fraction comes with a 95% Wilson score interval, which stays inside [0, 1] and behaves at 0 and 1 successes,
unlike the normal approximation.
"""

from __future__ import annotations

import math
from typing import Sequence

from pixlm.data.shapes import satisfies

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``; (0, 1) when ``n`` is 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def category_scores(oks: Sequence[bool], categories: Sequence[str]) -> dict[str, dict]:
    """``{category: {"accuracy", "ci95": [lo, hi], "n", "correct"}}`` from per-image verdicts."""
    if len(oks) != len(categories):
        raise ValueError(f"{len(oks)} verdicts but {len(categories)} categories")
    out: dict[str, dict] = {}
    for name in sorted(set(categories)):
        hits = [bool(ok) for ok, c in zip(oks, categories) if c == name]
        k, n = sum(hits), len(hits)
        lo, hi = wilson_interval(k, n)
        out[name] = {"accuracy": k / n, "ci95": [lo, hi], "n": n, "correct": k}
    return out


def summarize(oks: Sequence[bool], categories: Sequence[str]) -> dict:
    """Per-category scores plus overall accuracy over all images (with Wilson CI) and the category mean.

    ``overall`` weighs every image equally; ``overall_macro`` is the unweighted mean of the category
    accuracies (the GenEval convention), with a normal-approximation 95% interval.
    """
    cats = category_scores(oks, categories)
    n = len(oks)
    k = sum(bool(o) for o in oks)
    out: dict = {"overall": k / n if n else 0.0, "overall_ci95": list(wilson_interval(k, n)), "n": n,
                 "categories": cats}
    if cats:
        accs = [c["accuracy"] for c in cats.values()]
        macro = sum(accs) / len(accs)
        var = sum(c["accuracy"] * (1 - c["accuracy"]) / c["n"] for c in cats.values()) / len(cats) ** 2
        half = Z95 * math.sqrt(var)
        out["overall_macro"] = macro
        out["overall_macro_ci95"] = [max(0.0, macro - half), min(1.0, macro + half)]
    return out


def verdicts(found: Sequence[list[dict]], specs: Sequence[dict]) -> list[bool]:
    """Whether each image's found objects satisfy its spec."""
    if len(found) != len(specs):
        raise ValueError(f"{len(found)} readings but {len(specs)} specs")
    return [satisfies(list(objs), spec) for objs, spec in zip(found, specs)]
