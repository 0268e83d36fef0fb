#!/usr/bin/env python
"""Issue 21 diagnosis: what the default speed's budget buys -- time against libimagequant, error
against the best peer -- when one of its settings changes.

    python benchmarks/sweep_budget.py                                  # k = 256, refine 50/30/20
    python benchmarks/sweep_budget.py --k 64 --variants default refine=100 swaps=4+fine_swaps=2
    python benchmarks/sweep_budget.py --images chelsea mosaic1 --variants default max_cells=16384

Not a benchmark of record (nothing goes to results/): each variant fits with the default
speed's settings changed from outside, in this process only (the package's source is not
touched). A variant is ``default`` (the package as it is) or settings joined by ``+``, each
``name=value`` (a whole number >= 1, swaps >= 0), the names of the columns of
``_fit._SPEEDS``: ``max_cells``, ``start_cells`` (grid cells converged on, and for the starts
and swaps; at least 8 k either way), ``starts`` (k-means++ starts at k <= 16), ``swaps``,
``fine_swaps`` (swap trials on the coarse and fine cells), ``refine`` (Lloyd iterations on
the exact colours); and ``relax=FACTOR`` (a number >= 1), the refinement's over-relaxation
(``_fit._RELAX``; 1 = plain Lloyd).

    python benchmarks/sweep_budget.py --k 16 --variants default relax=1+refine=50 relax=1+refine=100

Per image and variant: the median time of ``quantize(img, k, random_state=0)`` (--repeats, after
one untimed call) over libimagequant's, timed in the same run (no dithering, through
``benchmarks/_methods.py``), and the MSE (uint8) against the best peer's in
``results/quantize.csv``, as ``make_report.py`` finds it (the peers' MSE does not depend on
the machine; the long-search reference ``kmeans-ref`` is not a peer). The summary gives,
per variant, the median time ratio over the five photos (the issue's target: <= 1.25) and
over every image, and the worst MSE against the best peer (the target: <= 0 on every image).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _methods as M  # noqa: E402
from _images import get_image  # noqa: E402

PHOTOS = ("chelsea", "astronaut", "coffee", "china", "flower")
IMAGES = (
    *PHOTOS,
    *("fluo", "nightsky", "hubble", "retina", "ihc", "mosaic0.5", "mosaic1", "mosaic2"),
)
FIELDS = ("max_cells", "start_cells", "starts", "swaps", "fine_swaps", "refine")


def best_peers(k: int) -> dict[str, tuple[str, float]]:
    """``{image: (peer, MSE)}`` at ``k``: the report's own best peer of each cell on record."""
    import make_report

    cells = make_report.mse_cells(make_report.load_quantize())
    return {c["image"]: (c["best_peer"], c["best"]) for c in cells if c["k"] == k}


def relax_of(variant: str, default: float) -> float:
    """The variant's ``relax=FACTOR``, else ``default``."""
    for part in variant.split("+"):
        name, _, value = part.partition("=")
        if name == "relax":
            try:
                factor = float(value)
            except ValueError:
                factor = 0.0
            if not 1 <= factor < float("inf"):
                raise SystemExit(f"relax in {variant!r} must be a number >= 1")
            return factor
    return default


def settings_of(variant: str, default: tuple) -> tuple:
    if variant == "default":
        return default
    values = dict(zip(FIELDS, default, strict=True))
    for part in variant.split("+"):
        name, _, value = part.partition("=")
        if name == "relax":
            continue  # relax_of
        if name not in values:
            raise SystemExit(f"unknown setting {name!r} in {variant!r}; one of {', '.join(FIELDS)}")
        least = 0 if name in ("swaps", "fine_swaps") else 1
        try:
            values[name] = int(value)
        except ValueError:
            values[name] = least - 1
        if values[name] < least:
            raise SystemExit(f"{name} in {variant!r} must be a whole number >= {least}")
    return tuple(values[name] for name in FIELDS)


def timed(fn, repeats: int):
    out = fn()  # untimed: kernels loaded, caches warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", nargs="+", default=list(IMAGES))
    p.add_argument("--k", type=int, default=256)
    p.add_argument(
        "--variants", nargs="+", default=["default", "refine=50", "refine=20", "relax=1+refine=50"]
    )
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.k < 2:
        p.error("--k must be at least 2")

    import napari_kmeans_filter._fit as F
    from napari_kmeans_filter import quantize

    speed = M.default_speed()
    default = F._SPEEDS[speed]
    default_relax = F._RELAX
    variants = {v: settings_of(v, default) for v in args.variants}
    relaxes = {v: relax_of(v, default_relax) for v in args.variants}
    images = {}
    for name in args.images:  # every image first: a name get_image does not know ends here
        try:
            images[name] = get_image(name)
        except (AttributeError, KeyError, ValueError):
            known = ", ".join((*IMAGES, "astronaut-small", "mosaic<MP>"))
            raise SystemExit(f"unknown image {name!r}; one of {known}") from None
    peers = best_peers(args.k)
    print(
        f"k = {args.k}, speed {speed}: {dict(zip(FIELDS, default, strict=True))}, "
        f"relax {default_relax}"
    )
    print(f"{'image':10s} {'best peer':>22s} | " + " | ".join(f"{v:>22s}" for v in variants))
    ratios: dict[str, dict[str, tuple[float, float]]] = {v: {} for v in variants}
    try:
        for name, img in images.items():
            peer = peers.get(name)
            liq, _ = timed(lambda img=img: M.libimagequant(img, args.k), args.repeats)
            cells = []
            for variant, settings in variants.items():
                F._SPEEDS[speed] = settings
                F._RELAX = relaxes[variant]
                seconds, result = timed(
                    lambda img=img: quantize(img, args.k, random_state=0), args.repeats
                )
                diff = np.asarray(result.image, np.float64) - img
                mse = float(np.mean(diff * diff))
                excess = mse / peer[1] - 1 if peer and peer[1] > 0 else float("nan")
                ratios[variant][name] = (seconds / liq, excess)
                cells.append(f"{seconds / liq:5.2f}x {100 * excess:+7.2f} %")
            label = f"{peer[0]} {peer[1]:.3f}" if peer else "none on record"
            row = " | ".join(f"{c:>22s}" for c in cells)
            print(f"{name:10s} {label:>22s} | {row}", flush=True)
    finally:
        F._SPEEDS[speed] = default
        F._RELAX = default_relax
    print("\ntime / libimagequant (median) and MSE against the best peer (worst):")
    for variant, by_image in ratios.items():
        photos = [by_image[n][0] for n in PHOTOS if n in by_image]
        every = [r for r, _ in by_image.values()]
        excess = [e for _, e in by_image.values() if e == e]
        line = f"  {variant:32s}"
        if photos:
            line += f" photos {statistics.median(photos):5.2f}x"
        line += f"  every image {statistics.median(every):5.2f}x"
        if excess:
            line += f"  worst MSE {100 * max(excess):+6.2f} %"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
