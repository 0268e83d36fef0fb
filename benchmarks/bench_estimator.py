#!/usr/bin/env python
"""Benchmark: the scikit-learn estimator against its peers, and the exact 1-D optimum.

    python benchmarks/bench_estimator.py               # ~2-3 min on 2 cores
    python benchmarks/bench_estimator.py --repeats 1 --no-dp

Three tables, printed as markdown and written to <results>/estimator.csv
(+ estimator_env.json naming the runs); a table left out (--no-...) keeps its earlier rows:

article   the article's steps on the cat (skimage.data.chelsea, 135 300 pixels): every pixel a
          row, ``KMeans(n_clusters=k).fit(pixels)`` for k = 2, 5, 10, 15, 24 with
          ``napari_kmeans_filter.KMeansQuantizer`` (default speed 4, and speed 10),
          ``sklearn.cluster.KMeans`` (its defaults: k-means++, n_init="auto" = 1 start) and
          ``dask_ml.cluster.KMeans`` (its defaults, k-means||; on a dask array of 4 chunks)
          when dask-ml is importable.  Time of the fit (best of --repeats, after one untimed
          warm-up fit per estimator), inertia, and our time / inertia as ratios to each peer.
          Random seed 0 for every estimator.  Inertia is recomputed from each peer's centres
          by the same code (see _inertia).
dp        the exact 1-D programme (_exact1d.fit): uint8 histograms at every k that is slowest
          (k = 2 ... 255), a 12 MP uint16 image (~60 000 distinct levels) at k = 16, 256,
          4096 (integer centres only: the rows for real centres are past the budget), and
          at k = 65 000 (rows a few hundred ends wide; its table was 21 GB before the
          rows were windowed), integer and real-valued centres; the gap of the integer optimum
          to the real-valued bound; a float32 image of 1 M distinct values at k = 16 (real
          centres only).  CPU time (the programme runs in one thread), not wall time.
grey      the greyscale fit of ``quantize(image, k, channel_axis=None)`` today against the
          exact integer-centre optimum on camera / moon / coins at k = 4, 8, 16: MSE ratio.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from skimage import data

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _runinfo  # noqa: E402

from napari_kmeans_filter import quantize  # noqa: E402
from napari_kmeans_filter._estimator import KMeansQuantizer  # noqa: E402
from napari_kmeans_filter._exact1d import affordable  # noqa: E402
from napari_kmeans_filter._exact1d import fit as exact_fit  # noqa: E402

CSV_NAME = "estimator.csv"
ENV_NAME = "estimator_env.json"
FIELDS = ["run_id", "table", "case", "k", "method", "seconds", "value", "ratio", "note"]
ARTICLE_KS = (2, 5, 10, 15, 24)


def _best_time(repeats, run, *args, clock=time.perf_counter, **kwargs):
    best, out = np.inf, None
    for _ in range(repeats):
        start = clock()
        out = run(*args, **kwargs)
        best = min(best, clock() - start)
    return best, out


def _inertia(pixels, centres):
    """Sum of squared distances to the nearest centre, the same code for every peer.

    (dask-ml 2025.1's own ``inertia_`` reads several times lower than the squared error of
    its own centres on these pixels, so no peer's ``inertia_`` is taken as reported.)
    """
    points = pixels.astype(np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    total = 0.0
    for start in range(0, len(points), 2**15):
        diff = points[start : start + 2**15, None, :] - centres[None, :, :]
        total += float(np.einsum("ijk,ijk->ij", diff, diff).min(axis=1).sum())
    return total


def article(repeats, rows, run_id):
    from sklearn.cluster import KMeans

    try:
        import dask.array as da
        from dask_ml.cluster import KMeans as DaskKMeans
    except ImportError as error:
        DaskKMeans = None
        print(f"dask-ml is not importable ({error}): its column is left out")
    pixels = data.chelsea().reshape(-1, 3)
    peers = {
        "ours": lambda k: KMeansQuantizer(n_clusters=k, random_state=0).fit(pixels),
        "ours speed=10": lambda k: KMeansQuantizer(n_clusters=k, speed=10, random_state=0).fit(
            pixels
        ),
        "sklearn": lambda k: KMeans(n_clusters=k, random_state=0).fit(pixels),
    }
    if DaskKMeans is not None:
        lazy = da.from_array(pixels, chunks=(-(-len(pixels) // 4), 3))
        peers["dask-ml"] = lambda k: DaskKMeans(n_clusters=k, random_state=0).fit(lazy)
    for run in peers.values():
        run(3)  # warm-up: compiled kernels, imports
    print("\n## article: the cat's 135 300 pixels, fit time (s) and inertia\n")
    head = "| k | " + " | ".join(f"{name} s | {name} inertia" for name in peers)
    others = [p for p in peers if not p.startswith("ours")]
    head += " | " + " | ".join(f"time / {p} | inertia / {p}" for p in others) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for k in ARTICLE_KS:
        cells, measured = [], {}
        for name, run in peers.items():
            seconds, model = _best_time(repeats, run, k)
            inertia = _inertia(pixels, model.cluster_centers_)
            measured[name] = (seconds, inertia)
            cells += [f"{seconds:.3f}", f"{inertia:.6g}"]
            rows.append(
                dict(
                    run_id=run_id,
                    table="article",
                    case="chelsea",
                    k=k,
                    method=name,
                    seconds=seconds,
                    value=inertia,
                )
            )
        ours_s, ours_i = measured["ours"]
        for name, (seconds, inertia) in measured.items():
            if name.startswith("ours"):
                continue
            cells += [f"{ours_s / seconds:.2f}", f"{ours_i / inertia:.4f}"]
            rows.append(
                dict(
                    run_id=run_id,
                    table="article",
                    case="chelsea",
                    k=k,
                    method=f"ours/{name}",
                    seconds=ours_s / seconds,
                    ratio=ours_i / inertia,
                )
            )
        print(f"| {k} | " + " | ".join(cells) + " |")


def _uint16_image():
    """12 MP of uint16: the camera upscaled to 3000 x 4000, 16-bit, with sensor-like noise."""
    from skimage.transform import resize

    rng = np.random.default_rng(0)
    camera = resize(data.camera().astype(np.float64), (3000, 4000), order=1)
    image = camera * 257 + rng.normal(0, 900, camera.shape)
    return np.clip(image, 0, 65535).astype(np.uint16)


def dp(repeats, rows, run_id):
    print("\n## dp: exact 1-D k-means (ms of CPU time, best of --repeats)\n")
    print("| data | levels | k | integer centres | real centres | gap integer / real bound |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    values8 = np.arange(256.0)
    counts8 = rng.integers(1, 5000, 256)
    exact_fit(values8, counts8, 3)
    exact_fit(values8, counts8, 3, integer_centres=True)
    cases = [("uint8 (random counts)", values8, counts8, k) for k in (2, 16, 64, 85, 128, 255)]
    image = _uint16_image()
    values16, counts16 = np.unique(image, return_counts=True)
    exact_fit(values16[:1000].astype(float), counts16[:1000], 3, method="dc")
    exact_fit(values16[:1000].astype(float), counts16[:1000], 3, integer_centres=True, method="dc")
    exact_fit(values16[:1000].astype(float), counts16[:1000], 99, integer_centres=True)
    cases += [
        ("uint16 12 MP camera + noise", values16.astype(np.float64), counts16, k)
        for k in (16, 256, 4096, 65_000)
    ]
    floats = np.unique(rng.gamma(2.0, 0.1, 1_100_000).astype(np.float32), return_counts=True)
    values_f = floats[0].astype(np.float64)[:1_000_000]
    exact_fit(values_f[:1000], floats[1][:1000], 3)  # warm-up: the float sums' programme
    cases += [("float32 (distinct values)", values_f, floats[1][:1_000_000], 16)]
    for name, values, counts, k in cases:
        integer = name != "float32 (distinct values)"
        # One thread: its CPU time is its time on an idle machine, and is not
        # stretched by other processes on a shared one (wall time is).
        cpu = time.process_time
        t_real, r_real = np.nan, None
        if affordable(len(values), k):  # real centres at uint16, k = 4096: rows, ~20 s
            t_real, r_real = _best_time(repeats, exact_fit, values, counts, k, clock=cpu)
        t_int, r_int = np.nan, None
        if integer:
            t_int, r_int = _best_time(
                repeats, exact_fit, values, counts, k, clock=cpu, integer_centres=True
            )
        both = r_int is not None and r_real is not None
        gap = r_int.cost / r_real.cost if both and r_real.cost else 1.0
        gap_cell = f"{gap:.6f}" if both else "–"
        int_cell = f"{t_int * 1e3:.1f}" if r_int is not None else "–"
        real_cell = f"{t_real * 1e3:.1f}" if r_real is not None else "–"
        times = f"{int_cell} | {real_cell}"
        print(f"| {name} | {len(values)} | {k} | {times} | {gap_cell} |")
        if r_int is not None:
            rows.append(
                dict(
                    run_id=run_id,
                    table="dp",
                    case=name,
                    k=k,
                    method="integer",
                    seconds=t_int,
                    value=r_int.cost,
                    ratio=gap,
                    note=f"{len(values)} levels",
                )
            )
        if r_real is None:
            continue
        rows.append(
            dict(
                run_id=run_id,
                table="dp",
                case=name,
                k=k,
                method="real",
                seconds=t_real,
                value=r_real.cost,
                note=f"{len(values)} levels",
            )
        )


def grey(rows, run_id):
    print("\n## grey: quantize's greyscale MSE / the exact integer-centre optimum\n")
    print("| image | k | quantize MSE | optimum MSE | ratio |")
    print("|---|---|---|---|---|")
    for name in ("camera", "moon", "coins"):
        image = getattr(data, name)()
        values, counts = np.unique(image, return_counts=True)
        for k in (4, 8, 16):
            ours = quantize(image, k, channel_axis=None, random_state=0).mse
            best = (
                exact_fit(values.astype(np.float64), counts, k, integer_centres=True).cost
                / image.size
            )
            print(f"| {name} | {k} | {ours:.4f} | {best:.4f} | {ours / best:.4f} |")
            rows.append(
                dict(
                    run_id=run_id,
                    table="grey",
                    case=name,
                    k=k,
                    method="quantize/optimum",
                    value=ours,
                    ratio=ours / best,
                    note=f"optimum MSE {best:.6f}",
                )
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-article", action="store_true")
    parser.add_argument("--no-dp", action="store_true")
    parser.add_argument("--no-grey", action="store_true")
    parser.add_argument("--results", type=Path, default=_runinfo.DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    info = _runinfo.run_info(load_peers=False)
    rows = []
    run = {"article": not args.no_article, "dp": not args.no_dp, "grey": not args.no_grey}
    if run["article"]:
        article(args.repeats, rows, info["run_id"])
    if run["dp"]:
        dp(args.repeats, rows, info["run_id"])
    if run["grey"]:
        grey(rows, info["run_id"])
    # The tables left out keep their earlier rows (and the env its earlier runs).
    path = args.results / CSV_NAME
    kept = []
    if path.exists():
        with open(path, newline="") as old:
            kept = [row for row in csv.DictReader(old) if not run.get(row["table"], False)]
    args.results.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, FIELDS)
        writer.writeheader()
        writer.writerows(kept + rows)
    _runinfo.save_env(args.results / ENV_NAME, info, merge=bool(kept))
    print(f"\nrun {info['run_id']}: {args.results / CSV_NAME}")


if __name__ == "__main__":
    main()
