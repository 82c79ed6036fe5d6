"""Training throughput of the masked generator on 1 and on 2 CPU processes (DDP over gloo).

Each setting runs ``python -m pixlm.train generator`` (with ``--num-processes 2`` for the second) on a
small pre-encoded shapes pool with the same per-process batch, so 2 processes handle twice the examples per
step. Throughput is measured between the first and the last logged step (process start-up, pool encoding and
the final evaluation are left out). CPU time of the whole run (all processes) is recorded beside the wall
time, because on a shared machine wall time depends on what else runs.

    OMP_NUM_THREADS=1 python benchmarks/ddp_throughput.py --steps 20 --skip 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_setting(work: Path, vq: Path, procs: int, a: argparse.Namespace) -> dict:
    run = work / f"p{procs}"
    cmd = [sys.executable, "-m", "pixlm.train", "generator", "--out", str(run), "--tokenizer", str(vq),
           "--text-encoder", "tiny", "--pool", str(a.pool), "--dim", str(a.dim), "--layers", str(a.layers),
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--log-every", "1",
           "--ckpt-every", str(10 * a.steps), "--num-processes", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, so a timeout ends every process
    try:
        _, err = proc.communicate(timeout=a.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise SystemExit(f"{procs} process(es): no result within --timeout {a.timeout} s")
    if proc.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed:\n{err[-2000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    first, last = rows[a.skip], rows[-2]  # the last step also runs the quick evaluation
    examples = last["examples"] - first["examples"]
    secs = last["elapsed_s"] - first["elapsed_s"]
    return {"processes": procs, "global_batch": a.batch_size * procs, "steps_timed": last["step"] - first["step"],
            "examples_per_s": examples / secs, "steps_per_s": (last["step"] - first["step"]) / secs,
            "run_wall_s": wall, "run_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "final_loss": rows[-1]["loss"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5, help="Logged steps left out at the start (warm-up).")
    p.add_argument("--batch-size", type=int, default=32, help="Per process.")
    p.add_argument("--pool", type=int, default=128)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process.")
    p.add_argument("--timeout", type=float, default=600, help="Seconds one setting may take.")
    p.add_argument("--out", default="benchmarks/results/ddp_throughput.json")
    a = p.parse_args()
    import torch

    from pixlm.models.vq import VQConfig, VQModel

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        # untrained and small: only the 8×8 token grid matters to the generator's cost
        VQModel(VQConfig(channels=(8, 8, 16, 16), levels=(4, 4, 4))).save_pretrained(work / "vq")
        load_before = os.getloadavg()
        results = [run_setting(work, work / "vq", n, a) for n in (1, 2)]
        load_after = os.getloadavg()
    speedup = results[1]["examples_per_s"] / results[0]["examples_per_s"]
    report = {"command": " ".join(["python", *sys.argv]), "settings": vars(a), "results": results,
              "speedup_examples_per_s": speedup, "cpu_count": os.cpu_count(), "loadavg_before": load_before,
              "loadavg_after": load_after, "torch": torch.__version__, "python": platform.python_version(),
              "note": "DDP over gloo on CPU; same per-process batch, so 2 processes do twice the work per step."}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        print(f"{r['processes']} process(es): {r['examples_per_s']:.0f} examples/s "
              f"({r['steps_per_s']:.2f} steps/s, global batch {r['global_batch']}), run {r['run_wall_s']:.0f} s wall, "
              f"{r['run_cpu_s']:.0f} s CPU")
    print(f"speed-up 1 → 2 processes: {speedup:.2f}×; load average {load_before[0]:.1f} → {load_after[0]:.1f} "
          f"on {os.cpu_count()} cores; wrote {a.out}")


if __name__ == "__main__":
    main()
