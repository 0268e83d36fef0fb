"""Compiled loops: numba, imported and compiled on first use.

The hot loops of the project (counting colours, Lloyd iterations, painting,
error diffusion) are written as plain Python functions over numpy arrays and
compiled by numba in nopython mode.  Importing numba costs ~0.45 s, so
``import napari_kmeans_filter`` does not: each kernel is compiled (or loaded
from numba's on-disk cache) the first time it is called, and
:func:`._warmup.warm_up` does all of it ahead of time (the napari widget calls
it in a background thread when it opens).  This module imports nothing of the
package, so every core module may use it.

Kernels release the GIL (``nogil``), so dask's threaded scheduler runs them on
every core.  A loop that several kernels share is a :func:`helper`: plain
Python until the first kernel compiles, then compiled too and inlined into
the kernels.
"""

from __future__ import annotations

import functools
import threading

_lock = threading.Lock()
_KERNELS = []
_HELPERS = []
_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def helper(func):
    """Mark ``func`` as called from kernels: compiled with them, in its module.

    Kernels resolve the names they call when they compile, so before the
    first kernel compiles every helper's module-level name is rebound to its
    compiled version.  Helpers must be defined in the module of the kernels
    that call them (numba's cache checks that file's contents only).
    """
    _HELPERS.append(func)
    return func


def _compile_helpers(numba) -> None:
    for func in _HELPERS:
        if func.__globals__.get(func.__name__) is func:
            # Inlined at numba's IR level: a helper in a hot loop costs no call.
            func.__globals__[func.__name__] = numba.njit(inline="always", **_OPTIONS)(func)


def kernel(func):
    """Compile ``func`` with ``numba.njit(cache=True, nogil=True)`` when first called."""
    compiled = None

    @functools.wraps(func)
    def call(*args):
        nonlocal compiled
        if compiled is None:
            with _lock:
                if compiled is None:
                    import numba

                    _compile_helpers(numba)
                    compiled = numba.njit(**_OPTIONS)(func)
        return compiled(*args)

    call.py_func = func
    _KERNELS.append(call)
    return call
