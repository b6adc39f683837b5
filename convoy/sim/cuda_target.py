"""Numba's CUDA target as convoy's GPU kernels use it (``net_cuda``, ``kernel_cuda``).

The kernels call the CPU kernels' own model functions (``@njit``), which numba-cuda compiles
again for the device from the same source. This module holds what that needs:

* ``cuda`` and ``config``: Numba's CUDA target and configuration, untyped (their stubs know
  neither the simulator's switch nor the kernel-side API);
* CUDA implementations of ``sumo_cfm.floor_f`` (numba-cuda has no ``np.floor``) and of
  ``aero.drag_lookup`` (the power law evaluated: the CPU's table does not fit in 64 kB of
  constant memory);
* a shim for numba-cuda 0.30 under NumPy 2.5, which no longer has ``np.row_stack``;
* ``device_fn``: a model function as a kernel calls it, on a GPU or in Numba's CUDA
  simulator (``NUMBA_ENABLE_CUDASIM=1``, how CI runs the kernels: no GPU there);
* ``has_gpu``: whether a CUDA GPU is there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

if not hasattr(np, "row_stack"):  # numba-cuda 0.30 registers np.row_stack, gone in NumPy 2.5
    np.row_stack = np.vstack
from numba import config as _config
from numba import cuda as _cuda

from convoy.vehicle.aero import drag_lookup, drag_power_law
from convoy.vehicle.sumo_cfm import floor_f

cuda: Any = _cuda
config: Any = _config

try:  # numba-cuda (the device's numba.cuda) types calls through its own registry
    from numba.cuda import libdevice
    from numba.cuda.extending import overload as _cuda_overload  # type: ignore[attr-defined, unused-ignore]

    @_cuda_overload(floor_f, inline="always")
    def _floor_f_cuda(x: float) -> Any:
        def impl(x: float) -> float:
            return libdevice.floor(x)  # type: ignore[no-any-return, unused-ignore]

        return impl

    @_cuda_overload(drag_lookup, inline="always")
    def _drag_lookup_cuda(row: int, gap_m: float) -> Any:
        def impl(row: int, gap_m: float) -> float:
            return drag_power_law(row, gap_m)

        return impl

except ImportError:  # Numba's built-in CUDA target or its simulator: Python's floor_f serves
    pass


def device_fn(f: Any) -> Any:
    """A model function as a kernel calls it: the compiled function itself on a GPU (numba
    compiles it again for the device); in Numba's CUDA simulator, a wrapper that hands it the
    NumPy arrays under the simulator's array proxies."""
    if not config.ENABLE_CUDASIM:
        return f

    def unwrap(x: Any) -> Any:
        # the simulators' proxies: an in-kernel view (``_item``) of a device array (``_ary``),
        # nested differently in Numba's built-in simulator and in numba-cuda's
        while not isinstance(x, np.ndarray):
            d = getattr(x, "__dict__", None) or {}
            if "_item" in d:
                x = d["_item"]
            elif "_ary" in d:
                x = d["_ary"]
            else:
                return x
        return x

    def call(*args: Any) -> Any:
        return f(*(unwrap(a) for a in args))

    return call


def simulated() -> bool:
    """Whether kernels run in Numba's CUDA simulator."""
    return bool(config.ENABLE_CUDASIM)


def has_gpu() -> bool:
    """Whether a CUDA GPU is there for Numba (the simulator counts as none)."""
    if simulated():
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False
