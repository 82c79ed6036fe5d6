"""Prompts that combine counting with a relation ("two red circles above a blue square"), judged like the dev set.

    python benchmarks/group_relations.py [--model DIR] [--n 60] [--images-per-prompt 4] [--out DIR]

The dev set has no category that mixes counts and relations. This writes ``--n`` distinct such prompts (from
``shapes.group_relation_scene`` with a seed the generator's training pool never uses) plus the README's quick-start
prompt, as a spec file in ``--out``, and scores them with ``pixlm eval`` (report.json / report.md in ``--out``).
Not a test: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from pixlm.data.shapes import group_relation_scene
from pixlm.data.specs import parse_prompt
from pixlm.eval.report import run_eval

QUICK_START = "two red circles above a blue square"
SEED = 20_261_129  # training pools draw these scenes with random.Random(seed + 779), seed 0


def prompt_rows(n: int, seed: int = SEED) -> list[dict]:
    """The quick-start prompt and ``n - 1`` other distinct group-relation prompts with their specs."""
    rng, seen = random.Random(seed), {QUICK_START}
    rows = [{"prompt": QUICK_START, "category": "group_relation", "spec": parse_prompt(QUICK_START)}]
    while len(rows) < n:
        _, text = group_relation_scene(rng)
        if text not in seen:
            seen.add(text)
            rows.append({"prompt": text, "category": "group_relation", "spec": parse_prompt(text)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--images-per-prompt", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/group_relations")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = out / "prompts.jsonl"
    specs.write_text("".join(json.dumps(r) + "\n" for r in prompt_rows(a.n)))
    report = run_eval(a.model, str(specs), a.images_per_prompt, str(out))
    quick = [r["ok"] for r in report["images"] if r["prompt"] == QUICK_START]
    print(json.dumps({"accuracy": report["overall"], "ci95": report["overall_ci95"], "n_images": report["n"],
                      "quick_start": sum(quick) / len(quick)}, indent=1))


if __name__ == "__main__":
    main()
