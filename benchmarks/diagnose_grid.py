#!/usr/bin/env python
"""Issue 21 diagnosis: why the default fit loses on images with a dark, mostly empty background.

    python benchmarks/diagnose_grid.py                       # hubble and nightsky, k = 256, 64
    python benchmarks/diagnose_grid.py --images hubble chelsea --k 256 --variants default adaptive

Not a benchmark of record (nothing goes to results/): it fits the same image with the engine's
settings changed from outside, in this process only (the package's source is not touched):

  default          quantize(img, k, random_state=0)
  no-grid          no grid reduction (every distinct colour in the starts, swaps and Lloyd)
  coarse=fine      the starts and swaps on the fine grid (2**15 cells) instead of the coarse one
  grid-2^17/2^15   speed=1's grid sizes with the default's search
  swaps-x4         4x the swap trials
  refine-300       300 refinement iterations on the exact colours
  n_init=3, n_init=8   more k-means++ starts
  adaptive         a density-adaptive grid: each channel's bins follow 0.5 x uniform + 0.5 x the
                   weighted CDF of that channel, so a dense range (a dark background) gets finer
                   cells; the cells' centroids stay weighted means (the numpy prototype of
                   _fit.grid_cells' adaptive bins, which the package now uses whenever the
                   heaviest 2 % of the cells hold more than 80 % of the pixels)

For each: MSE (uint8), CPU seconds (time.process_time, min of 2), how many palette colours lie
in the background (mean of the channels < 20 DN) and the share of the error there; and, per
image, how the coarse grid (2**14 cells) concentrates the pixels: the share of pixels in its
top 2 % of cells and the variance lost inside cells.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _methods as M  # noqa: E402
from _images import get_image  # noqa: E402

DARK = 20.0
MIX = 0.5


def grid_concentration(F, img, max_cells=2**14):
    colors, counts, _ = M.histogram(img)
    if len(colors) <= max_cells:
        return {"n_colors": len(colors), "coarse_grid": False}
    cells, cell_of = F.grid_cells(F._Array(colors, counts), max_cells)
    lost = ((colors - cells.points[cell_of]) ** 2).sum(1) * counts
    w = np.sort(cells.weights)[::-1]
    top = int(np.ceil(0.02 * cells.size))
    dark = colors.mean(1) < DARK
    return {
        "n_colors": len(colors),
        "n_cells": int(cells.size),
        "px_in_top2pct_cells": round(float(w[:top].sum() / w.sum()), 3),
        "background_px": round(float(counts[dark].sum() / counts.sum()), 3),
        "background_cells": int(np.unique(cell_of[dark]).size),
        "lost_mse_background": round(float(lost[dark].sum() / counts.sum() / 3), 3),
        "lost_mse_rest": round(float(lost[~dark].sum() / counts.sum() / 3), 3),
    }


def adaptive_grid_cells(F):
    def warp(points):
        xs, ws = [], []
        for _, _, block, weights in points:
            xs.append(block)
            ws.append(weights)
        x, w = np.concatenate(xs), np.concatenate(ws)
        u = np.empty_like(x)
        for c in range(x.shape[1]):
            order = np.argsort(x[:, c], kind="stable")
            cw = np.cumsum(w[order])
            cw /= cw[-1]
            uniq, first = np.unique(x[order, c], return_index=True)
            hi = cw[np.r_[first[1:], len(order)] - 1]
            mid = 0.5 * (np.r_[0.0, hi[:-1]] + hi)
            span = max(uniq[-1] - uniq[0], 1e-12)
            u[:, c] = np.interp(x[:, c], uniq, (1 - MIX) * (uniq - uniq[0]) / span + MIX * mid)
        return x, w, np.clip(u, 0, 1 - 1e-12)

    def grid_cells(points, max_cells):
        x, w, u = warp(points)
        d = x.shape[1]
        finest = max(2, round(2 ** (F._MAX_GRID_BITS_TOTAL / d)))
        bins = max(2, min(finest, int(max_cells ** (1 / d))))
        best = None
        while True:
            b = (u * bins).astype(np.int64)
            code = b[:, 0]
            for c in range(1, d):
                code = code * bins + b[:, c]
            uniq, inv = np.unique(code, return_inverse=True)
            if len(uniq) > max_cells and best is not None:
                break
            best = inv
            if bins >= finest or len(uniq) > max_cells:
                break
            bins = min(finest, max(bins + 1, round(bins * 2 ** (1 / 3))))
        inv = best.astype(np.int32).ravel()
        n = int(inv.max()) + 1
        totals = np.bincount(inv, weights=w, minlength=n)
        sums = np.stack([np.bincount(inv, weights=w * x[:, c], minlength=n) for c in range(d)], 1)
        return F._Array(sums / totals[:, None], totals), inv

    return grid_cells


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", nargs="+", default=["hubble", "nightsky"])
    p.add_argument("--k", nargs="+", type=int, default=[256, 64])
    p.add_argument("--variants", nargs="+")
    args = p.parse_args(argv)

    import napari_kmeans_filter._fit as F
    from napari_kmeans_filter import quantize

    base = F._SPEEDS[F.DEFAULT_SPEED]
    mx, st, starts, sw, fsw, ref = base
    speeds = {
        "default": None,
        "no-grid": (2**22, 2**22, starts, sw, fsw, ref),
        "coarse=fine": (mx, mx, starts, sw, fsw, ref),
        "grid-2^17/2^15": (2**17, 2**15, starts, sw, fsw, ref),
        "swaps-x4": (mx, st, starts, 4 * sw, 4 * fsw, ref),
        "refine-300": (mx, st, starts, sw, fsw, 300),
        "n_init=3": None,
        "n_init=8": None,
        "adaptive": None,
    }
    variants = args.variants or list(speeds)
    original_grid = F.grid_cells
    quantize(get_image("chelsea")[:128, :128], 16, random_state=0)  # load the kernels
    for name in args.images:
        img = get_image(name)
        print(json.dumps({"image": name, "grid": grid_concentration(F, img)}), flush=True)
        background = img.mean(-1) < DARK
        for k in args.k:
            row = {"image": name, "k": k}
            for v in variants:
                kw = {"n_init": int(v.split("=")[1])} if v.startswith("n_init") else {}
                F._SPEEDS[F.DEFAULT_SPEED] = speeds[v] or base
                if v == "adaptive":
                    F.grid_cells = adaptive_grid_cells(F)
                try:
                    times = []
                    for _ in range(2):
                        t0 = time.process_time()
                        res = quantize(img, k, random_state=0, **kw)
                        times.append(time.process_time() - t0)
                finally:
                    F._SPEEDS[F.DEFAULT_SPEED] = base
                    F.grid_cells = original_grid
                out = np.asarray(res.image)
                err = ((out.astype(np.float64) - img) ** 2).sum(-1)
                pal = np.asarray(res.palette.colors, np.float64)
                row[v] = {
                    "mse": round(M.mse_psnr(out, img)[0], 4),
                    "cpu_s": round(min(times), 3),
                    "background_colours": int((pal.mean(1) < DARK).sum()),
                    "background_error": round(float(err[background].sum() / err.sum()), 3),
                }
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
