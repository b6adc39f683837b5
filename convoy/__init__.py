"""convoy: an open vehicle-road-cloud platform for hybrid-intelligence heavy-truck platoons.

Layers (imports point one way, each uses only those above it):
``vehicle`` -> ``road`` -> ``sim`` -> ``cloud`` -> ``service`` -> ``cli``.
"""

import os
from typing import Any

__version__ = "0.1.0"

#: Set to "256" to keep LLVM's own choice of vector width on CPUs with AVX-512.
VECTOR_BITS_ENV = "CONVOY_VECTOR_BITS"


def _prefer_512_bit_vectors() -> None:
    """Let Numba's LLVM use 512-bit vectors where the CPU has AVX-512.

    LLVM tunes Intel's AVX-512 server CPUs to prefer 256-bit vectors (the ``prefer-256-bit``
    feature, for code that is mostly scalar); the engine's step loops are wide, and 512-bit
    vectors make the fast CACC step about 10 % faster (docs/benchmarks.md). This has to run
    before the first ``njit`` of the process, which fixes Numba's target machine, so it runs
    when ``convoy`` is imported; an explicit ``NUMBA_CPU_FEATURES`` or
    ``CONVOY_VECTOR_BITS=256`` leaves Numba as it is. Results do not depend on it: Numba
    does not reorder floating-point operations, whatever the vector width.
    """
    if os.environ.get("NUMBA_CPU_FEATURES") or os.environ.get(VECTOR_BITS_ENV) == "256":
        return
    import llvmlite.binding as llvm
    import numba

    config: Any = numba.config
    if config.CPU_FEATURES is not None:
        return
    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot tell on this platform: leave Numba's default
        return
    if "+avx512f" in features.split(","):
        config.CPU_FEATURES = features + ",-prefer-256-bit"


_prefer_512_bit_vectors()
