#!/usr/bin/env python
"""Benchmark 1: napari-kmeans-filter `quantize` against its peers, over k and image size.

The grid (issue 8): k in {2, 16, 64, 256, 1024} (and 4096 for ours) x images of 0.1-24 MP
(the four real sample images and the camera-like `mosaic<MP>` at 0.5, 1, 2, 12 and 24 MP) x
ours at speed 1, the default speed and speed 10, with the peers measured in the same run:
libimagequant (the `imagequant` package), Pillow MEDIANCUT / FASTOCTREE, scikit-learn KMeans on
every pixel and OpenCV's kmeans. On the small real images a long search (KMeans with 100
restarts on the colour histogram) gives the reference that speed=1 is compared with.

Per image / method / k: wall time (median of round-robin repeats), MSE and PSNR of the uint8
image the method returns vs the original, and, for a few cells, peak extra memory (in a fresh
subprocess: Linux VmHWM reset through /proc/self/clear_refs right before the call, so exact).

Rows that cannot run say why: "n/a" (a palette quantiser cannot make more than 256 colours),
"unsupported" (the installed quantize has no `speed=`), "skipped" (the budget rules below),
"unavailable" (a peer is not installed), "error" (it raised).

Budget rules, so that a full run stays bounded: cells run from the smallest image and k up;
before each run the time is predicted from the same method's smaller cells in this run
(linear in megapixels, k**beta with beta from the method's cost model or what this run
observed); a cell predicted above --budget-seconds (--ours-budget-seconds for ours) is
skipped, and so is everything once --max-minutes have passed. A first run above
--slow-seconds (2x that for ours) is not repeated. Ours warms up (untimed) once per k, so
JIT-compiled kernels specialised by k are not timed.

Writes <results>/quantize.csv (+ quantize_env.json), then regenerates the report
(docs/benchmarks.md for the default results directory) and prints the PASS/FAIL lines.

Examples
--------
    # the whole grid (unset OPENBLAS_* so BLAS uses its native kernel; see README.md)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_quantize.py
    # a few minutes: the target cells only
    python benchmarks/bench_quantize.py --quick
    # a selection (merged into the existing CSV)
    python benchmarks/bench_quantize.py --images mosaic12 --k 16 64 --methods ours pillow-mediancut
    # a smoke test that leaves results/ and docs/ alone
    python benchmarks/bench_quantize.py --images chelsea --k 16 --results /tmp/bench
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _runinfo  # noqa: E402
from _images import (  # noqa: E402
    DARK_IMAGES,
    DATA_DIR,
    REAL_IMAGES,
    get_image,
    megapixels,
    n_distinct_colors,
)
from _methods import (  # noqa: E402
    DEFAULT_METHODS,
    K_EXPONENT,
    MAX_K,
    METHODS,
    OURS,
    OURS_SPEEDS,
    REF_N_INIT,
    SLOW_PEERS,
    available,
    default_speed,
    kmeans_reference,
    mse_psnr,
)

CSV_NAME = "quantize.csv"
ENV_NAME = "quantize_env.json"

# The photos, the images with a dark, mostly empty background or a few large flat regions
# (issue 21: where the fit lost to scikit-learn), and the camera-like mosaics.
GRID_IMAGES = [
    *REAL_IMAGES,
    *DARK_IMAGES,
    "mosaic0.5",
    "mosaic1",
    "mosaic2",
    "mosaic12",
    "mosaic24",
]
GRID_K = [2, 16, 64, 256, 1024]
OURS_ONLY_K = [4096]  # "k up to 4096 must work": ours only (no peer gets there in budget)
# Cells the targets of issue 8 are stated on: always part of the default grid.
TARGET_CELLS = {"mosaic1": [16], "mosaic12": [16, 64]}
# --quick: the target cells and one small photo at k=256
QUICK_PLAN = {
    "chelsea": [16, 256],
    "astronaut": [256],
    "mosaic1": [16],
    "mosaic12": [16, 64],
}
REF_K = [16, 64]  # the long-search reference is costly: k=16 and 64 on the real images
MEM_K = [16]
MEM_IMAGES = ["mosaic12", "mosaic24"]
REF_CACHE = DATA_DIR / "ref"

FIELDS = [
    "image",
    "height",
    "width",
    "megapixels",
    "input_bytes",
    "n_distinct_colors",
    "method",
    "speed",
    "k",
    "status",
    "note",
    "repeats",
    "time_median_s",
    "times_s",
    "predicted_s",
    "params",
    "mse_uint8",
    "psnr_uint8",
    "float_mse",
    "reported_mse",
    "n_colors_out",
    "n_iter",
    "peak_extra_mb",
    "baseline_rss_mb",
    "peak_method",
    "quick",
    "loadavg_1min",
    "core_version",
    "run_id",
    "timestamp",
]


# --------------------------------------------------------------------------- memory
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Sampler(threading.Thread):
    """Fallback when VmHWM cannot be reset: sample RSS every 2 ms with psutil."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.stop.wait(0.002)


