"""Does running AmusedPipeline between pixlm calls slow pixlm down? Blocks vs alternating calls, one process.

speed.py's paired rounds alternate one pixlm call and one Amused call so that both see the same machine
load. This script checks what that alternation itself costs each system: per round it times a block of
calls of each system alone (first call dropped) and then alternating calls, and records each call's
minor page faults and system CPU time (``getrusage``), so allocator effects show apart from load noise.

    python benchmarks/interleave.py --batch 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (the same builders and prompt stream as the speed benchmark)


def measured(fn: Callable[[], Any]) -> dict[str, float]:
    """Wall ms, minor page faults and system CPU ms of one call."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    wall, r1 = (time.perf_counter() - t0) * 1e3, resource.getrusage(resource.RUSAGE_SELF)
    return {"ms": wall, "faults": r1.ru_minflt - r0.ru_minflt, "sys_ms": (r1.ru_stime - r0.ru_stime) * 1e3}


def medians(calls: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(c[k] for c in calls), 1) for k in calls[0]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=4, help="timed calls per block and alternating pairs per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", default="auto", help="pixlm variant (speed.CPU_VARIANTS)")
    ap.add_argument("--out", default=None, help="optional JSON file for the results")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from pixlm.inference import optimize

    base, _ = speed.build_pixlm("bundled")
    take = speed.prompt_stream()
    params = sum(p.numel() for p in base.generator.parameters())
    amused, _ = speed.build_amused(base.generator.config, params, text_dim=base.text_encoder.dim, device="cpu")
    gen = torch.Generator().manual_seed(0)
    guidance = base.defaults["guidance_scale"]
    pipe = optimize(speed.clone_pipeline(base), **speed.CPU_VARIANTS[a.variant])

    def pixlm() -> None:
        pipe.generate(take(a.batch), num_inference_steps=8, guidance_scale=guidance, seed=0)

    def amused_call() -> None:
        amused(take(a.batch), num_inference_steps=8, guidance_scale=guidance, generator=gen)

    rounds = []
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            pixlm()
            amused_call()
        for r in range(a.rounds):
            block_p = [measured(pixlm) for _ in range(a.calls + 1)][1:]
            block_a = [measured(amused_call) for _ in range(a.calls + 1)][1:]
            alt_p, alt_a = [], []
            for _ in range(a.calls):
                alt_p.append(measured(pixlm))
                alt_a.append(measured(amused_call))
            row = {"block": {"pixlm": medians(block_p), "amused": medians(block_a)},
                   "alternating": {"pixlm": medians(alt_p), "amused": medians(alt_a)}}
            for mode in ("block", "alternating"):
                row[mode]["ratio"] = round(row[mode]["amused"]["ms"] / row[mode]["pixlm"]["ms"], 2)
            rounds.append(row)
            print(json.dumps({"round": r, **row}), flush=True)
    result = {"batch": a.batch, "variant": a.variant, "threads": a.threads, "torch": torch.__version__,
              "rounds": rounds}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
