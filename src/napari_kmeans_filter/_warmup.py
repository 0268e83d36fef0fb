"""Warming numba up: compile (or load from cache) the kernels of a typical call.

Sits above the public API (it runs one :func:`~._quantize.quantize`), so the
compiled-loop machinery in :mod:`._jit` never imports the API.

Run as ``python -m napari_kmeans_filter._warmup`` it is the second process of
a first-ever run (:mod:`._jit` starts it): it compiles the fit's kernels,
:data:`fit_plan`'s, from the last backwards while the first process goes
forwards.
"""

from __future__ import annotations

import numpy as np


def warm_up() -> None:
    """Import numba and compile (or load from cache) the kernels of a typical call.

    Runs one small 8-bit RGB quantisation; safe to call from any thread (the
    napari widget calls it in a background thread when it opens).
    """
    from ._quantize import quantize

    ramp = np.arange(64, dtype=np.uint8)
    red, green = np.meshgrid(ramp, ramp[::-1], indexing="ij")
    image = np.stack([red, green, np.full((64, 64), 7, np.uint8)], -1)
    quantize(image, 4, random_state=0)


def fit_plan():
    """The fit's kernels, ``(kernel, example arguments)``, in the order a fit first calls
    them (after the histogram's kernel). The fit works in float64 whatever the image, so
    the argument types (``numba.typeof`` of the examples) are those of every colour fit;
    ``tests/test_startup.py`` checks that a call then compiles none of them again."""
    from . import _fit, _nearest

    f1, f2 = np.zeros(1), np.zeros((1, 1))
    i1, i2, labels = np.zeros(1, np.int64), np.zeros((1, 1), np.int64), np.zeros(1, np.int32)
    return [
        (_fit._widen_bounds, (f2, f1, f1)),
        (_fit._grid_mark, (f2, f1, f1, 1, f2, 1.0, np.zeros(1, np.uint8))),
        (_fit._grid_sums, (f2, f1, f1, f1, 1, f2, 1.0, i1, f2, f1, labels)),
        (_fit._seed, (f2, f1, f2, 1, f1, 1, labels, f1, i1, f1)),
        (_nearest._assign, (f2, f1, f2, i2, f2, f1, labels, f2, labels, 1.0, f2, f1, f1)),
        (_nearest._cluster_radius, (labels, f1, f1)),
        (_nearest._resort_neighbours, (f2, i2, f2, f2)),
        (_nearest._local_drift, (i2, f2, f1, f1, f1, f2)),
        (_nearest._reassign, (f2, f1, f2, i2, f2, f1, labels, f1, f2, labels, f2, 1.0, f2, f1, f1)),
        (_fit._label_stats, (f2, np.zeros(1, np.uint32), labels, f2, f2, f1, f1)),
    ]


if __name__ == "__main__":
    import os
    import shutil
    import signal

    # Ctrl-C at a terminal reaches every process of the command's group: this one is stopped
    # by the process that started it (SIGTERM, which removes the claims directory), never
    # half-way through its imports.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import _jit

    try:
        if hasattr(os, "nice"):
            os.nice(10)  # the spare core's work: never ahead of the process it helps
        _jit.lean_start()
        _jit.compile_claimed(fit_plan())
    finally:
        shutil.rmtree(os.environ[_jit._CLAIMS_ENV], ignore_errors=True)
