#!/usr/bin/env python
"""Benchmark 2: quantise a ~1 GB zarr RGB stack lazily with dask, at four chunkings.

    python benchmarks/bench_dask.py                    # all four chunkings, 3 runs each
    python benchmarks/bench_dask.py --chunks 1,256,256,3 --repeats 1
    python benchmarks/bench_dask.py --dask-ml          # also dask-ml on a 2-frame subset
    python benchmarks/bench_dask.py --methods ours-grouped zarr-io-grouped --clusters 0 1 2

The stack: 80 frames of 2048x2048x3 uint8 (0.94 GiB) of noisy photos: random crops of the
real sample images, resized (Pillow bilinear) to 2048x2048, with the same camera noise as the
`mosaic` images (Poisson shot noise at 12 e-/DN + 1 DN read noise; > 3 M distinct colours in
the stack). It is stored once per chunking, each store chunked as the dask array will be
(OME-Zarr and microscopy writers use 256-1024 px chunks), in benchmarks/_data/ (git-ignored,
generated once in about 2 minutes on 2 cores, then reused); labels go to benchmarks/_out/.

Every measurement runs in a fresh subprocess (so peak RSS is that run's alone), after one
untimed process on two frames (two tasks: it fills the on-disk cache of JIT-compiled kernels,
those of a stack of several tasks included):
  ours:    quantize(da.from_zarr(store), 16, random_state=0); da.to_zarr(result.labels, ...)
           (the core regroups an array straight from from_zarr into tasks of several storage
           chunks, so this is the plain API call; its labels are stored in the task chunks)
  zarr-io: the I/O floor of any two-pass method, right after ours at each chunking:
           da.from_zarr(store).max().compute(); da.to_zarr(x[..., 0], ...)
  ours-grouped / zarr-io-grouped (issue 19): the same, with tasks of several storage
           chunks each (``_tasks.regroup``: --task-mb of whole storage chunks per task) and the
           labels written with the input's storage chunks from tasks aligned to them
           (``_tasks.to_zarr``): the grouped floor is zarr-python's own read-twice-write-once
           I/O with tasks of the same size as ours, the honest floor.
  --clusters 0 1 2: each grouped method also on a dask.distributed LocalCluster of 1 worker
           process (2 threads) and of 2 worker processes (1 thread each); each worker's
           peak RSS (VmHWM) is recorded, the client process's too.
  cli:     the command line as a user runs it for the labels, `napari-kmeans-filter
           stack.zarr -k 16 --no-image --labels labels.zarr`, timed as a whole process
           (start-up and imports included; the labels keep the input's storage chunks); its
           peak RSS is the process's (ru_maxrss).
  dask-ml: (--dask-ml) the seed article's usage on the first --dask-ml-frames frames of the
           (1, 2048, 2048, 3) store: dask_ml.cluster.KMeans(n_clusters=16).fit(pixels),
           labels_ to zarr; the full-stack time is extrapolated linearly, and labelled so.
Throughput = stack pixels / wall time of the fit + writing the labels. CPU time (cpu_s,
fit_cpu_s, write_cpu_s: the process's, every thread) is steadier than wall time when other
work shares the cores: compare it too. Peak RSS = the child's
VmHWM (whole process, imports included), cross-checked by a psutil thread sampling every
10 ms. A first run slower than --slow-seconds is not repeated; a run is stopped after
--timeout seconds. Results: <results>/dask.csv (+ dask_env.json); the report is regenerated.
Targets (issue 8): >= 40 MP/s and <= 700 MB at every chunking, and no chunking more than 2x
slower than the best.  Issue 19: the same with no chunking more than 1.5x slower than the best,
or <= 1.25x the grouped floor where that floor is itself below 40 MP/s.
--data-dir / --csv-name measure other stores (e.g. a /tmp stack) without touching dask.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _runinfo  # noqa: E402
from _images import DATA_DIR, add_camera_noise, real_image  # noqa: E402

OUT_DIR = HERE / "_out"
CSV_NAME = "dask.csv"
ENV_NAME = "dask_env.json"
N_FRAMES, SIZE = 80, 2048
SOURCES = ("chelsea", "astronaut", "coffee", "china", "flower")
RECIPE = 2  # bump when the frame recipe changes, to regenerate the cache
N_COLORS = 16
CHUNKINGS = [(1, 1024, 345, 3), (1, 512, 512, 3), (1, 256, 256, 3), (1, 2048, 2048, 3)]
METHODS = ("ours", "zarr-io", "ours-grouped", "zarr-io-grouped", "cli")
FULL_FRAME = (1, SIZE, SIZE, 3)

FIELDS = [
    "method",
    "chunks",
    "n_chunks",
    "scope",
    "frames",
    "megapixels",
    "status",
    "wall_s",
    "fit_s",
    "write_s",
    "cpu_s",
    "fit_cpu_s",
    "write_cpu_s",
    "mp_per_s",
    "peak_rss_mb",
    "peak_rss_sampled_mb",
    "baseline_rss_mb",
    "n_colors",
    "n_input_colors",
    "mse",
    "extrapolated_full_s",
    "scheduler",
    "tasks",
    "n_tasks",
    "worker_peak_rss_mb",
    "core_version",
    "loadavg_1min",
    "stage_peak_rss_mb",
    "note",
    "run_id",
    "timestamp",
]


def chunk_tag(chunks) -> str:
    return "x".join(str(c) for c in chunks)


def parse_chunks(text: str) -> tuple[int, ...]:
    parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    if len(parts) != 4 or parts[0] < 1 or parts[3] != 3:
        raise argparse.ArgumentTypeError("chunks are 4 integers: frames,rows,columns,3")
    return parts


_DATA_DIR = [DATA_DIR]  # --data-dir replaces it (the child gets the same option)
TASK_MB = [16.0]  # --task-mb: bytes per task of the grouped methods (the core's default)


def store_path(chunks, n_frames: int = N_FRAMES) -> Path:
    return _DATA_DIR[0] / f"stack_r{RECIPE}_f{n_frames}_c{chunk_tag(chunks)}.zarr"


def _shown_path(path: Path) -> str:
    """A store's path relative to the checkout when it is inside it (as the CSVs show it)."""
    try:
        return str(path.relative_to(HERE.parent))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- the stack