def mem_child(method: str, image: str, k: int) -> None:
    """Run one method once in this (fresh) process and print its peak extra RSS as JSON."""
    version = _runinfo.core_version()
    img = get_image(image)
    fn = METHODS[method]
    warm_up(method, img, k, set())  # imports, JIT, thread pools
    gc.collect()
    baseline = _status_mb("VmRSS")
    if _reset_peak():
        how = "VmHWM reset (exact peak RSS) - RSS before"
        fn(img, k)
        peak = _status_mb("VmHWM")
    else:
        how = "psutil RSS sampled every 2 ms - RSS before"
        sampler = _Sampler()
        sampler.start()
        fn(img, k)
        sampler.stop.set()
        sampler.join()
        peak = sampler.peak / 2**20
    print(
        json.dumps(
            {
                "peak_extra_mb": peak - baseline,
                "baseline_rss_mb": baseline,
                "how": how,
                "core_version": version,
            }
        )
    )


def measure_memory(method: str, image: str, k: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mem-child", method, image, str(k)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- warm-up
def warm_up(method: str, img: np.ndarray, k: int, warmed: set) -> None:
    """One untimed call before a method's first timed one: imports, thread pools, and for ours
    the JIT-compiled kernels, which can be specialised by k (e.g. uint8 / uint16 labels), so
    ours warms up once per k, on a 256 x 256 crop of the image at hand; peers once, on 64 x 64."""
    key = (method, k) if method in OURS else method
    if key in warmed:
        return
    if method in OURS:
        crop, kk = np.ascontiguousarray(img[:256, :256]), k
    else:
        crop, kk = np.ascontiguousarray(img[:64, :64]), min(k, 4)
    try:
        METHODS[method](crop, kk)
    except Exception:
        pass  # the timed call reports the error
    warmed.add(key)


# --------------------------------------------------------------------------- measures
def float_mse(img, res):
    if res.get("float_mse") is not None:
        return res["float_mse"]
    centers, labels = res.get("centers"), res.get("labels")
    if centers is None or labels is None:
        return None
    px = img.reshape(-1, img.shape[-1])
    err = 0.0
    step = 1 << 20
    centers = np.asarray(centers, dtype=np.float64)
    for s in range(0, px.shape[0], step):
        d = centers[labels[s : s + step]] - px[s : s + step]
        err += float(np.einsum("ij,ij->", d, d))
    return err / px.size


def quality_fields(img, res) -> dict:
    out = res["image"]
    assert out.shape == img.shape and out.dtype == np.uint8, (out.shape, out.dtype)
    mse, psnr = mse_psnr(img, out)
    fm = float_mse(img, res)
    return {
        "mse_uint8": f"{mse:.4f}",
        "psnr_uint8": f"{psnr:.4f}",
        "float_mse": "" if fm is None else f"{fm:.4f}",
        "reported_mse": "" if res.get("reported_mse") is None else f"{res['reported_mse']:.4f}",
        "n_colors_out": n_distinct_colors(out),
        "n_iter": "" if res.get("n_iter") is None else res["n_iter"],
    }


# --------------------------------------------------------------------------- budget
def k_exponent(method: str, history: list) -> float:
    """How this method's time grows with k: its cost model, or more if this run saw more
    (from two cells on the same image whose smaller one took long enough to trust)."""
    beta = K_EXPONENT.get(method, 0.0)
    for image1, _, k1, t1 in history:
        for image2, _, k2, t2 in history:
            if image1 == image2 and k2 > k1 and t1 > 0.2 and t2 > 0:
                beta = max(beta, math.log(t2 / t1) / math.log(k2 / k1))
    return min(beta, 1.5)


def predict(method: str, mp: float, k: int, history: list) -> float | None:
    """Predicted seconds of one run, extrapolated from this run's nearest smaller cell of the
    same method (least log-distance in megapixels and k; the larger prediction on ties): time
    linear in megapixels (pessimistic for ours, whose histogram grows slower than the image)
    and growing as k**beta."""
    beta = k_exponent(method, history)
    best = None
    for _, mp0, k0, t0 in history:
        if mp0 > mp * 1.001 or k0 > k:
            continue
        dist = round(math.log(mp / mp0) + math.log(k / k0), 6)
        pred = t0 * (mp / mp0) * (k / k0) ** beta
        if best is None or (dist, -pred) < (best[0], -best[1]):
            best = (dist, pred)
    return None if best is None else best[1]


# --------------------------------------------------------------------------- reference
def _sklearn_version():
    import sklearn

    return sklearn.__version__


def run_reference(image: str, img: np.ndarray, k: int, n_init: int, threads=None) -> dict:
    """The long-search reference for one image and k, cached in _data/ref/ (deterministic for
    a given scikit-learn version)."""
    REF_CACHE.mkdir(parents=True, exist_ok=True)
    path = REF_CACHE / f"{image}_k{k}_n{n_init}_r2_sklearn{_sklearn_version()}.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            cached["note"] = (
                f"cached: computed {cached['date']} in {cached['time_s']:.1f} s "
                f"(scikit-learn {_sklearn_version()})"
            )
            return cached
        except (OSError, ValueError, KeyError):
            pass
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    with threadpool_limits(threads):
        res = kmeans_reference(img, k, n_init=n_init)
    elapsed = time.perf_counter() - t0
    fields = quality_fields(img, res)
    out = {
        **fields,
        "time_s": elapsed,
        "date": _runinfo.utc_stamp(),
        "n_distinct": res["n_distinct"],
        "note": f"computed in this run ({n_init} restarts)",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k2: v for k2, v in out.items() if k2 != "note"}, indent=1))
    tmp.replace(path)
    return out


