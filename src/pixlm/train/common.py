"""What every training script shares: run folders, resumable checkpoints, loss logs and plots, batches.

A training checkpoint is a folder ``run/checkpoints/step-XXXXXXX`` written atomically (temp dir + rename,
marked by a ``.complete`` file) holding the models (safetensors), each process's optimizer and RNG state
(``rank-R.pt``, tensors only, read back with ``weights_only=True``) and ``state.json``. Data order is a pure function of (seed, step), so a resumed
run sees exactly the batches the interrupted one would have seen.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from pixlm.checkpoint import CheckpointError, load_weights, read_json, save_module, write_json
from pixlm.data.shapes import caption, random_scene, render
from pixlm.text.encoder import TextEncoder, TextEncoderConfig


def load_text_encoder(spec: str) -> TextEncoder:
    """The frozen text encoder a trainer names: "minilm", "tiny", a saved pixlm ``text_encoder`` folder, or a local
    Hugging Face encoder folder."""
    if spec in ("minilm", "tiny"):
        return TextEncoder(TextEncoderConfig(type=spec))
    path = Path(spec)
    cfg = path / "config.json"
    if cfg.is_file() and json.loads(cfg.read_text()).get("kind") == "text_encoder":
        return TextEncoder.from_pretrained(path)
    if not path.is_dir():
        raise CheckpointError(f"text_encoder={spec!r}: not 'minilm', 'tiny' or an existing folder")
    return TextEncoder(TextEncoderConfig(type="hf", path=str(path)))


def config_parser(cls: type, description: str | None) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per field of the dataclass ``cls`` (a trainer's config).

    Booleans become ``--flag/--no-flag``; tuples of ints are written comma-separated (``--channels 64,128``).
    """
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if t == "bool":
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif t.startswith("tuple"):
            ap.add_argument(flag, type=lambda v: tuple(int(x) for x in v.split(",")), default=f.default,
                            metavar="N,N,...")
        else:
            ap.add_argument(flag, type={"int": int, "float": float}.get(t, str), default=f.default)
    return ap


def step_rng(seed: int, step: int) -> random.Random:
    """The RNG for one training step: same (seed, step) ⇒ same batch, whatever happened before."""
    return random.Random(seed * 1_000_003 + step)


def step_generator(seed: int, step: int) -> torch.Generator:
    """``step_rng``'s torch counterpart, for the tensors a step draws (pool rows, dropout, masks, noise)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def shapes_batch(seed: int, step: int, batch_size: int, size: int = 64) -> tuple[torch.Tensor, list[str], list]:
    """A fresh batch of shapes scenes: images (B, 3, H, W) in [-1, 1], captions and scenes."""
    rng = step_rng(seed, step)
    scenes = [random_scene(rng) for _ in range(batch_size)]
    caps = [caption(s, rng) for s in scenes]
    arr = np.stack([np.asarray(render(s, size)) for s in scenes])  # (B, H, W, 3) uint8
    return images_to_tensor(arr), caps, scenes


def encode_in_batches(vq: torch.nn.Module, pictures: Any, n: int, desc: str | None = None,
                      batch: int = 256) -> torch.Tensor:
    """(n, N) int16 VQ tokens of ``n`` pictures; ``pictures(i, j)`` gives pictures i..j-1 as (B, 3, H, W) in [-1, 1].

    Batched so a pool of tens of thousands never sits in memory as pixels; a tqdm bar when ``desc`` is given."""
    out = []
    for i in tqdm(range(0, n, batch), desc=desc, disable=desc is None):
        with torch.no_grad():
            out.append(vq.encode(pictures(i, min(i + batch, n))).flatten(1).to(torch.int16))
    return torch.cat(out)


def encode_scenes(vq: torch.nn.Module, scenes: list, desc: str | None = None, batch: int = 256) -> torch.Tensor:
    """Render and tokenize shapes scenes → (P, N) int16."""
    def pictures(i: int, j: int) -> torch.Tensor:
        return images_to_tensor(np.stack([np.asarray(render(s)) for s in scenes[i:j]]))

    return encode_in_batches(vq, pictures, len(scenes), desc, batch)


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors`` file written to a temp name and renamed into place: a crash leaves no half-written cache."""
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


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


CRASH_ENV = "PIXLM_CRASH_DURING_CHECKPOINT"  # test hook: "STEP" or "STEP:POINT"; the process dies there
CRASH_POINTS = ("created", "weights", "marked", "renamed", "pruning")  # the moments of a checkpoint write, in order


