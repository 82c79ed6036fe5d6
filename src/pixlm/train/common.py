"""What every training script shares: run folders, resumable checkpoints, loss logs and plots, batches.

A training checkpoint is a folder ``run/checkpoints/step-XXXXXXX`` written atomically (temp dir + rename,
marked by a ``.complete`` file) holding the model (safetensors), the optimizer state (tensors only, read back
with ``weights_only=True``) and ``state.json``. Data order is a pure function of (seed, step), so a resumed
run sees exactly the batches the interrupted one would have seen.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixlm.checkpoint import atomic_write_dir, load_weights, read_json, save_module, write_json
from pixlm.data.shapes import random_scene, render, caption


def step_rng(seed: int, step: int) -> random.Random:
    """The RNG for one training step: same (seed, step) ⇒ same batch, whatever happened before."""
    return random.Random(seed * 1_000_003 + step)


def shapes_batch(seed: int, step: int, batch_size: int, size: int = 64) -> tuple[torch.Tensor, list[str], list]:
    """A fresh batch of shapes scenes: images (B, 3, H, W) in [-1, 1], captions and scenes."""
    rng = step_rng(seed, step)
    scenes = [random_scene(rng) for _ in range(batch_size)]
    caps = [caption(s, rng) for s in scenes]
    arr = np.stack([np.asarray(render(s, size)) for s in scenes])  # (B, H, W, 3) uint8
    return images_to_tensor(arr), caps, scenes


def images_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] → uint8 (B, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two batches in [-1, 1], over the 0–255 range."""
    mse = ((tensor_to_uint8(a).astype(np.float64) - tensor_to_uint8(b).astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def save_training_checkpoint(run: Path, step: int, modules: dict[str, torch.nn.Module],
                             optimizer: torch.optim.Optimizer, extra: dict[str, Any], keep: int = 3) -> Path:
    """Atomically write checkpoint ``step`` (each module in its own subfolder) and keep the newest ``keep``."""
    def write(tmp: Path) -> None:
        for name, m in modules.items():
            save_module(m, m.config, tmp / name, m.kind)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        write_json(tmp / "state.json", {"step": step, **extra})

    path = atomic_write_dir(run / "checkpoints" / f"step-{step:07d}", write)
    for old in complete_checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def complete_checkpoints(run: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first (a folder without ``.complete`` was interrupted)."""
    d = run / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("step-*") if (p / ".complete").is_file())


def resume_from_latest(run: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> dict:
    """Load the newest complete checkpoint into modules/optimizer; returns its state (``{}`` when none)."""
    ckpts = complete_checkpoints(run)
    if not ckpts:
        return {}
    last = ckpts[-1]
    for name, m in modules.items():
        load_weights(m, last / name)
    optimizer.load_state_dict(torch.load(last / "optimizer.pt", weights_only=True))
    return read_json(last / "state.json")


class LossLog:
    """Append-only JSONL of training metrics plus a loss-curve PNG."""

    def __init__(self, run: Path, resume_step: int = 0) -> None:
        self.path = run / "log.jsonl"
        if self.path.exists():  # drop lines past the checkpoint we resumed from
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def append(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def plot(self, keys: tuple[str, ...] = ("loss",)) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        for ax, k in zip(axes[0], keys):
            pts = [(r["step"], r[k]) for r in rows if k in r]
            if pts:
                ax.plot(*zip(*pts))
            ax.set_title(k)
            ax.set_xlabel("step")
        fig.tight_layout()
        fig.savefig(self.path.with_name("loss.png"))
        plt.close(fig)


def save_grid(images: np.ndarray, path: Path, cols: int = 8) -> None:
    """uint8 (N, H, W, 3) → one PNG grid."""
    from PIL import Image

    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    grid = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = im
    Image.fromarray(grid).save(path)
