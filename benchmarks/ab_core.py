#!/usr/bin/env python
"""Before/after timing of the core: medians of quantize on the hard cases, one JSON line.

Run it alternately for two checkouts in the same session (the peer in the same run), e.g.

    for i in 1 2 3 4; do
        PYTHONPATH=/path/to/old/src python benchmarks/ab_core.py
        python benchmarks/ab_core.py
    done

Each case prints [CPU seconds, wall seconds], medians of 3 (--repeats).  Cases: the 12 MP
noisy camera-like mosaic at k=16 and 256, the astronaut at k=256, and a dask stack in small
(128²) chunks at k=16 with its labels computed; or, with --images, every image at every --k
(default 16 and 256) and no dask stack:

    python benchmarks/ab_core.py --images chelsea astronaut coffee china --repeats 7
"""

from __future__ import annotations

import argparse
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", help="benchmarks/_images.py names")
    parser.add_argument("--k", nargs="+", type=int, default=[16, 256], help="with --images")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quantize(get_image("chelsea")[:64, :64], 4)  # load the kernels first
    quantize(get_image("chelsea")[:64, :64], 4, dither=True)
    out = {"package": str(Path(nkf.__file__).parent)}
    if args.images:
        cases = [(name, k) for name in args.images for k in args.k]
    else:
        cases = [("mosaic12", 16), ("mosaic12", 256), ("astronaut", 256)]
    for name, k in cases:
        image = get_image(name)
        quantize(image, k, random_state=0)  # this image's first call: its kernels, its sizes
        out[f"{name} k={k}"] = _median(
            lambda image=image, k=k: quantize(image, k, random_state=0), args.repeats
        )
    if not args.images:
        stack = da.from_array(np.stack([get_image("astronaut")] * 8), chunks=(1, 128, 128, 3))
        quantize(stack[:1, :128, :128], 4).labels.compute()
        out["dask 8x512^2, 128^2 chunks, k=16 + labels"] = _median(
            lambda: quantize(stack, 16, random_state=0).labels.compute(), args.repeats
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
