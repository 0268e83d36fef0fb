#!/usr/bin/env python
"""Where does `quantize` spend its time? cProfile (and pyinstrument, if installed) on the
12 MP camera-like mosaic at k=16 by default.

    python benchmarks/profile_quantize.py                  # mosaic12, k=16
    python benchmarks/profile_quantize.py --image mosaic12 --k 64
    python benchmarks/profile_quantize.py --k 256 --speed 10   # when quantize has `speed`

Writes benchmarks/results/profile_<image>_k<k>.txt (cProfile: top functions by cumulative
and by own time) and, with pyinstrument installed, profile_<image>_k<k>_pyinstrument.txt.

    python benchmarks/profile_quantize.py --stages --k 256 --image chelsea astronaut mosaic2

prints instead the CPU seconds of each stage of the fit (median of --repeats calls): the
seeding, the Lloyd runs on the coarse cells, the fine cells and the exact colours (with their
iterations), the swap searches, and the rest of the call.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _images import get_image  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--image", nargs="+", default=["mosaic12"], help="several with --stages")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--speed", type=int, help="passed as quantize(..., speed=SPEED)")
    p.add_argument("--stages", action="store_true", help="CPU seconds per stage of the fit")
    p.add_argument("--repeats", type=int, default=5, help="with --stages: calls per image")
    args = p.parse_args(argv)
    if args.stages:
        return stages(args.image, args.k, args.speed, args.repeats)
    if len(args.image) > 1:
        p.error("one --image at a time, unless --stages")
    args.image = args.image[0]

    from functools import partial

    from napari_kmeans_filter import quantize

    if args.speed is not None:
        quantize = partial(quantize, speed=args.speed)
    tag = "" if args.speed is None else f"_speed{args.speed}"

    img = get_image(args.image)
    quantize(img[:64, :64], 4, random_state=0)  # warm-up
    t0 = time.perf_counter()
    quantize(img, args.k, random_state=0)
    plain = time.perf_counter() - t0

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    res = quantize(img, args.k, random_state=0)
    prof.disable()
    profiled = time.perf_counter() - t0

    out = io.StringIO()
    speed = "" if args.speed is None else f", speed={args.speed}"
    out.write(f"quantize({args.image} {img.shape}, {args.k}, random_state=0{speed})\n")
    out.write(
        f"wall time without profiler {plain:.3f} s, with cProfile {profiled:.3f} s; "
        f"n_iter={getattr(res, 'n_iter', None)}, mse={getattr(res, 'mse', None)}\n\n"
    )
    for key in ("cumulative", "tottime"):
        out.write(f"===== sorted by {key} =====\n")
        stats = pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key)
        stats.print_stats(args.top)
    RESULTS = HERE / "results"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"profile_{args.image}_k{args.k}{tag}.txt"
    path.write_text(out.getvalue())
    print(out.getvalue()[:6000])
    print(f"wrote {path.relative_to(HERE.parent)}")

    try:
        from pyinstrument import Profiler
    except ImportError:
        print("pyinstrument not installed: cProfile only")
        return 0
    profiler = Profiler(interval=0.001)
    profiler.start()
    quantize(img, args.k, random_state=0)
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    path2 = RESULTS / f"profile_{args.image}_k{args.k}{tag}_pyinstrument.txt"
    path2.write_text(text)
    print(text)
    print(f"wrote {path2.relative_to(HERE.parent)}")
    return 0


def stages(images, k, speed, repeats):
    """Print the CPU seconds of each stage of ``quantize(image, k)``, medians of ``repeats``.

    A stage's time is its own: the Lloyd runs of the swap searches count as Lloyd runs.
    """
    import statistics
    from collections import defaultdict

    from napari_kmeans_filter import _fit, quantize

    spent = defaultdict(float)
    counts = defaultdict(int)
    state = {"exact": None, "lloyd_in_swaps": 0.0}

    def timed(name, function):
        def call(*args, **kwargs):
            start = time.process_time()
            before = state["lloyd_in_swaps"]
            try:
                return function(*args, **kwargs)
            finally:
                own = time.process_time() - start
                if name == "swap searches":
                    own -= state["lloyd_in_swaps"] - before
                spent[name] += own

        return call

    lloyd = _fit.lloyd

    def lloyd_by_level(points, *args, **kwargs):
        if points.size == state["exact"]:
            level = "exact colours"
        elif kwargs.get("tol") == 0:
            level = "fine cells"
        else:
            level = "coarse cells"
        start = time.process_time()
        result = lloyd(points, *args, **kwargs)
        seconds = time.process_time() - start
        spent[f"Lloyd on the {level}"] += seconds
        state["lloyd_in_swaps"] += seconds
        counts[f"Lloyd runs on the {level}"] += 1
        counts[f"Lloyd iterations on the {level}"] += result[2]
        return result

    fit_centres = _fit.fit_centres

    def fit_centres_noting(points, *args, **kwargs):
        state["exact"] = points.size
        return fit_centres(points, *args, **kwargs)

    _fit.lloyd = lloyd_by_level
    _fit.fit_centres = fit_centres_noting
    names = {
        "_kmeans_pp": "k-means++ seeding",
        "_swap_search": "swap searches",
        "grid_cells": "grid reduction",
        "assign_rows": "palette assignment of every row",
    }
    for function, name in names.items():
        setattr(_fit, function, timed(name, getattr(_fit, function)))
    options = {} if speed is None else {"speed": speed}
    for name in images:
        img = get_image(name)
        quantize(img[:256, :256], k, random_state=0, **options)  # warm-up
        rows = defaultdict(list)
        for _ in range(repeats):
            spent.clear()
            counts.clear()
            start = time.process_time()
            result = quantize(img, k, random_state=0, **options)
            total = time.process_time() - start
            rows["whole call"].append(total)
            for key, value in spent.items():
                rows[key].append(value)
            rows["rest of the call"].append(total - sum(spent.values()))
        print(
            f"== {name} {img.shape}, k={k}: MSE {result.mse:.4f}, n_iter {result.n_iter}, "
            f"CPU s (median of {repeats})"
        )
        for key, values in sorted(rows.items(), key=lambda item: -statistics.median(item[1])):
            print(f"   {statistics.median(values):8.3f}  {key}")
        for key, value in counts.items():
            print(f"   {value:8d}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
