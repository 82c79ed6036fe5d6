"""Caption metrics: corpus BLEU-4 (Papineni et al., 2002) and a CIDEr-D-style consensus score (Vedantam et al.,
2015), both over whitespace/comma words of lower-cased text, with several references per picture.

Small, dependency-free re-implementations: BLEU is the standard corpus-level one (clipped n-gram precisions,
geometric mean, brevity penalty against the closest reference length); ``cider`` averages, over n = 1..4, the
cosine similarity of TF-IDF n-gram vectors (document frequencies from the references of the whole corpus), with
CIDEr-D's Gaussian length penalty and ×10 scale, but without its clipping of candidate counts.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from pixlm.models.captioner import split_words


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` in [0, 1]; ``references[i]`` holds the reference captions of ``candidates[i]``."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        raise ValueError("no captions to score")
    matched = [0] * max_n
    total = [0] * max_n
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references):
        c = split_words(cand)
        rs = [split_words(r) for r in refs]
        if not rs:
            raise ValueError(f"candidate {cand!r} has no references")
        cand_len += len(c)
        ref_len += min((abs(len(r) - len(c)), len(r)) for r in rs)[1]  # closest reference length, shorter on ties
        for n in range(1, max_n + 1):
            counts = _ngrams(c, n)
            best: Counter = Counter()
            for r in rs:
                best |= _ngrams(r, n)
            matched[n - 1] += sum(min(k, best[g]) for g, k in counts.items())
            total[n - 1] += max(0, len(c) - n + 1)
    if min(matched) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matched, total)) / max_n
    bp = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / max(cand_len, 1))
    return bp * math.exp(log_p)


def cider(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4,
          sigma: float = 6.0) -> float:
    """Mean CIDEr-D-style score over the corpus (0 = nothing shared; at most 10, for captions equal to every
    reference and at least 4 words long)."""
    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"need one non-empty reference list per candidate, got {len(candidates)} and "
                         f"{len(references)}")
    refs_words = [[split_words(r) for r in refs] for refs in references]
    n_docs = len(candidates)
    df: list[Counter] = [Counter() for _ in range(max_n)]
    for rs in refs_words:
        for n in range(1, max_n + 1):
            seen = set()
            for r in rs:
                seen |= set(_ngrams(r, n))
            df[n - 1].update(seen)

    def vec(words: list[str], n: int) -> tuple[dict, float]:
        tf = _ngrams(words, n)
        v = {g: k * math.log(n_docs / max(1.0, df[n - 1][g])) for g, k in tf.items()}
        return v, math.sqrt(sum(x * x for x in v.values()))

    scores = []
    for cand, rs in zip(candidates, refs_words):
        c = split_words(cand)
        per_n = []
        for n in range(1, max_n + 1):
            vc, nc = vec(c, n)
            sims = []
            for r in rs:
                vr, nr = vec(r, n)
                dot = sum(x * vr.get(g, 0.0) for g, x in vc.items())
                penalty = math.exp(-((len(c) - len(r)) ** 2) / (2 * sigma**2))
                sims.append(penalty * dot / (nc * nr) if nc > 0 and nr > 0 else 0.0)
            per_n.append(sum(sims) / len(sims))
        scores.append(10.0 * sum(per_n) / max_n)
    return sum(scores) / len(scores)


__all__ = ["corpus_bleu", "cider"]
