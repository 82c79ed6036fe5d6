"""Micro-timings of two inference swaps on the bundled shapes model (the figures docs/speed.md quotes for them).

    python benchmarks/swap_timings.py --threads 2 [--out benchmarks/results/swap_timings.json]

* ``prepare_ms``: the generator's per-prompt text preparation (``prepare_text``) of the default path for one
  fresh prompt plus the empty one, median over 270 calls after 30 warm-up calls.
* ``decoder_ms``: the VQ decoder at batch 1 and 8, float32 channels-last and bf16 packed (where the CPU has bf16
  arithmetic), with and without ``fuse_upsample_convs`` (``UpsampleConv2d``), median of 60 calls, alternated in two
  rounds. Measures, does not assert; run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch


def median_ms(fn, n: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return round(statistics.median(times), 3)


def main() -> None:
    import pixlm
    from pixlm.inference.linear import cast_io, fuse_upsample_convs, packing_supported, swap_layers

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/swap_timings.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    fast, ref = pixlm.load_pipeline(), pixlm.load_pipeline(precision="reference")
    report: dict = {"threads": a.threads, "precision": fast.inference_settings["precision"], "torch": torch.__version__}
    with torch.inference_mode():
        states, mask = fast.text_encoder.encode(["two red circles above a blue square", ""])
        report["prepare_ms"] = median_ms(lambda: fast.generator.prepare_text(states, mask), 270, 30)
        grids = torch.randint(0, ref.vq.vocab_size, (8, ref.vq.config.grid, ref.vq.config.grid),
                              generator=torch.Generator().manual_seed(0))
        dtypes = ["fp32"] + (["bf16"] if packing_supported(torch.bfloat16) else [])
        rows: dict = {}
        for _ in range(2):  # two alternated rounds
            for dtype in dtypes:
                for fused in (False, True):
                    vq = copy.deepcopy(ref.vq)
                    if fused:
                        fuse_upsample_convs(vq.decoder)
                    if dtype == "bf16":
                        swap_layers(vq.decoder, torch.bfloat16, convs=True)
                        cast_io(vq.decoder, torch.bfloat16)
                    else:
                        vq.decoder.to(memory_format=torch.channels_last)
                    key = f"{dtype} {'fused' if fused else 'unfused'}"
                    for b in (1, 8):
                        rows.setdefault(key, {}).setdefault(f"bs{b}", []).append(
                            median_ms(lambda b=b, vq=vq: vq.decode(grids[:b]), 60, 10))
        report["decoder_ms"] = rows
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
