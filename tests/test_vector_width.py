"""Importing convoy lets Numba use 512-bit vectors where the CPU has AVX-512, and only
then; ``CONVOY_VECTOR_BITS=256`` and an explicit ``NUMBA_CPU_FEATURES`` leave Numba alone."""

from __future__ import annotations

import os
import subprocess
import sys

import llvmlite.binding as llvm

_PROBE = "import convoy, numba; print(repr(numba.config.CPU_FEATURES))"


def _features_after_import(**env: str) -> str:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "CONVOY_VECTOR_BITS")
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_512_bit_vectors_only_on_avx512() -> None:
    llvm.initialize_native_target()
    host = llvm.get_host_cpu_features().flatten()
    got = _features_after_import()
    if "+avx512f" in host.split(","):
        assert got == repr(host + ",-prefer-256-bit")
    else:
        assert got == "None"


def test_opting_out_leaves_numba_alone() -> None:
    assert _features_after_import(CONVOY_VECTOR_BITS="256") == "None"
    assert _features_after_import(NUMBA_CPU_FEATURES="+sse2") == repr("+sse2")
