"""Counter-based random numbers keyed by (seed, truck, step, purpose).

A draw depends only on its key, never on the order in which threads run or on how
many draws came before, so the parallel CPU kernel, a serial run and a GPU backend
all see the same numbers.  The mixer is SplitMix64's finaliser (Steele, Lea & Flood,
"Fast splittable pseudorandom number generators", OOPSLA 2014), applied once per key
component.  The same function body works on NumPy ``uint64`` arrays and inside Numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Purposes: one stream per kind of random decision, so adding one never shifts another.
PURPOSE_LOSS = 1
PURPOSE_BURST = 2
PURPOSE_DRIVER = 3
PURPOSE_LATENCY = 4

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True, inline="always")
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def uniform(seed: int, truck: int, step: int, purpose: int) -> float:
    """One uniform draw in [0, 1) for the key (seed, truck, step, purpose)."""
    z = _mix(np.uint64(seed) * _GOLDEN + np.uint64(purpose))
    z = _mix(z ^ (np.uint64(truck) * _M1 + _GOLDEN))
    z = _mix(z ^ (np.uint64(step) * _M2 + _GOLDEN))
    return float(z >> _S11) * _INV53
