"""ONNX Runtime vs the PyTorch path: batch-1 and batch-8 latency and token agreement, in one run, one machine.

    python benchmarks/onnx_speed.py                               # shapes and emoji, torch's thread count
    python benchmarks/onnx_speed.py --models shapes --threads 2 --repeats 30 --accuracy

For each model: ``export_onnx`` of the plain float32 pipeline into a temporary folder, ``load_pipeline(..., backend="onnxruntime")``
on it, and the same prompts timed on

* ``onnxruntime``: the ONNX graphs under ONNX Runtime (CPU), driven by the same MaskGIT sampler loop;
* ``pytorch default``: ``load_pipeline(name)`` as it is (the library's default path);
* ``pytorch float32``: the plain float32 modules (``precision="reference"`` where load_pipeline has it).

Every system runs with the same threads, steps, guidance and seeds. Calls are interleaved (one call of each
system per round), and each round uses prompts no system has seen, so every call encodes its prompts cold and
machine-load drift hits the systems alike. Reported: the median and p90 of ``--repeats`` rounds after warm-up,
the load average before and after (a loaded machine inflates and scatters every figure), and the share of
image tokens identical to the float32 path at the same seeds (ONNX Runtime computes in float32 too, so only
rounding-level ties can flip). ``--accuracy`` adds the judge's dev-set accuracy (shapes model; minutes).
Writes ``--out``/onnx_speed.json and .md. Not a test: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import prompts as distinct_prompts  # noqa: E402  (benchmarks/latency.py: cold, distinct prompts)


def load_torch(name: str, precision: str | None) -> Any:
    """``load_pipeline(name)`` at ``precision`` (None: the default)."""
    from pixlm.pipelines.text_to_image import load_pipeline

    return load_pipeline(name) if precision is None else load_pipeline(name, precision=precision)


def agreement(a: Any, b: Any, prompts: list[str], seed: int) -> float:
    """Share of image tokens two pipelines draw identically for the same prompts and seed."""
    return float((a.generate(prompts, seed=seed).tokens == b.generate(prompts, seed=seed).tokens).float().mean())


def time_systems(systems: dict[str, Any], batch: int, repeats: int, warmup: int, offset: int) -> dict[str, dict]:
    """Median/p90 milliseconds of ``pipe(prompts)`` per system, interleaved round by round."""
    pool = distinct_prompts(offset + (warmup + repeats) * batch)[offset:]
    times: dict[str, list[float]] = {name: [] for name in systems}
    for r in range(warmup + repeats):
        prompts = pool[r * batch:(r + 1) * batch]
        for name, pipe in systems.items():
            t = time.perf_counter()
            pipe(prompts, seed=r)
            if r >= warmup:
                times[name].append((time.perf_counter() - t) * 1e3)
    return {name: {"median_ms": statistics.median(ts), "p90_ms": sorted(ts)[int(0.9 * (len(ts) - 1))],
                   "n": len(ts)} for name, ts in times.items()}


def accuracy(pipe: Any, out: Path, images_per_prompt: int) -> dict:
    """The judge's dev-set accuracy of ``pipe`` (``pixlm.eval.report.run_eval``)."""
    from pixlm.eval.report import run_eval

    rep = run_eval(model=None, prompts=None, images_per_prompt=images_per_prompt, out=str(out), pipeline=pipe)
    return {"accuracy": rep["overall"], "ci95": rep["overall_ci95"], "n_images": rep["n_images"]}


def run_model(name: str, a: argparse.Namespace, work: Path) -> dict:
    from pixlm.inference.onnx import export_onnx
    from pixlm.pipelines.text_to_image import load_pipeline

    reference = load_torch(name, "reference")
    t = time.perf_counter()
    export_onnx(reference, work / name)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    ort = load_pipeline(work / name, backend="onnxruntime", threads=a.threads)
    load_s = time.perf_counter() - t
    systems = {"onnxruntime": ort, "pytorch default": load_torch(name, None), "pytorch float32": reference}
    probe = distinct_prompts(4096)[-a.agreement_images:]
    row: dict[str, Any] = {
        "export_s": export_s, "ort_load_s": load_s, "defaults": ort.defaults,
        "token_agreement_with_float32": {sys_name: agreement(reference, pipe, probe, a.seed)
                                         for sys_name, pipe in systems.items() if pipe is not reference},
        "agreement_images": len(probe), "latency": {}}
    for i, batch in enumerate(a.batches):
        row["latency"][f"bs{batch}"] = time_systems(systems, batch, a.repeats, a.warmup, offset=1000 * i)
    if a.accuracy and name == "shapes":
        row["accuracy"] = {sys_name: accuracy(pipe, work / "eval" / sys_name.replace(" ", "_"), a.images_per_prompt)
                           for sys_name, pipe in systems.items()}
    return row


def markdown(result: dict) -> str:
    lines = [f"# ONNX Runtime vs PyTorch ({result['machine']['cpu']}, {result['threads']} threads)", "",
             f"{result['note']} Load average before/after: {result['loadavg_before']} / {result['loadavg_after']}.",
             f"Tokens = float32: share of image tokens identical to the float32 PyTorch path at the same seeds "
             f"({next(iter(result['models'].values()))['agreement_images']} images per model).",
             "", "| model | batch | system | median ms | p90 ms | vs pytorch default | tokens = float32 |",
             "|---|---|---|---|---|---|---|"]
    for model, row in result["models"].items():
        for batch, systems in row["latency"].items():
            base = systems["pytorch default"]["median_ms"]
            for name, t in systems.items():
                agree = row["token_agreement_with_float32"].get(name)
                lines.append(f"| {model} | {batch[2:]} | {name} | {t['median_ms']:.1f} | {t['p90_ms']:.1f} | "
                             f"{base / t['median_ms']:.2f}x | {'(reference)' if agree is None else f'{agree:.2%}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from pixlm.eval.bench import _machine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="shapes,emoji", help="bundled names or model folders, comma-separated")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--agreement-images", type=int, default=32)
    ap.add_argument("--accuracy", action="store_true", help="also the judge's dev-set accuracy (shapes; minutes)")
    ap.add_argument("--images-per-prompt", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="e.g. 'quiet machine' or 'loaded machine: figures are not speeds'")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    a.batches = [int(b) for b in a.batches.split(",") if b]
    torch.set_num_threads(a.threads)
    result: dict[str, Any] = {"machine": _machine(), "threads": a.threads, "repeats": a.repeats, "note": a.note,
                              "loadavg_before": [round(x, 2) for x in os.getloadavg()], "models": {}}
    import onnxruntime

    result["machine"]["onnxruntime"] = onnxruntime.__version__
    with tempfile.TemporaryDirectory(prefix="pixlm-onnx-") as tmp:
        for name in [m for m in a.models.split(",") if m]:
            result["models"][name] = run_model(name, a, Path(tmp))
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "onnx_speed.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
