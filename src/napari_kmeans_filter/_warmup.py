"""Warming numba up: compile (or load from cache) the kernels of a typical call.

Sits above the public API (it runs one :func:`~._quantize.quantize`), so the
compiled-loop machinery in :mod:`._jit` never imports the API.
"""

from __future__ import annotations

import numpy as np

from ._quantize import quantize


def warm_up() -> None:
    """Import numba and compile (or load from cache) the kernels of a typical call.

    Runs one small 8-bit RGB quantisation; safe to call from any thread (the
    napari widget calls it in a background thread when it opens).
    """
    ramp = np.arange(64, dtype=np.uint8)
    red, green = np.meshgrid(ramp, ramp[::-1], indexing="ij")
    image = np.stack([red, green, np.full((64, 64), 7, np.uint8)], -1)
    quantize(image, 4, random_state=0)
