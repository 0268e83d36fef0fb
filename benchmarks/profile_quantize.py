#!/usr/bin/env python
"""Where does `quantize` spend its time? cProfile (and pyinstrument, if installed) on the
12 MP camera-like mosaic at k=16 by default.

    python benchmarks/profile_quantize.py                  # mosaic12, k=16
    python benchmarks/profile_quantize.py --image mosaic12 --k 64
    python benchmarks/profile_quantize.py --k 256 --speed 10   # when quantize has `speed`

Writes benchmarks/results/profile_<image>_k<k>.txt (cProfile: top functions by cumulative
and by own time) and, with pyinstrument installed, profile_<image>_k<k>_pyinstrument.txt.
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
    p.add_argument("--image", default="mosaic12")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--speed", type=int, help="passed as quantize(..., speed=SPEED)")
    args = p.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