def rng_state() -> dict[str, Any]:
    """This process's global RNG states (torch CPU/CUDA, numpy, Python) as tensors and plain lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_py = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)),
                             pos, has_gauss, gauss], "python": [version, list(internal), gauss_py]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_py = state["python"]
    random.setstate((version, tuple(internal), gauss_py))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _maybe_crash(step: int, point: str) -> None:
    """Die like ``kill -9`` at ``point`` of writing checkpoint ``step`` when the test hook asks for it.

    ``PIXLM_CRASH_DURING_CHECKPOINT=4`` dies with the weights of step 4 half written (point ``weights``).
    """
    want = os.environ.get(CRASH_ENV)
    if want and want in (f"{step}:{point}", str(step) if point == "weights" else None):
        os._exit(137)


def save_training_checkpoint(run: Path, step: int, modules: dict[str, torch.nn.Module],
                             optimizer: torch.optim.Optimizer, extra: dict[str, Any], keep: int = 3,
                             accelerator: Any = None, states: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write checkpoint ``step`` crash-safely and keep the newest ``keep``.

    Everything goes into ``.step-XXXXXXX.tmp``; the main process then writes ``.complete`` and renames the
    folder to ``step-XXXXXXX``, so a process killed at any moment leaves either a complete checkpoint or a
    temp folder that resuming ignores (and removes). With an ``accelerator`` every process must call this:
    each one adds its optimizer state and RNG state (``rank-R.pt``); ``states`` (name → full state dict,
    from ``accelerator.get_state_dict``) replaces reading the modules' own state dicts. Without one, only
    the caller writes (as rank 0).
    """
    rank = accelerator.process_index if accelerator is not None else 0
    main = accelerator.is_main_process if accelerator is not None else True
    final = run / "checkpoints" / f"step-{step:07d}"
    tmp = final.with_name(f".{final.name}.tmp")

    def barrier() -> None:
        if accelerator is not None:
            accelerator.wait_for_everyone()

    barrier()  # nobody may still be writing into a temp folder the main process is about to clear
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _maybe_crash(step, "created")
    barrier()
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state()}, tmp / f"rank-{rank}.pt")
    barrier()
    if main:
        for name, m in modules.items():
            if states is not None and name in states:
                write_json_config(tmp / name, m)
                save_file({k: v.detach().contiguous().cpu() for k, v in states[name].items()},
                          str(tmp / name / "model.safetensors"))
            else:
                save_module(m, m.config, tmp / name, m.kind)
            _maybe_crash(step, "weights")  # after the first module: the weights are half written
        world = accelerator.num_processes if accelerator is not None else 1
        write_json(tmp / "state.json", {"step": step, "world_size": world, **extra})
        (tmp / ".complete").write_text("ok\n")
        _maybe_crash(step, "marked")
        if final.exists():  # a resumed run writing the same step again
            shutil.rmtree(final)
        os.replace(tmp, final)
        _maybe_crash(step, "renamed")
        for old in complete_checkpoints(run)[:-keep]:  # renamed first, so a crash cannot leave half of one
            doomed = old.with_name(f".{old.name}.tmp-delete")
            os.replace(old, doomed)
            _maybe_crash(step, "pruning")
            shutil.rmtree(doomed, ignore_errors=True)
    barrier()
    return final


def write_json_config(directory: Path, module: torch.nn.Module) -> None:
    """The ``config.json`` that ``save_module`` writes, for weights saved from a gathered state dict."""
    import dataclasses

    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", {"kind": module.kind, **dataclasses.asdict(module.config)})


def complete_checkpoints(run: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first (a folder without ``.complete`` was interrupted)."""
    d = run / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("step-*") if (p / ".complete").is_file())


def resume_from_latest(run: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None,
                       accelerator: Any = None) -> dict:
    """Load the newest complete checkpoint into modules (and optimizer, with this process's RNG state).

    Returns the checkpoint's ``state.json`` plus ``"path"`` (``{}`` when there is none). Temp folders of
    interrupted writes are removed. Pass ``optimizer=None`` to load only the weights, e.g. before
    ``accelerator.prepare``, and call ``restore_process_state`` after it.
    """
    if accelerator is None or accelerator.is_main_process:
        for stale in (run / "checkpoints").glob(".step-*.tmp*") if (run / "checkpoints").is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)
    ckpts = complete_checkpoints(run)
    if not ckpts:
        return {}
    last = ckpts[-1]
    for name, m in modules.items():
        load_weights(m, last / name)
    state = {**read_json(last / "state.json"), "path": str(last)}
    if optimizer is not None:
        restore_process_state(state, optimizer, accelerator)
    return state


def restore_process_state(state: dict, optimizer: torch.optim.Optimizer, accelerator: Any = None) -> None:
    """Load this process's optimizer state and RNG state (``rank-R.pt``) from the checkpoint ``state`` names.

    A data-parallel (DDP) run may resume on another number of processes: a new rank then takes rank 0's
    optimizer state, which DDP keeps identical on every rank. A sharded (FSDP) run must keep its number.
    """
    last = Path(state["path"])
    rank = accelerator.process_index if accelerator is not None else 0
    if (last / "optimizer.pt").is_file():  # checkpoints written before per-rank state
        optimizer.load_state_dict(torch.load(last / "optimizer.pt", weights_only=True))
        return
    own = last / f"rank-{rank}.pt"
    if not own.is_file() and accelerator is not None and str(accelerator.distributed_type).endswith("FSDP"):
        raise ValueError(f"{last} was written by {state.get('world_size')} processes; an FSDP run holds its optimizer "
                         f"in shards, so resume it on that many processes (got {accelerator.num_processes})")
    saved = torch.load(own if own.is_file() else last / "rank-0.pt", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    if own.is_file():
        set_rng_state(saved["rng"])


class LossLog:
    """Append-only JSONL of training metrics plus a loss-curve PNG."""

    def __init__(self, run: Path, resume_step: int = 0) -> None:
        self.path = run / "log.jsonl"
        if self.path.exists():  # drop lines past the checkpoint we resumed from
            rows = []
            for line in self.path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
            rows = [r for r in rows if r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def append(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def plot(self, keys: tuple[str, ...] = ("loss",)) -> None:
        if not self.path.exists():  # nothing logged yet (a run shorter than its log interval)
            return
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
