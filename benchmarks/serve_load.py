"""Load test for `pixlm serve`: throughput and latency with 1, 4 and 16 concurrent clients.

Starts `pixlm serve` in a subprocess on loopback (so the clients do not share its interpreter), sends a bounded
number of unseeded `POST /v1/images/generations` requests from C concurrent clients, and reads the server's
`/metrics` for the mean batch size. Every request goes to 127.0.0.1 only; each level stops after
``--requests`` requests or ``--max-seconds``, whichever comes first.

    python benchmarks/serve_load.py --tiny                           # random-weight tiny pipeline
    python benchmarks/serve_load.py --bundle-shaped                  # random weights, the bundle's architecture
    python benchmarks/serve_load.py                                  # the bundled model
    python benchmarks/serve_load.py --model DIR --max-batch 1,16     # compare with batching off

Writes JSON (``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROMPTS = ["a red circle", "two blue squares", "a green triangle above a yellow diamond",
           "three purple circles", "a small orange square left of a big blue circle", "a red diamond"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric_sum_count(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of a histogram without labels in Prometheus text (read with prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {s.name: s.value for f in text_string_to_metric_families(text) if f.name == name for s in f.samples}
    return values.get(f"{name}_sum", 0.0), values.get(f"{name}_count", 0.0)


def start_server(model: str, port: int, max_batch: int, window_ms: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pixlm.cli", "serve", "--model", model, "--port", str(port),
           "--max-batch", str(max_batch), "--batch-window-ms", str(window_ms), "--max-queue", "1024",
           "--timeout", "600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pixlm serve exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(base + "/ready", timeout=30).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("pixlm serve did not become ready in 120 s")


async def run_level(base: str, clients: int, requests: int, max_seconds: float, body: dict) -> dict:
    """C clients, each sending requests back to back until ``requests`` have been sent in total."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.monotonic() + max_seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal sent, errors
        while sent < requests and time.monotonic() < deadline:
            k = sent
            sent += 1
            t0 = time.perf_counter()
            r = await http.post(base + "/v1/images/generations", json={**body, "prompt": PROMPTS[k % len(PROMPTS)]})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        before = (await http.get(base + "/metrics")).text
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - t0
        after = (await http.get(base + "/metrics")).text
    s0, c0 = metric_sum_count(before, "pixlm_batch_size_images")
    s1, c1 = metric_sum_count(after, "pixlm_batch_size_images")
    lat = sorted(latencies)
    images = len(lat) * body.get("n", 1)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] * 1e3 if lat else float("nan")

    return {"clients": clients, "requests": len(lat), "errors": errors, "seconds": round(wall, 3),
            "images_per_s": round(images / wall, 2), "requests_per_s": round(len(lat) / wall, 2),
            "p50_ms": round(pct(50), 1), "p95_ms": round(pct(95), 1),
            "mean_ms": round(statistics.fmean(lat) * 1e3, 1) if lat else None,
            "mean_batch_images": round((s1 - s0) / (c1 - c0), 2) if c1 > c0 else None, "forwards": int(c1 - c0)}


def bundle_shaped(path: Path) -> Path:
    """Save a random-weight pipeline with the bundle recipe's component sizes to ``path``."""
    import torch

    from pixlm.models.masked import MaskedConfig, MaskedTransformer
    from pixlm.models.vq import VQConfig, VQModel
    from pixlm.pipelines.text_to_image import TextToImagePipeline
    from pixlm.train.generator import GeneratorTrainConfig, text_encoder_from_spec

    torch.manual_seed(0)
    g = GeneratorTrainConfig(out="", tokenizer="")
    vq = VQModel(VQConfig())
    text = text_encoder_from_spec(g.text_encoder)
    gen = MaskedTransformer(MaskedConfig(vocab_size=vq.vocab_size, dim=g.dim, layers=g.layers, heads=g.heads,
                                         text_dim=text.dim, conditioning=g.conditioning))
    return TextToImagePipeline(vq, text, gen).save_pretrained(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model folder (default: the bundled model)")
    ap.add_argument("--tiny", action="store_true", help="use the random-weight tiny pipeline from pixlm.testing")
    ap.add_argument("--bundle-shaped", action="store_true",
                    help="random weights in the bundle recipe's architecture (MiniLM, 4×192 generator, 1000-code "
                         "FSQ): the bundle's speed before it is trained")
    ap.add_argument("--clients", default="1,4,16", help="comma-separated concurrency levels")
    ap.add_argument("--requests", type=int, default=64, help="requests per level (at least 2 per client are sent)")
    ap.add_argument("--max-seconds", type=float, default=120, help="stop a level after this long")
    ap.add_argument("--max-batch", default="16", help="comma-separated server max_batch values (1 = no batching)")
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=None, help="decoding steps per request (default: the model's)")
    ap.add_argument("--n", type=int, default=1, help="images per request")
    ap.add_argument("--out", type=Path, help="write results JSON here")
    args = ap.parse_args()

    tmp = None
    if args.tiny:
        from pixlm.testing import tiny_pipeline

        tmp = tempfile.TemporaryDirectory()
        model, label = str(tiny_pipeline().save_pretrained(Path(tmp.name) / "tiny")), "tiny (random weights)"
    elif args.bundle_shaped:
        tmp = tempfile.TemporaryDirectory()
        model, label = str(bundle_shaped(Path(tmp.name) / "bundle-shaped")), "bundle-shaped (random weights)"
    elif args.model:
        model, label = args.model, args.model
    else:
        from pixlm.pipelines.common import bundled_model_path

        model, label = str(bundled_model_path()), "bundled shapes-masked"
    body: dict = {"n": args.n, "response_format": "b64_json"}
    if args.steps is not None:
        body["steps"] = args.steps

    results = []
    for max_batch in [int(x) for x in args.max_batch.split(",")]:
        port = free_port()
        proc = start_server(model, port, max_batch, args.window_ms)
        base = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(run_level(base, 2, 8, 60, body))  # warm-up
            for clients in [int(x) for x in args.clients.split(",")]:
                r = asyncio.run(run_level(base, clients, max(args.requests, 2 * clients), args.max_seconds, body))
                r["max_batch"] = max_batch
                results.append(r)
                print(json.dumps(r), file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(20)
    load = os.getloadavg()
    meta = {"model": label, "steps": args.steps or "model default", "n": args.n, "window_ms": args.window_ms,
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "loadavg_after": [round(x, 2) for x in load],
            "torch_threads_env": os.environ.get("OMP_NUM_THREADS")}
    print(f"\nmodel: {label}; steps: {meta['steps']}; {args.n} image(s)/request; {os.cpu_count()} CPUs; "
          f"load average after: {meta['loadavg_after']}\n")
    print("| max_batch | clients | requests | images/s | p50 ms | p95 ms | mean batch (images) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['max_batch']} | {r['clients']} | {r['requests']} | {r['images_per_s']} | {r['p50_ms']} | "
              f"{r['p95_ms']} | {r['mean_batch_images']} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
