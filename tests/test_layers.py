"""The house's layering (pyproject's [tool.importlinter] contracts), checked by import-linter like any test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extra: pip install -e '.[test]'"
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_import_pixlm_is_cheap_and_public() -> None:
    code = ("import sys, pixlm; assert 'torch' not in sys.modules, 'import pixlm imported torch'; "
            "print(pixlm.__version__); assert callable(pixlm.load_pipeline); "
            "assert pixlm.TextToImagePipeline.__name__ == 'TextToImagePipeline'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    from importlib.metadata import version

    assert run.stdout.split()[0] == version("pixlm")