# --------------------------------------------------------------------------- csv
def load_rows(path):
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def save_rows(rows, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    order = {m: i for i, m in enumerate([*METHODS, "kmeans-ref"])}
    rows = sorted(rows, key=lambda r: (r["image"], int(r["k"]), order.get(r["method"], 99)))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


# --------------------------------------------------------------------------- plan
def plan(args) -> list[tuple[str, int, list[str]]]:
    """(image, k, methods) cells in the order they run."""
    methods = args.methods or list(DEFAULT_METHODS)
    per_image: dict[str, set[int]] = {}
    if args.quick and not (args.images or args.k):
        for image, ks in QUICK_PLAN.items():
            per_image[image] = set(ks)
    else:
        images = args.images or GRID_IMAGES
        ks = args.k or GRID_K
        for image in images:
            per_image[image] = set(ks)
            if not args.k:
                per_image[image] |= set(TARGET_CELLS.get(image, []))
                if not args.quick:
                    per_image[image] |= set(OURS_ONLY_K)
    # the reference costs minutes the first time: not in --quick
    no_ref = args.no_reference or (args.quick and not (args.images or args.k))
    ref_images = set(args.ref_images) if not no_ref else set()
    cells = []
    # k <= 256 on every image first, then the large k: the target cells come early, and a
    # cell's time is predicted from the smaller ones run before it.
    order = sorted(
        ((image, k) for image, ks in per_image.items() for k in ks),
        key=lambda ik: (ik[1] > 256, megapixels(ik[0]), ik[1]),
    )
    for image, k in order:
        ms = list(methods)
        if k in OURS_ONLY_K and not args.k:
            ms = [m for m in ms if m in OURS]
        if image in ref_images and k in args.ref_k:
            ms.append("kmeans-ref")
        if ms:
            cells.append((image, k, ms))
    return cells


def speed_label(method: str, dflt) -> str:
    if method not in OURS_SPEEDS:
        return ""
    s = OURS_SPEEDS[method]
    if s is not None:
        return str(s)
    return f"default ({dflt})" if dflt is not None else "default (no speed parameter)"


# --------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"the target cells only ({QUICK_PLAN}); no memory runs; slow peers skipped >= 2 MP",
    )
    p.add_argument("--images", nargs="+", help=f"default {GRID_IMAGES}; mosaic<MP> for any size")
    p.add_argument(
        "--k", nargs="+", type=int, help=f"default {GRID_K} (+{OURS_ONLY_K} for ours only)"
    )
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help=f"default {DEFAULT_METHODS}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--slow-seconds",
        type=float,
        default=5.0,
        help="a first run slower than this is the only one (2x this for ours)",
    )
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=60.0,
        help="skip a peer's cell whose predicted time is above this",
    )
    p.add_argument(
        "--ours-budget-seconds",
        type=float,
        default=120.0,
        help="the same for ours (it is what is measured: a larger budget)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=32.0,
        help="skip every cell that starts after this many minutes (default 32: the large-k "
        "and largest cells run last)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--mem-k", nargs="+", type=int, default=MEM_K, help=f"default {MEM_K}")
    p.add_argument("--mem-images", nargs="+", default=MEM_IMAGES, help=f"default {MEM_IMAGES}")
    p.add_argument("--no-reference", action="store_true", help="skip the long-search reference")
    p.add_argument("--ref-k", nargs="+", type=int, default=REF_K, help=f"default {REF_K}")
    p.add_argument(
        "--ref-images", nargs="+", default=list(REAL_IMAGES), help="default: the real images"
    )
    p.add_argument("--ref-n-init", type=int, default=REF_N_INIT)
    p.add_argument(
        "--ref-threads",
        type=int,
        help="threads of the reference's KMeans (default: scikit-learn's; 1 on a loaded machine, "
        "where OpenMP threads compete)",
    )
    p.add_argument("--fresh", action="store_true", help="discard the existing CSV, do not merge")
    p.add_argument("--dry-run", action="store_true", help="print the cells and exit")
    p.add_argument("--results", type=Path, default=_runinfo.DEFAULT_RESULTS)
    p.add_argument("--no-report", action="store_true", help="do not regenerate the report")
    p.add_argument("--mem-child", nargs=3, metavar=("METHOD", "IMAGE", "K"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.mem_child:
        m, image, k = args.mem_child
        mem_child(m, image, int(k))
        return 0

    cells = plan(args)
    if args.dry_run:
        for image, k, ms in cells:
            print(f"{image:10s} {megapixels(image):6.2f} MP  k={k:5d}  {' '.join(ms)}")
        print(f"{len(cells)} cells")
        return 0

    if os.environ.get("OPENBLAS_CORETYPE"):
        print(
            f"note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set; BLAS runs that "
            "kernel, not the native one (see benchmarks/README.md)",
            file=sys.stderr,
        )
    csv_path = args.results / CSV_NAME
    env_path = args.results / ENV_NAME
    selection = any([args.images, args.k, args.methods, args.quick])
    merge = selection and not args.fresh
    rows = {
        (r["image"], r["method"], int(r["k"])): r for r in (load_rows(csv_path) if merge else [])
    }

    info = _runinfo.run_info()
    run_id, version = info["run_id"], info["core_version"]
    dflt = default_speed()
    print(f"run {run_id}; core {version} from {info['git'].get('package_dir')}")
    print(f"quantize: {'speed=' + str(dflt) + ' by default' if dflt else 'no speed parameter'}")
    print(f"BLAS: {info['blas']}")
    unavailable = {m: available(m) for m in {*METHODS, "kmeans-ref"}}
    for m, why in sorted(unavailable.items()):
        if why:
            print(f"{m}: {why[0]} ({why[1]})")

    history: dict[str, list] = {}
    image_cache: dict = {}
    warmed = set()
    t_start = time.perf_counter()
    for image, k, methods in cells:
        if image not in image_cache:
            image_cache.clear()
            gc.collect()
            img = get_image(image)
            image_cache[image] = (img, n_distinct_colors(img))
            print(
                f"\n== {image}: {img.shape[0]}x{img.shape[1]} = "
                f"{img.shape[0] * img.shape[1] / 1e6:.2f} MP, "
                f"{image_cache[image][1]:,} distinct colours",
                flush=True,
            )
        img, ndist = image_cache[image]
        mp = img.shape[0] * img.shape[1] / 1e6
        load1 = os.getloadavg()[0]
        elapsed_min = (time.perf_counter() - t_start) / 60
        todo, bases, preds = [], {}, {}
        for m in methods:
            bases[m] = {
                "image": image,
                "height": img.shape[0],
                "width": img.shape[1],
                "megapixels": f"{mp:.3f}",
                "input_bytes": img.nbytes,
                "n_distinct_colors": ndist,
                "method": m,
                "speed": speed_label(m, dflt),
                "k": k,
                "quick": int(args.quick),
                "loadavg_1min": f"{load1:.2f}",
                "core_version": version if m in OURS else "",
                "run_id": run_id,
                "timestamp": _runinfo.utc_stamp(),
            }
            status = note = None
            budget = args.ours_budget_seconds if m in OURS else args.budget_seconds
            pred = None if m == "kmeans-ref" else predict(m, mp, k, history.get(m, []))
            preds[m] = pred
            if unavailable[m]:
                status, note = unavailable[m]
            elif k > MAX_K.get(m, 1 << 30):
                status, note = "n/a", f"makes at most {MAX_K[m]} colours"
            elif args.quick and m in SLOW_PEERS and mp >= 1.9:
                status, note = "skipped", "slow peer skipped at >= 2 MP in --quick mode"
            elif args.max_minutes is not None and elapsed_min > args.max_minutes:
                status, note = "skipped", f"run past --max-minutes {args.max_minutes:g}"
            elif pred is not None and pred > budget:
                status = "skipped"
                note = f"predicted {pred:.0f} s from this run's smaller cells > budget {budget:g} s"
            if status:
                rows[(image, m, k)] = {**bases[m], "status": status, "note": note}
                print(f"  {m:18s} k={k:5d}  {status}: {note}")
            else:
                todo.append(m)

        if "kmeans-ref" in todo:
            todo.remove("kmeans-ref")
            print(f"  {'kmeans-ref':18s} k={k:5d}  (n_init={args.ref_n_init}) ...", flush=True)
            try:
                ref = run_reference(image, img, k, args.ref_n_init, args.ref_threads)
                rows[(image, "kmeans-ref", k)] = {
                    **bases["kmeans-ref"],
                    **{f: ref[f] for f in ("mse_uint8", "psnr_uint8", "float_mse", "n_colors_out")},
                    "n_iter": ref.get("n_iter", ""),
                    "params": f"n_init={args.ref_n_init}",
                    "status": "ok",
                    "note": ref["note"],
                    "repeats": 1,
                    "time_median_s": f"{ref['time_s']:.4f}",
                    "times_s": f"{ref['time_s']:.4f}",
                }
                print(
                    f"  {'kmeans-ref':18s} k={k:5d}  {ref['time_s']:9.3f} s  MSE "
                    f"{float(ref['mse_uint8']):9.3f}  ({ref['note']})",
                    flush=True,
                )
            except Exception as exc:
                rows[(image, "kmeans-ref", k)] = {
                    **bases["kmeans-ref"],
                    "status": "error",
                    "note": f"{type(exc).__name__}: {exc}",
                }
                print(f"  kmeans-ref ERROR {type(exc).__name__}: {exc}")

        # Round-robin repeats: every method's i-th run happens close in time to the others',
        # so load from other processes on the machine hits them alike.
        times = {m: [] for m in todo}
        results: dict = {}
        for rep in range(args.repeats):
            for m in todo:
                if m in results and results[m] is None:
                    continue  # failed
                slow = args.slow_seconds * (2 if m in OURS else 1)
                if rep > 0 and times[m][0] > slow:
                    continue  # slow: one run
                warm_up(m, img, k, warmed)
                gc.collect()
                try:
                    t0 = time.perf_counter()
                    res = METHODS[m](img, k)
                    times[m].append(time.perf_counter() - t0)
                except Exception as exc:  # a peer failing is a result, not a crash
                    rows[(image, m, k)] = {
                        **bases[m],
                        "status": "error",
                        "note": f"{type(exc).__name__}: {exc}"[:300],
                    }
                    print(f"  {m:18s} k={k:5d}  ERROR {type(exc).__name__}: {exc}"[:300])
                    results[m] = None
                    continue
                if rep == 0:
                    results[m] = quality_fields(img, res)
                del res
        for m in todo:
            if results.get(m) is None:
                continue
            med = statistics.median(times[m])
            history.setdefault(m, []).append((image, mp, k, med))
            row = {
                **bases[m],
                **results[m],
                "status": "ok",
                "note": "",
                "repeats": len(times[m]),
                "time_median_s": f"{med:.4f}",
                "times_s": " ".join(f"{t:.4f}" for t in times[m]),
                "predicted_s": "" if preds[m] is None else f"{preds[m]:.2f}",
            }
            if (
                not args.no_memory
                and not args.quick
                and k in args.mem_k
                and image in args.mem_images
            ):
                mem = measure_memory(m, image, k)
                if "error" in mem:
                    row["note"] = f"memory run failed: {mem['error']}"
                else:
                    row["peak_extra_mb"] = f"{mem['peak_extra_mb']:.1f}"
                    row["baseline_rss_mb"] = f"{mem['baseline_rss_mb']:.1f}"
                    row["peak_method"] = mem["how"]
                    if m in OURS and mem.get("core_version") != version:
                        row["note"] = (
                            f"memory measured on core {mem.get('core_version')} (the core "
                            "changed during the run)"
                        )
            rows[(image, m, k)] = row
            mem_txt = (
                f"  mem +{float(row['peak_extra_mb']):7.1f} MB" if row.get("peak_extra_mb") else ""
            )
            print(
                f"  {m:18s} k={k:5d}  {med:9.3f} s (x{len(times[m])})  MSE "
                f"{float(row['mse_uint8']):9.3f}"
                f"  PSNR {float(row['psnr_uint8']):6.2f}  colours {row['n_colors_out']}{mem_txt}",
                flush=True,
            )
        save_rows(list(rows.values()), csv_path)
    save_rows(list(rows.values()), csv_path)
    if _runinfo.core_version() != version:
        print("WARNING: the core's source changed during the run (see core_version per row)")
    info["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    _runinfo.save_env(env_path, info, merge=merge)
    print(f"\nwrote {csv_path} ({len(rows)} rows) in {info['elapsed_s']:.0f} s")

    import make_report

    print("\n" + make_report.format_summary(make_report.targets_summary(args.results)))
    if not args.no_report:
        make_report.main(["--results", str(args.results)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