def make_frame(i: int) -> np.ndarray:
    from PIL import Image

    rng = np.random.default_rng(1000 + i)
    src = real_image(SOURCES[i % len(SOURCES)])
    h, w = src.shape[:2]
    frac = rng.uniform(0.55, 1.0)
    ch, cw = max(16, int(h * frac)), max(16, int(w * frac))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = np.ascontiguousarray(src[y0 : y0 + ch, x0 : x0 + cw])
    if rng.random() < 0.5:
        crop = crop[:, ::-1].copy()
    clean = np.asarray(
        Image.fromarray(crop).resize((SIZE, SIZE), Image.Resampling.BILINEAR), np.float32
    )
    return add_camera_noise(clean, seed=2000 + i)


def _complete(path: Path, n_frames: int, chunks) -> bool:
    import zarr

    try:
        z = zarr.open_array(str(path), mode="r")
    except Exception:
        return False
    return (
        bool(z.attrs.get("complete"))
        and z.attrs.get("recipe") == RECIPE
        and tuple(z.shape) == (n_frames, SIZE, SIZE, 3)
        and tuple(z.chunks) == tuple(chunks)
    )


def ensure_stacks(chunkings, n_frames: int = N_FRAMES, workers: int = 2) -> dict:
    """One zarr store per chunking, all holding the same frames; only missing ones are made.
    Frames are made once (in `workers` processes) and written to every missing store."""
    import zarr

    paths = {tuple(c): store_path(c, n_frames) for c in chunkings}
    missing = {c: p for c, p in paths.items() if not _complete(p, n_frames, c)}
    if not missing:
        return paths
    _DATA_DIR[0].mkdir(parents=True, exist_ok=True)
    arrays = {}
    for c, p in missing.items():
        if p.exists():
            shutil.rmtree(p)
        arrays[c] = zarr.create_array(
            store=str(p), shape=(n_frames, SIZE, SIZE, 3), chunks=c, dtype="uint8"
        )
    print(
        f"generating {len(missing)} store(s) of {n_frames} frames of {SIZE}x{SIZE}x3 "
        f"({', '.join(chunk_tag(c) for c in missing)}) ...",
        flush=True,
    )
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, frame in enumerate(pool.map(make_frame, range(n_frames))):
            for z in arrays.values():
                z[i] = frame
            if (i + 1) % 10 == 0:
                print(f"  {i + 1}/{n_frames} frames, {time.perf_counter() - t0:.0f} s", flush=True)
    for z in arrays.values():
        z.attrs.update({"complete": True, "recipe": RECIPE})
    print(f"stacks ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


# --------------------------------------------------------------------------- child
def _status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    def __init__(self, interval=0.01):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.stage = "setup"
        self.stage_peak = {}  # stage -> peak sampled RSS (MB) while that stage ran

    def set_stage(self, stage):
        self.stage = stage

    def run(self):
        while not self.stop.is_set():
            rss = self.proc.memory_info().rss
            self.peak = max(self.peak, rss)
            stage = self.stage
            self.stage_peak[stage] = max(self.stage_peak.get(stage, 0.0), rss / 2**20)
            self.stop.wait(self.interval)


def _stage_name(msg) -> str:
    # progress messages may carry counts ("histogram 3/960"): keep the words only
    words = [w for w in str(msg).split() if not any(ch.isdigit() for ch in w)]
    return " ".join(words) or str(msg)


def _worker_peak_mb() -> float:
    return _status_mb("VmHWM")


def child(
    method: str, stack_frames: int, frames: int, out: str, scheduler: str, chunks, cluster: int = 0
) -> None:
    if method == "cli":
        _cli_child(stack_frames, frames, out, chunks)
        return
    import dask
    import dask.array as da

    grouped = method.endswith("-grouped")
    base = method.removesuffix("-grouped")
    if base == "ours":
        from napari_kmeans_filter import quantize
    elif base == "dask-ml":
        from dask_ml.cluster import KMeans
    if grouped:
        from napari_kmeans_filter import _tasks
    client = None
    if cluster:
        from dask.distributed import Client, LocalCluster

        # 2 cores: 1 process x 2 threads, or 2 processes x 1 thread
        client = Client(
            LocalCluster(
                n_workers=cluster,
                threads_per_worker=max(1, (os.cpu_count() or 2) // cluster),
                processes=True,
                dashboard_address=None,
                memory_limit=0,
            )
        )
    else:
        dask.config.set(scheduler=scheduler)

    x = da.from_zarr(str(store_path(chunks, stack_frames)))
    storage_chunks = tuple(x.chunksize)
    if grouped:
        # tasks of several storage chunks, of --task-mb (the core does this by itself at
        # its default size; zarr-io-grouped needs it to be the honest floor)
        x = _tasks.regroup(x, target_bytes=int(TASK_MB[0] * 2**20))
    if frames < x.shape[0]:
        x = x[:frames]
    n_px = int(np.prod(x.shape[:-1]))
    baseline = _status_mb("VmRSS")
    sampler = RssSampler()
    sampler.start()
    info = {"core_version": _runinfo.core_version() if base == "ours" else ""}
    info["n_chunks"] = int(
        np.prod([-(-s // c) for s, c in zip(x.shape, storage_chunks, strict=True)])
    )
    # the tasks the core runs: it regroups an array straight from from_zarr itself
    tasks = x
    if base == "ours" and not grouped:
        from napari_kmeans_filter import _tasks as core_tasks

        tasks = core_tasks.regroup(x)
    info["n_tasks"] = int(np.prod(tasks.numblocks))
    info["tasks"] = chunk_tag(tasks.chunksize)

    def write(labels):
        if grouped:
            # labels keep the input's storage chunks (less the channel axis); tasks stay large
            _tasks.to_zarr(labels, out, storage_chunks=storage_chunks[:-1])
        else:
            da.to_zarr(labels, out, overwrite=True)

    t0, c0 = time.perf_counter(), time.process_time()
    if base == "ours":
        # the core's progress messages name its stages: peak RSS is attributed to them
        res = quantize(
            x, N_COLORS, random_state=0, progress=lambda f, msg: sampler.set_stage(_stage_name(msg))
        )
        t1, c1 = time.perf_counter(), time.process_time()
        sampler.set_stage("write labels")
        write(res.labels)
        info["n_colors"] = len(res.palette)
        info["n_input_colors"] = int(res.n_input_colors)
        mse = res.mse
        info["mse"] = float(mse.compute() if hasattr(mse, "compute") else mse)
    elif base == "zarr-io":
        # The I/O floor of any two-pass method: read every chunk once (the fit's
        # pass), then read every chunk again and write one uint8 per pixel.
        sampler.set_stage("read")
        x.max().compute()
        t1, c1 = time.perf_counter(), time.process_time()
        sampler.set_stage("write labels")
        write(x[..., 0])
        info["mse"] = None
    else:
        pixels = x.reshape(-1, x.shape[-1])
        km = KMeans(n_clusters=N_COLORS, random_state=0)
        sampler.set_stage("fit")
        km.fit(pixels)
        t1, c1 = time.perf_counter(), time.process_time()
        sampler.set_stage("write labels")
        labels = km.labels_.reshape(x.shape[:-1])
        da.to_zarr(labels, out, overwrite=True)
        info["n_colors"] = int(km.cluster_centers_.shape[0])
        centers = np.asarray(km.cluster_centers_, dtype=np.float64)
    t2, c2 = time.perf_counter(), time.process_time()
    sampler.stop.set()
    sampler.join()
    if client is not None:
        peaks = client.run(_worker_peak_mb)
        info["worker_peak_rss_mb"] = "; ".join(f"{v:.0f}" for v in peaks.values())
        client.close()
    info.update(
        wall_s=t2 - t0,
        fit_s=t1 - t0,
        write_s=t2 - t1,
        # CPU seconds of the whole process (every thread; the workers' not counted on a
        # cluster): steadier than wall time when other work shares the cores
        cpu_s=c2 - c0,
        fit_cpu_s=c1 - c0,
        write_cpu_s=c2 - c1,
        megapixels=n_px / 1e6,
        peak_rss_mb=_status_mb("VmHWM"),
        peak_rss_sampled_mb=sampler.peak / 2**20,
        baseline_rss_mb=baseline,
        stage_peak_rss_mb="; ".join(f"{k}: {v:.0f}" for k, v in sampler.stage_peak.items()),
    )
    # sanity check of what was written (one frame)
    import zarr

    z = zarr.open_array(out, mode="r")
    assert tuple(z.shape) == tuple(x.shape[:-1]), (z.shape, x.shape)
    if grouped:
        assert tuple(z.chunks) == storage_chunks[:-1], (z.chunks, storage_chunks)
    if base != "zarr-io":
        assert int(np.asarray(z[0]).max()) < N_COLORS
    if base == "dask-ml":
        # MSE of its centres, computed from the written labels after the measurement
        # (dask-ml's inertia_ sums unsquared distances, so it cannot be used)
        err = 0.0
        for i in range(x.shape[0]):
            px = np.asarray(x[i]).reshape(-1, x.shape[-1]).astype(np.float64)
            d = px - centers[np.asarray(z[i]).reshape(-1)]
            err += float(np.einsum("ij,ij->", d, d))
        info["mse"] = err / (n_px * x.shape[-1])
    print(json.dumps(info))


def _cli_child(stack_frames: int, frames: int, out: str, chunks) -> None:
    """The command line on the whole stack, as a user runs it for the labels: one process,
    timed whole (start-up, imports, reading, fit, and the labels in the input's storage
    chunks; ``--no-image``: the same work as the API method)."""
    import resource

    import zarr

    if frames != stack_frames:
        raise SystemExit("the cli method runs on the whole stack only")
    store = store_path(chunks, stack_frames)
    cmd = [sys.executable, "-m", "napari_kmeans_filter", str(store), "-k", str(N_COLORS)]
    cmd += ["--no-image", "--labels", out, "--overwrite", "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command line's process only
    z = zarr.open_array(out, mode="r")
    assert tuple(z.shape) == (stack_frames, SIZE, SIZE), z.shape
    assert tuple(z.chunks) == tuple(chunks[:-1]), (z.chunks, chunks)
    assert int(np.asarray(z[0]).max()) < N_COLORS
    info = {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "megapixels": stack_frames * SIZE * SIZE / 1e6,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kB on Linux
        "n_chunks": int(np.prod([-(-s // c) for s, c in zip(z.shape, z.chunks, strict=True)])),
        "core_version": _runinfo.core_version(),
    }
    print(json.dumps(info))


def run_child(method, stack_frames, frames, scheduler, chunks, timeout, cluster=0):
    out = OUT_DIR / f"labels_{method}_c{chunk_tag(chunks)}.zarr"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        method,
        str(stack_frames),
        str(frames),
        str(out),
        "--scheduler",
        scheduler,
        "--chunks",
        ",".join(str(c) for c in chunks),
        "--data-dir",
        str(_DATA_DIR[0]),
        "--clusters",
        str(cluster),
        "--task-mb",
        str(TASK_MB[0]),
    ]
    load1 = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        shutil.rmtree(out, ignore_errors=True)
        return {
            "status": "timeout",
            "note": f"stopped after --timeout {timeout:g} s",
            "loadavg_1min": f"{load1:.2f}",
        }
    shutil.rmtree(out, ignore_errors=True)  # 80 MB-1 GB of labels per run: not kept
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"status": "error", "note": " | ".join(tail), "loadavg_1min": f"{load1:.2f}"}
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["status"] = "ok"
    info["loadavg_1min"] = f"{load1:.2f}"
    return info


# --------------------------------------------------------------------------- csv
def load_rows(path):
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def save(rows, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    k: (f"{v:.12g}" if k == "mse" else f"{v:.4f}") if isinstance(v, float) else v
                    for k, v in r.items()
                }
            )
    tmp.replace(path)


def _scheduler_name(cluster: int, scheduler: str) -> str:
    return f"LocalCluster({cluster} processes)" if cluster else scheduler


# --------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--chunks",
        nargs="+",
        type=parse_chunks,
        help="chunkings, e.g. 1,256,256,3; default: "
        + " ".join(",".join(map(str, c)) for c in CHUNKINGS),
    )
    p.add_argument("--repeats", type=int, default=3, help="fresh-process runs per chunking")
    p.add_argument(
        "--slow-seconds",
        type=float,
        default=60.0,
        help="a first run slower than this is the only one",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="stop a run after this many s")
    p.add_argument(
        "--frames",
        type=int,
        default=N_FRAMES,
        help=f"frames in the stack (default {N_FRAMES}: ~1 GB); fewer for a smoke test (its own "
        "cached stores)",
    )
    p.add_argument("--dask-ml", action="store_true", help="also run dask-ml on a subset")
    p.add_argument("--dask-ml-frames", type=int, default=2, help="frames dask-ml is run on")
    p.add_argument(
        "--scheduler", default="threads", choices=["threads", "processes", "synchronous"]
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="what to time at each chunking (default: all four)",
    )
    p.add_argument(
        "--clusters",
        nargs="+",
        type=int,
        default=[0],
        help="0: the threaded scheduler (every method); N > 0: the grouped methods on a "
        "LocalCluster of N worker processes; e.g. --clusters 0 1 2 (default 0)",
    )
    p.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="where the stacks are (or are made)"
    )
    p.add_argument(
        "--task-mb",
        type=float,
        default=None,
        help="MiB read per task by the grouped methods (default: _tasks.TARGET_TASK_BYTES)",
    )
    p.add_argument("--csv-name", default=CSV_NAME, help=f"results file (default {CSV_NAME})")
    p.add_argument("--results", type=Path, default=_runinfo.DEFAULT_RESULTS)
    p.add_argument("--no-report", action="store_true")
    p.add_argument(
        "--child", nargs=4, metavar=("METHOD", "STACK", "FRAMES", "OUT"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    chunkings = [tuple(c) for c in (args.chunks or CHUNKINGS)]
    _DATA_DIR[0] = args.data_dir
    if args.task_mb is None:
        from napari_kmeans_filter import _tasks

        args.task_mb = _tasks.TARGET_TASK_BYTES / 2**20
    TASK_MB[0] = args.task_mb
    if args.child:
        m, stack_frames, frames, out = args.child
        cluster = args.clusters[0]
        child(m, int(stack_frames), int(frames), out, args.scheduler, chunkings[0], cluster)
        return 0

    csv_path = args.results / args.csv_name
    env_path = csv_path.with_name(csv_path.stem + "_env.json")
    needed = list(chunkings) + (
        [FULL_FRAME] if args.dask_ml and FULL_FRAME not in chunkings else []
    )
    ensure_stacks(needed, args.frames)
    info = _runinfo.run_info(load_peers=False)
    run_id = info["run_id"]
    print(f"run {run_id}; core {info['core_version']} from {info['git'].get('package_dir')}")
    frames = args.frames
    # Rows of chunkings / methods not measured now are kept (a partial rerun merges).
    measured = {
        (m, chunk_tag(c), _scheduler_name(n, args.scheduler))
        for c in chunkings
        for m in args.methods
        for n in args.clusters
    }
    if args.dask_ml:
        measured.add(("dask-ml", chunk_tag(FULL_FRAME), args.scheduler))
    kept = [
        r
        for r in load_rows(csv_path)
        if (r["method"], r.get("chunks", ""), r.get("scheduler", "threads")) not in measured
    ]
    rows = []

    def record(method, chunks, scope, n_frames, res, note="", cluster=0):
        row = {
            "method": method,
            "chunks": chunk_tag(chunks),
            "scope": scope,
            "frames": n_frames,
            "scheduler": _scheduler_name(cluster, args.scheduler),
            "run_id": run_id,
            "timestamp": _runinfo.utc_stamp(),
            **res,
        }
        if res.get("status") == "ok":
            row["mp_per_s"] = res["megapixels"] / res["wall_s"]
            row["note"] = note
            workers = res.get("worker_peak_rss_mb")
            print(
                f"  {method:15s} {row['scheduler'][:24]:24s} chunks {chunk_tag(chunks):15s} "
                f"tasks {res.get('tasks', '')} ({res.get('n_tasks', '')}) {n_frames:3d} frames "
                f"{res['megapixels']:6.1f} MP {res['wall_s']:8.2f} s"
                + (
                    f" (fit {res['fit_s']:.2f} + write {res['write_s']:.2f})"
                    if "fit_s" in res
                    else " (whole process)"
                )
                + f"  {row['mp_per_s']:6.1f} MP/s  CPU {res['cpu_s']:.1f} s  peak RSS "
                f"{res['peak_rss_mb']:.0f} MB"
                + (
                    f" (sampled {res['peak_rss_sampled_mb']:.0f}, "
                    f"baseline {res['baseline_rss_mb']:.0f})"
                    if "peak_rss_sampled_mb" in res
                    else ""
                )
                + (f", workers {workers} MB" if workers else ""),
                flush=True,
            )
        else:
            print(f"  {method} chunks {chunk_tag(chunks)}: {res['status']}: {res.get('note')}")
        rows.append(row)
        save(kept + rows, csv_path)
        return row

    t_start = time.perf_counter()
    # One untimed fresh process on one frame first: a core with JIT-compiled kernels fills
    # its on-disk cache there, so the timed runs load it (as a user's second run does).
    warm = run_child("ours", frames, 2, args.scheduler, chunkings[0], args.timeout)
    print(f"warm-up process (2 frames, untimed): {warm['status']}", flush=True)
    scope = "full" if frames == N_FRAMES else "small"
    for chunks in chunkings:
        n_chunks = frames * np.prod(
            [-(-s // c) for s, c in zip((SIZE, SIZE), chunks[1:3], strict=True)]
        )
        print(
            f"chunks {chunks}: {n_chunks} chunks of {np.prod(chunks) / 2**20:.2f} MiB", flush=True
        )
        # Round-robin over the methods, so that load from elsewhere hits them alike; each
        # floor right beside its method.
        runs = [
            (m, n) for n in args.clusters for m in args.methods if n == 0 or m.endswith("-grouped")
        ]
        slow = set()
        for _ in range(args.repeats):
            for method, cluster in runs:
                if (method, cluster) in slow:
                    continue
                row = record(
                    method,
                    chunks,
                    scope,
                    frames,
                    run_child(
                        method, frames, frames, args.scheduler, chunks, args.timeout, cluster
                    ),
                    "I/O floor: a pass reading every chunk, then reading again and writing "
                    "uint8 labels"
                    if method.startswith("zarr-io")
                    else "",
                    cluster,
                )
                if row.get("status") != "ok" or row["wall_s"] > args.slow_seconds:
                    slow.add((method, cluster))
    if args.dask_ml:
        n = args.dask_ml_frames
        full_mp = frames * SIZE * SIZE / 1e6
        record(
            "ours",
            FULL_FRAME,
            "subset",
            n,
            run_child("ours", frames, n, args.scheduler, FULL_FRAME, args.timeout),
            "same subset as dask-ml",
        )
        res = run_child("dask-ml", frames, n, args.scheduler, FULL_FRAME, args.timeout)
        if res.get("status") == "ok":
            res["extrapolated_full_s"] = res["wall_s"] * full_mp / res["megapixels"]
        record(
            "dask-ml",
            FULL_FRAME,
            "subset",
            n,
            res,
            f"first {n} of {frames} frames; the full-stack time is a linear extrapolation in "
            "pixels (assumes the same iteration count), not a measurement",
        )

    info.update(
        elapsed_s=round(time.perf_counter() - t_start, 1),
        stack={
            "frames": frames,
            "frame_size": f"{SIZE}x{SIZE}",
            "nbytes": frames * SIZE * SIZE * 3,
            "recipe": RECIPE,
            "stores": {chunk_tag(c): _shown_path(store_path(c, frames)) for c in needed},
        },
        scheduler=f"dask '{args.scheduler}' scheduler, default workers ({os.cpu_count()} cores)",
    )
    _runinfo.save_env(env_path, info, merge=bool(kept))
    print(f"wrote {csv_path} in {info['elapsed_s']:.0f} s")
    import make_report

    if args.csv_name != CSV_NAME:
        return 0  # the report reads dask.csv only
    print(make_report.format_summary(make_report.targets_summary(args.results, only="dask")))
    if not args.no_report:
        make_report.main(["--results", str(args.results)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
