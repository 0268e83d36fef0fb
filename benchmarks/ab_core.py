#!/usr/bin/env python
"""Before/after timing of the core: medians of quantize on the hard cases, one JSON line.

Run it alternately for two checkouts in the same session (the peer in the same run), e.g.

    for i in 1 2 3 4; do
        PYTHONPATH=/path/to/old/src python benchmarks/ab_core.py
        python benchmarks/ab_core.py
    done

Each case prints [CPU seconds, wall seconds], medians of 3.  Cases: the 12 MP noisy
camera-like mosaic at k=16 and 256, the astronaut at k=256, and a dask stack in small (128²)
chunks at k=16 with its labels computed.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dask.array as da
import numpy as np
from _images import get_image

import napari_kmeans_filter as nkf
from napari_kmeans_filter import quantize


def _median(call, repeats: int = 3) -> list[float]:
    """Median seconds of ``call``: [process CPU time, wall time].  The CPU time (all
    threads) moves far less than the wall time when other work shares the cores."""
    cpu, wall = [], []
    for _ in range(repeats):
        start_cpu, start = time.process_time(), time.perf_counter()
        call()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return [round(statistics.median(cpu), 3), round(statistics.median(wall), 3)]


def main() -> None:
    quantize(get_image("chelsea")[:64, :64], 4)  # load the kernels first
    quantize(get_image("chelsea")[:64, :64], 4, dither=True)
    stack = da.from_array(np.stack([get_image("astronaut")] * 8), chunks=(1, 128, 128, 3))
    quantize(stack[:1, :128, :128], 4).labels.compute()
    out = {"package": str(Path(nkf.__file__).parent)}
    for name, k in [("mosaic12", 16), ("mosaic12", 256), ("astronaut", 256)]:
        image = get_image(name)
        out[f"{name} k={k}"] = _median(lambda image=image, k=k: quantize(image, k, random_state=0))
    out["dask 8x512^2, 128^2 chunks, k=16 + labels"] = _median(
        lambda: quantize(stack, 16, random_state=0).labels.compute()
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
