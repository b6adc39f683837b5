"""Compile options shared by the kernels, and several compiled variants of one Python
function (for example one-thread and threaded).

Numba caches a compiled function under its module and qualified name, so two ``njit``
wrappers of the same function with different options would share, and overwrite, one cache
entry. ``compiled_variant`` compiles a copy under another name instead.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from numba import njit


def compiled_variant(f: Callable[..., Any], name: str, **options: Any) -> Any:
    """``njit(cache=True, **options)`` of a copy of ``f`` named ``name`` (in ``f``'s module).

    Returns:
        The Numba dispatcher.
    """
    g = types.FunctionType(f.__code__, f.__globals__, name, f.__defaults__, f.__closure__)
    g.__qualname__ = name
    g.__module__ = f.__module__
    g.__doc__ = f.__doc__
    return njit(cache=True, **options)(g)


#: ``njit`` options for a function that allocates nothing: no reference counts. Numba counts
#: references to arrays with an atomic add and subtract for every array argument of a call
#: and every view it makes; in a step called per block or per instance, or calling helpers
#: per truck, those atomics were up to half the time (docs/benchmarks.md). The functions it
#: calls are compiled the same way, so none of them may allocate either (Numba refuses to
#: compile one that does). ``_nrt`` is Numba's own name for the option.
NO_REFCOUNTS: dict[str, Any] = {"_nrt": False}
