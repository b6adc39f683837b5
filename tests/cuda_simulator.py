"""Runs a test module's ``__main__`` in Numba's CUDA simulator, in a child process.

The simulator (``NUMBA_ENABLE_CUDASIM=1``) must be switched on before Numba's CUDA target is
imported, which the test process has done long before; so the GPU kernels' CI tests run
their comparison in a child process and read its last line of output as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_simulated(module_file: str, *args: str, timeout_s: float = 900.0) -> dict[str, Any]:
    """``python module_file *args`` with the CUDA simulator on; its last line, parsed."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, module_file, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
