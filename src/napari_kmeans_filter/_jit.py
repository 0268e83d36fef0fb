"""Compiled loops: numba, imported and compiled on first use.

The hot loops of the project (counting colours, Lloyd iterations, painting,
error diffusion) are written as plain Python functions over numpy arrays and
compiled by numba in nopython mode.  Importing numba costs ~0.45 s, so
``import napari_kmeans_filter`` does not: each kernel is compiled (or loaded
from numba's on-disk cache) the first time it is called, and
:func:`warm_up` does all of it ahead of time (the napari widget calls it in a
background thread when it opens).

Kernels release the GIL (``nogil``), so dask's threaded scheduler runs them on
every core.  They are self-contained: a kernel cannot call another lazily
compiled kernel, so small helpers are written inline.
"""

from __future__ import annotations

import functools
import threading

_lock = threading.Lock()
_KERNELS = []


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

                    compiled = numba.njit(cache=True, nogil=True, error_model="numpy")(func)
        return compiled(*args)

    call.py_func = func
    _KERNELS.append(call)
    return call


def warm_up() -> None:
    """Import numba and compile (or load from cache) the kernels of a typical call.

    Runs one small 8-bit RGB quantisation; safe to call from any thread.
    """
    import numpy as np

    from ._quantize import quantize

    ramp = np.arange(64, dtype=np.uint8)
    image = np.stack(np.meshgrid(ramp, ramp[::-1], indexing="ij") + [np.full((64, 64), 7, np.uint8)], -1)
    quantize(image, 4, random_state=0)
