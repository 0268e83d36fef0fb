#!/usr/bin/env python
"""Benchmark 6 (issue 21): Floyd-Steinberg dithering against Pillow's, given the same palette.

    python benchmarks/bench_dither.py                     # 3 images x k = 16, 64, 256, ~3 min
    python benchmarks/bench_dither.py --images mosaic12 --k 16 --repeats 3

For each image and k: our palette `fit_palette(img, k, random_state=0)` (fitted once, not
timed), then, round-robin, median of --repeats runs (5; 3 at >= 4 MP):
  ours    `apply_palette(img, palette)` and `apply_palette(img, palette, dither=True)`, and
          the same dithering of the image as a dask array in --dask-chunks blocks (128 x 128;
          0: not run), its labels and image computed (each block dithered on its own)
  pillow  `Image.fromarray(img).quantize(palette=p, dither=NONE)` and `dither=FLOYDSTEINBERG`,
          p a "P" image holding the same palette (Pillow dithers only when given a palette)
The timed call starts from the uint8 array and ends with what the library returns: our
QuantizeResult (labels and image), Pillow's "P" image (the labels). Pillow's search is
approximate (a 5-bit colour cache), ours is exact: the MSE of each repaint is in the CSV.
One untimed call of each first (compiled kernels, thread pools).
Results: <results>/dither.csv (+ dither_env.json).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _runinfo  # noqa: E402
from _images import get_image  # noqa: E402
from _methods import SEED, mse_psnr  # noqa: E402

CSV_NAME = "dither.csv"
ENV_NAME = "dither_env.json"
IMAGES = ("chelsea", "astronaut", "mosaic2")
KS = (16, 64, 256)
FIELDS = [
    "image",
    "megapixels",
    "k",
    "method",
    "step",
    "status",
    "repeats",
    "time_median_s",
    "times_s",
    "mse_uint8",
    "loadavg_1min",
    "note",
    "core_version",
    "run_id",
    "timestamp",
]


def pillow_palette(colors: np.ndarray):
    from PIL import Image

    p = Image.new("P", (1, 1))
    flat = np.zeros((256, 3), np.uint8)
    flat[: len(colors)] = colors
    # Entries past the palette's end repeat its first colour: never nearer than it.
    flat[len(colors) :] = colors[0]
    p.putpalette(flat.ravel().tolist())
    return p


def _dask_dithered(nkf, img, pal, chunks):
    """Labels and image of the dithered dask image, computed together."""
    import dask
    import dask.array as da

    lazy = da.from_array(img, chunks=(chunks, chunks, img.shape[2]))
    result = nkf.apply_palette(lazy, pal, dither=True)
    labels, image = dask.compute(result.labels, result.image)
    return SimpleNamespace(labels=labels, image=image)


def dask_step(chunks: int) -> str:
    return f"dithered paint, dask {chunks}x{chunks} blocks"


def _cases(nkf, Image, img, pil, pal, ppal, chunks):
    cases = {
        ("ours", "paint"): lambda: nkf.apply_palette(img, pal),
        ("ours", "dithered paint"): lambda: nkf.apply_palette(img, pal, dither=True),
        ("pillow", "paint"): lambda: pil.quantize(palette=ppal, dither=Image.Dither.NONE),
        ("pillow", "dithered paint"): lambda: pil.quantize(
            palette=ppal, dither=Image.Dither.FLOYDSTEINBERG
        ),
    }
    if chunks:
        cases[("ours", dask_step(chunks))] = lambda: _dask_dithered(nkf, img, pal, chunks)
    return cases


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", nargs="+", default=list(IMAGES))
    p.add_argument("--k", nargs="+", type=int, default=list(KS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dask-chunks", type=int, default=128, help="0: no dask case")
    p.add_argument("--results", type=Path, default=_runinfo.DEFAULT_RESULTS)
    args = p.parse_args(argv)

    from PIL import Image

    import napari_kmeans_filter as nkf

    info = _runinfo.run_info(load_peers=False)
    run_id, version = info["run_id"], info["core_version"]
    print(f"run {run_id}; core {version}", flush=True)
    rows = []
    t_start = time.perf_counter()
    for name in args.images:
        img = get_image(name)
        mp = img.shape[0] * img.shape[1] / 1e6
        repeats = 3 if mp >= 4 else args.repeats
        pil = Image.fromarray(img)
        for k in args.k:
            pal = nkf.fit_palette(img, k, random_state=SEED)
            colors = np.asarray(pal.colors, np.uint8)
            ppal = pillow_palette(colors)
            cases = _cases(nkf, Image, img, pil, pal, ppal, args.dask_chunks)
            times = {c: [] for c in cases}
            outs = {}
            load = []
            for rep in range(-1, repeats):
                for case, fn in cases.items():
                    load.append(os.getloadavg()[0])
                    t0 = time.perf_counter()
                    out = fn()
                    dt = time.perf_counter() - t0
                    if rep >= 0:
                        times[case].append(dt)
                    outs[case] = out
                    del out
            for (method, step), ts in times.items():
                out = outs[(method, step)]
                if method == "ours":
                    rgb = np.asarray(out.image)
                else:
                    rgb = colors[np.asarray(out)]
                mse, _ = mse_psnr(rgb, img)
                row = dict(
                    image=name,
                    megapixels=f"{mp:.3f}",
                    k=k,
                    method=method,
                    step=step,
                    status="ok",
                    repeats=len(ts),
                    time_median_s=f"{statistics.median(ts):.5f}",
                    times_s=" ".join(f"{t:.5f}" for t in ts),
                    mse_uint8=f"{mse:.4f}",
                    loadavg_1min=f"{statistics.median(load):.2f}",
                    note=f"{len(colors)} colours",
                    core_version=version if method == "ours" else "",
                    run_id=run_id,
                    timestamp=_runinfo.utc_stamp(),
                )
                rows.append(row)
                print(
                    f"  {name:10s} k={k:<4d} {method:7s} {step:15s} "
                    f"{statistics.median(ts):8.4f} s  MSE {mse:8.3f}  load {row['loadavg_1min']}",
                    flush=True,
                )
            outs.clear()
    csv_path, env_path = args.results / CSV_NAME, args.results / ENV_NAME
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    info.update(elapsed_s=round(time.perf_counter() - t_start, 1), script="bench_dither.py")
    _runinfo.save_env(env_path, info, merge=False)
    print(f"wrote {csv_path}")
    import make_report

    print(make_report.format_summary(make_report.targets_summary(args.results, only="dither")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
