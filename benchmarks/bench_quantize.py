#!/usr/bin/env python
"""Benchmark 1: napari-kmeans-filter `quantize` against its peers on real images.

Measures, per image / method / k: wall time (median of repeats), MSE and PSNR of the uint8
image the method returns vs the original (float reconstructions rounded to uint8), the
float-centre MSE of the KMeans peers, and (in a fresh subprocess per measurement) peak
extra memory = peak RSS during the call minus RSS just before it (Linux VmHWM, reset with
/proc/self/clear_refs right before the call, so it is exact, not sampled).

Writes benchmarks/results/quantize.csv (+ quantize_env.json), then regenerates
docs/benchmarks.md and docs/images/bench_*.png via make_report.py, and prints the
PASS/FAIL summary of the performance targets.

Examples
--------
    # everything (about 30-40 min on 2 cores); unset OPENBLAS_* so BLAS uses its native kernel
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_quantize.py
    # a few minutes: k in {5, 16, 64}, no sklearn-all / dask-ml at 12 MP
    python benchmarks/bench_quantize.py --quick
    # a selection (merged into the existing CSV)
    python benchmarks/bench_quantize.py --images mosaic12 --k 16 64 --methods ours pillow-mediancut
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _images import REAL_IMAGES, get_image, n_distinct_colors  # noqa: E402
from _methods import METHODS, SLOW_AT_12MP, available, mse_psnr  # noqa: E402

RESULTS = HERE / "results"
CSV_PATH = RESULTS / "quantize.csv"
ENV_PATH = RESULTS / "quantize_env.json"

DEFAULT_IMAGES = [*REAL_IMAGES, "mosaic12"]
DEFAULT_K = [2, 5, 10, 15, 24, 64]
QUICK_K = [5, 16, 64]
TARGET_K = [16, 64]  # always added on the 12 MP image: the targets are stated there
SCALING_SIZES = [0.5, 2, 6, 12]
SCALING_K = 16
SCALING_METHODS = ["ours", "sklearn-all", "pillow-mediancut", "sklearn-1000"]

FIELDS = [
    "image",
    "height",
    "width",
    "megapixels",
    "input_bytes",
    "n_distinct_colors",
    "method",
    "k",
    "status",
    "note",
    "repeats",
    "time_median_s",
    "times_s",
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
    "timestamp",
]


# --------------------------------------------------------------------------- core version
def core_version() -> str:
    """git HEAD of the repo + a hash of the core's source files as they are on disk now.

    The core is developed while benchmarks run: every row records the version it measured.
    """
    import hashlib

    src = HERE.parent / "src" / "napari_kmeans_filter"
    digest = hashlib.sha1()
    for path in sorted(src.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    try:
        head = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        head = ""
    return f"{head or 'nogit'}+src{digest.hexdigest()[:8]}"


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
    version = core_version()
    img = get_image(image)
    fn = METHODS[method]
    fn(np.ascontiguousarray(img[:64, :64]), min(k, 4))  # imports, JIT, thread pools
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


# --------------------------------------------------------------------------- timing
def float_mse(img, res):
    centers, labels = res.get("centers"), res.get("labels")
    if centers is None:
        return None
    px = img.reshape(-1, img.shape[-1])
    err = 0.0
    step = 1 << 20
    centers = np.asarray(centers, dtype=np.float64)
    for s in range(0, px.shape[0], step):
        d = centers[labels[s : s + step]] - px[s : s + step]
        err += float(np.einsum("ij,ij->", d, d))
    return err / px.size


def n_colors(img):
    return n_distinct_colors(img)


# --------------------------------------------------------------------------- csv
def load_rows(path=CSV_PATH):
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def save_rows(rows, path=CSV_PATH):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: (r["image"], r["method"], int(r["k"])))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def environment():
    import importlib.metadata as md

    import threadpoolctl

    vers = {}
    for dist in [
        "napari-kmeans-filter",
        "numpy",
        "scikit-learn",
        "scikit-image",
        "pillow",
        "opencv-python-headless",
        "dask",
        "distributed",
        "dask-ml",
        "zarr",
        "scipy",
        "threadpoolctl",
    ]:
        try:
            vers[dist] = md.version(dist)
        except md.PackageNotFoundError:
            vers[dist] = None
    import sklearn  # noqa: F401  (loads the OpenMP runtime so threadpoolctl sees it)

    pools = [
        {k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
        for p in threadpoolctl.threadpool_info()
    ]
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "n_cpus": os.cpu_count(),
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "versions": vers,
        "threadpools": pools,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------- main
def plan(args):
    """List of (image, k, methods) cells to time."""
    images = args.images or DEFAULT_IMAGES
    ks = args.k or (QUICK_K if args.quick else DEFAULT_K)
    methods = args.methods or list(METHODS)
    cells = []
    for image in images:
        image_ks = list(ks)
        if image == "mosaic12" and not args.k and not args.no_targets:
            image_ks = sorted(set(image_ks) | set(TARGET_K))
        for k in image_ks:
            cells.append((image, k, methods))
    if not args.no_scaling:
        smethods = [m for m in SCALING_METHODS if m in methods]
        for mp in args.sizes or SCALING_SIZES:
            name = f"mosaic{mp:g}"
            if name in images and SCALING_K in [k for i, k, _ in cells if i == name]:
                continue
            cells.append((name, SCALING_K, smethods))
    return cells


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="k in {5,16,64}; skip sklearn-all and dask-ml at 12 MP"
    )
    p.add_argument("--images", nargs="+", help=f"default {DEFAULT_IMAGES}; mosaic<MP> for any size")
    p.add_argument(
        "--k", nargs="+", type=int, help=f"default {DEFAULT_K} (+{TARGET_K} on mosaic12)"
    )
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="default: all")
    p.add_argument(
        "--sizes", nargs="+", type=float, help=f"time-vs-MP sizes, default {SCALING_SIZES}"
    )
    p.add_argument("--no-scaling", action="store_true", help="skip the time-vs-megapixels runs")
    p.add_argument("--no-targets", action="store_true", help="do not add k=16,64 on mosaic12")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--mem-k",
        nargs="+",
        type=int,
        default=[16, 64],
        help="k values whose peak memory is measured (on every timed image)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--slow-seconds",
        type=float,
        default=10.0,
        help="a first run slower than this is not repeated",
    )
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=150.0,
        help="after a run slower than this, larger k of that method on that image are skipped",
    )
    p.add_argument(
        "--fresh", action="store_true", help="discard the existing CSV instead of merging"
    )
    p.add_argument("--no-report", action="store_true", help="do not regenerate docs/benchmarks.md")
    p.add_argument("--mem-child", nargs=3, metavar=("METHOD", "IMAGE", "K"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.mem_child:
        m, image, k = args.mem_child
        mem_child(m, image, int(k))
        return 0

    if os.environ.get("OPENBLAS_CORETYPE"):
        print(
            f"note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set; BLAS runs that "
            "kernel, not the native one (see benchmarks/README.md)",
            file=sys.stderr,
        )

    selection = any([args.images, args.k, args.methods, args.sizes, args.quick])
    old = [] if (args.fresh or not selection) else load_rows()
    rows = {(r["image"], r["method"], int(r["k"])): r for r in old}

    unavailable = {m: available(m) for m in METHODS}
    for m, why in unavailable.items():
        if why:
            print(f"{m}: unavailable ({why})")

    version = core_version()
    print(f"core version: {version}")
    cells = plan(args)
    budget_hit = {}  # (image, method) -> note
    image_cache = {}
    warmed = set()
    t_start = time.perf_counter()
    for image, k, methods in cells:
        if image not in image_cache:
            image_cache.clear()
            gc.collect()
            img = get_image(image)
            image_cache[image] = (img, n_colors(img))
            print(
                f"\n== {image}: {img.shape[0]}x{img.shape[1]} = "
                f"{img.shape[0] * img.shape[1] / 1e6:.2f} MP, "
                f"{image_cache[image][1]:,} distinct colours",
                flush=True,
            )
        img, ndist = image_cache[image]
        mp = img.shape[0] * img.shape[1] / 1e6
        load1 = os.getloadavg()[0]
        todo, bases = [], {}
        for m in methods:
            bases[m] = {
                "image": image,
                "height": img.shape[0],
                "width": img.shape[1],
                "megapixels": f"{mp:.3f}",
                "input_bytes": img.nbytes,
                "n_distinct_colors": ndist,
                "method": m,
                "k": k,
                "quick": int(args.quick),
                "loadavg_1min": f"{load1:.2f}",
                "core_version": version if m == "ours" else "",
                "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            note = None
            if unavailable[m]:
                note = f"unavailable: {unavailable[m]}"
            elif args.quick and m in SLOW_AT_12MP and mp >= 11.9:
                note = "skipped at 12 MP in --quick mode"
            elif (image, m) in budget_hit:
                note = budget_hit[(image, m)]
            if note:
                rows[(image, m, k)] = {**bases[m], "status": "skipped", "note": note}
                print(f"  {m:18s} k={k:3d}  {note}")
            else:
                todo.append(m)
        # Round-robin repeats: every method's i-th run happens close in time to the others',
        # so load from other processes on the machine hits them alike.
        times = {m: [] for m in todo}
        results = {}
        for rep in range(args.repeats):
            for m in todo:
                if m in results and results[m] is None:
                    continue  # failed
                if rep > 0 and times[m][0] > args.slow_seconds:
                    continue  # very slow: one run
                if m not in warmed:  # imports, numba JIT, thread pools: once per method, untimed
                    METHODS[m](np.ascontiguousarray(img[:64, :64]), min(k, 4))
                    warmed.add(m)
                gc.collect()
                try:
                    t0 = time.perf_counter()
                    res = METHODS[m](img, k)
                    times[m].append(time.perf_counter() - t0)
                except Exception as exc:  # a peer failing is a result, not a crash
                    rows[(image, m, k)] = {
                        **bases[m],
                        "status": "error",
                        "note": f"{type(exc).__name__}: {exc}",
                    }
                    print(f"  {m:18s} k={k:3d}  ERROR {type(exc).__name__}: {exc}")
                    results[m] = None
                    continue
                if rep == 0:
                    out = res["image"]
                    assert out.shape == img.shape and out.dtype == np.uint8, (
                        m,
                        out.shape,
                        out.dtype,
                    )
                    mse, psnr = mse_psnr(img, out)
                    fm = float_mse(img, res)
                    results[m] = {
                        "mse_uint8": f"{mse:.4f}",
                        "psnr_uint8": f"{psnr:.4f}",
                        "float_mse": "" if fm is None else f"{fm:.4f}",
                        "reported_mse": ""
                        if res.get("reported_mse") is None
                        else f"{res['reported_mse']:.4f}",
                        "n_colors_out": n_colors(out),
                        "n_iter": "" if res.get("n_iter") is None else res["n_iter"],
                    }
                    del out
                del res
        for m in todo:
            if results.get(m) is None:
                continue
            med = statistics.median(times[m])
            row = {
                **bases[m],
                **results[m],
                "status": "ok",
                "note": "",
                "repeats": len(times[m]),
                "time_median_s": f"{med:.4f}",
                "times_s": " ".join(f"{t:.4f}" for t in times[m]),
            }
            if med > args.budget_seconds:
                budget_hit[(image, m)] = (
                    f"skipped: k={k} already took {med:.0f} s (> --budget-seconds "
                    f"{args.budget_seconds:g})"
                )
            if not args.no_memory and k in args.mem_k:
                mem = measure_memory(m, image, k)
                if "error" in mem:
                    row["note"] = f"memory run failed: {mem['error']}"
                else:
                    row["peak_extra_mb"] = f"{mem['peak_extra_mb']:.1f}"
                    row["baseline_rss_mb"] = f"{mem['baseline_rss_mb']:.1f}"
                    row["peak_method"] = mem["how"]
                    if m == "ours" and mem.get("core_version") != version:
                        row["note"] = (
                            f"memory measured on core {mem.get('core_version')} (the core "
                            "changed during the run)"
                        )
            rows[(image, m, k)] = row
            mem_txt = (
                f"  mem +{float(row['peak_extra_mb']):7.1f} MB" if row.get("peak_extra_mb") else ""
            )
            print(
                f"  {m:18s} k={k:3d}  {med:9.3f} s (x{len(times[m])})  MSE "
                f"{float(row['mse_uint8']):9.3f}"
                f"  PSNR {float(row['psnr_uint8']):6.2f}  colours {row['n_colors_out']}{mem_txt}",
                flush=True,
            )
        save_rows(list(rows.values()))
    save_rows(list(rows.values()))
    env = environment()
    env["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    # A selection run merges into the CSV, so the runs behind it are listed, newest last.
    runs = []
    if selection and not args.fresh and ENV_PATH.exists():
        try:
            runs = json.loads(ENV_PATH.read_text()).get("runs", [])
        except (OSError, ValueError):
            runs = []
    runs.append({k: env[k] for k in ("command", "date", "elapsed_s")} | {"core_version": version})
    env["runs"] = runs
    ENV_PATH.write_text(json.dumps(env, indent=2) + "\n")
    print(
        f"\nwrote {CSV_PATH.relative_to(HERE.parent)} ({len(rows)} rows) in {env['elapsed_s']:.0f} "
        "s"
    )

    import make_report

    summary = make_report.targets_summary(make_report.load_quantize())
    print("\n" + make_report.format_summary(summary))
    if not args.no_report:
        make_report.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
