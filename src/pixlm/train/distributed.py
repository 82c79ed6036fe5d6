"""Accelerate set-up shared by the training loops, and ``--num-processes`` re-launching.

Every trainer runs ``pixlm.train.loop.TrainLoop``, a plain Accelerate loop, so the same command runs on one CPU, under
``accelerate launch`` on many GPUs or machines (DDP or FSDP, chosen by the accelerate config), or under
``torchrun``. ``make_accelerator`` picks gloo on a machine without GPUs, where Accelerate would otherwise
ignore the other processes. ``relaunch`` turns ``pixlm train ... --num-processes N`` into N processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

MIXED_PRECISION = ("no", "bf16", "fp16")


def check_precision(mixed_precision: str, grad_accum: int) -> None:
    """Raise a ValueError naming a bad ``mixed_precision`` or ``grad_accum``."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision={mixed_precision!r} must be one of {MIXED_PRECISION}")
    if mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed_precision='fp16' needs a CUDA GPU; use 'bf16' (CPU or GPU) or 'no'")
    if grad_accum < 1:
        raise ValueError(f"grad_accum={grad_accum} must be at least 1 micro-batch per optimizer step")


def make_accelerator(mixed_precision: str = "no", grad_accum: int = 1) -> Any:
    """An ``Accelerator`` for this process: multi-process CPU (gloo) when launched so without GPUs.

    Gradient accumulation is done by the loops themselves (they split each step's batch into ``grad_accum``
    micro-batches), so it is only checked here.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    check_precision(mixed_precision, grad_accum)
    # Accelerate keeps one precision per Python process; forget it (not the process group, which is
    # PartialState's) so that several trainings in one process (tests, notebooks) can each choose theirs.
    AcceleratorState._reset_state(reset_partial_state=False)
    # "no" defers to `accelerate launch --mixed_precision`/its config when there is one.
    return Accelerator(mixed_precision=None if mixed_precision == "no" else mixed_precision,
                       cpu=launched() and not torch.cuda.is_available())


def launched() -> bool:
    """True inside a process started by torchrun / ``accelerate launch`` (or an MPI launcher)."""
    return any(k in os.environ for k in ("LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))


def relaunch(num_processes: int, argv: list[str] | None = None) -> int:
    """Run this command again as ``num_processes`` local processes (``torch.distributed.run``); returns its code.

    The children see ``LOCAL_RANK`` and so do not re-launch themselves. On a GPU machine every process gets
    one GPU; without GPUs they talk over gloo.
    """
    if num_processes < 1:
        raise ValueError(f"--num-processes={num_processes} must be at least 1")
    # `pixlm train ...` and `python -m pixlm.cli train ...` re-run as pixlm.cli, `python -m pixlm.train ...` as itself
    module = "pixlm.train" if Path(sys.argv[0]).parts[-2:] == ("train", "__main__.py") else "pixlm.cli"
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
           "-m", module, *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    return subprocess.run(cmd, env=env, check=False).returncode
