"""Warming numba up: compile (or load from cache) the kernels of a typical call.

Sits above the public API (it runs one :func:`~._quantize.quantize`), so the
compiled-loop machinery in :mod:`._jit` never imports the API.

Run as ``python -m napari_kmeans_filter._warmup`` it is the second process of
a first-ever run (:mod:`._jit` starts it): it compiles the fit's kernels,
:func:`._fit.fit_plan`'s, from the last backwards while the first process goes
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


if __name__ == "__main__":
    import os
    import shutil
    import signal

    # Ctrl-C at a terminal reaches every process of the command's group: this one is stopped
    # by the process that started it (SIGTERM, which removes the claims directory), never
    # half-way through its imports.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import _fit, _jit

    try:
        if hasattr(os, "nice"):
            os.nice(10)  # the spare core's work: never ahead of the process it helps
        _jit.lean_start()
        _jit.compile_claimed(_fit.fit_plan())
    finally:
        shutil.rmtree(os.environ[_jit._CLAIMS_ENV], ignore_errors=True)
