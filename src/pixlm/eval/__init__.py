"""Evaluation for the shapes world.

* :mod:`~pixlm.data.geometric` (in ``data``, below the pipelines that use it) — a reader that measures pixels
  (exact on clean renders);
* :mod:`~pixlm.eval.judge` — the combined geometric + learned judge; :mod:`~pixlm.train.judge` its recipe;
* :mod:`~pixlm.eval.augment` — degradations that make renders look generated;
* :mod:`~pixlm.eval.score` — spec satisfaction per category with Wilson 95% intervals;
* :mod:`~pixlm.eval.paraphrase` — the paraphrase-robustness prompt category;
* :mod:`~pixlm.eval.fid` — Fréchet distance and k-NN metrics on judge features;
* :mod:`~pixlm.eval.report` — ``run_eval``, behind ``pixlm eval``.
"""
