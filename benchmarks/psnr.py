"""Reconstruction PSNR of a model folder's tokenizer on held-out shapes scenes (a seed no training step uses).

    python benchmarks/psnr.py [--model DIR] [--batches 8]
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder (default: the bundled one)")
    ap.add_argument("--batches", type=int, default=8)
    a = ap.parse_args()
    from pixlm.models.vq import VQModel
    from pixlm.pipelines.common import bundled_model_path
    from pixlm.train.common import psnr, shapes_batch

    root = bundled_model_path() if a.model is None else a.model
    vq = VQModel.from_pretrained(f"{root}/vq")
    vals = []
    with torch.no_grad():
        for k in range(a.batches):
            x, _, _ = shapes_batch(424242, k, 64)
            vals.append(psnr(vq.decode(vq.encode(x)), x))
    print(f"PSNR over {64 * a.batches} held-out scenes: mean {sum(vals) / len(vals):.2f} dB, "
          f"worst batch {min(vals):.2f} dB")


if __name__ == "__main__":
    main()
