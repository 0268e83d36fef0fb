#!/usr/bin/env python
"""Benchmark 5 (issue 21): the command line as a whole process, against pngquant and ImageMagick.

    python benchmarks/bench_cli.py                      # small photos + 12 and 24 MP, ~10-15 min
    python benchmarks/bench_cli.py --quick              # small photos only, k=16 and 256, ~3 min
    python benchmarks/bench_cli.py --images chelsea mosaic12 --k 256 --repeats 3
    python benchmarks/bench_cli.py --no-profile         # skip -X importtime and the kernel count
    python benchmarks/bench_cli.py --quick --ref-src /path/to/other/checkout/src   # A/B
    python benchmarks/bench_cli.py --images chelsea --k 16 --cases ours-cold       # first-ever run

Every case is one fresh process on a PNG file, timed by this script from spawn to exit;
round-robin over the cases of a file (so load from other processes hits every tool alike),
median of --repeats runs (5; --big-repeats 3 for 12 MP and larger), after one untimed run of
each case (it warms the OS file cache and, for ours, numba's kernel cache):

  ours            napari-kmeans-filter IN -k K -o OUT --overwrite     (the console script)
  ours-speed10    the same with --speed 10
  pngquant        pngquant --nofs K --force --output OUT IN           (Debian's pngquant)
  pngquant-speed10  the same with --speed 10
  imagemagick     convert IN +dither -colors K OUT                    (ImageMagick 6)
  floor-numba     python -c "import numpy, numba, PIL.Image; read IN; write an 8-bit PNG of
                  the same size": the least any Python + numba tool pays on this file
  floor-python    the same without numba
  ours-ref        with --ref-src DIR: ours from another source tree (PYTHONPATH=DIR), in turn
                  with the others: an A/B of a change in the same run
  ours-cold       with --cold: ours with NUMBA_CACHE_DIR an empty directory each run (a
                  first-ever run: every kernel compiled), on the first image at the first k only,
                  --cold-repeats runs (2), no untimed run

Each row also gives `above_floor_s` (its median less floor-numba's on the same file, timed
in the same round-robin: each k's block times the floor again) and `x_pngquant` (its median /
pngquant's at the same k), and the same two from the CPU times (`cpu_above_floor_s`,
`cpu_x_pngquant`).

Before timing, the measured package's modules (and --ref-src's) are compiled to bytecode
(`compileall`, as pip does when it installs a wheel): a machine with PYTHONDONTWRITEBYTECODE=1
and an editable install otherwise compiles every module from source in every process (~0.06 s
of CPU on a small file's call), which no installed user pays.

The CPU time (user + sys, all threads) of each process is recorded too: on a loaded machine
it moves less than the wall time. MSE: each output PNG is read back (Pillow, as RGB) and
compared with the input, over all pixels and channels. The load average is in every row.

Two profiles of our command line on the first small photo (at k=16):
  importtime      `python -X importtime -m napari_kmeans_filter IN -k 16 -o OUT`: the
                  cumulative import time of every top-level package and of each of our
                  modules -> <results>/cli_importtime.txt and the env file
  kernels         the same call in a process that wraps numba's Dispatcher.compile (numba
                  imported first, outside the timed part): how many compiled kernels the call
                  loads from numba's cache (or compiles), each kernel and signature once (a
                  thread waiting for a kernel another is loading calls compile too: counted
                  in `compile_calls`), with the time each took -> <results>/cli_kernels.json
Results: <results>/cli.csv (+ cli_env.json); `make_report.py --summary` prints the targets.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _runinfo  # noqa: E402
from _images import DATA_DIR, SMALL_PHOTOS, get_image  # noqa: E402

CSV_NAME = "cli.csv"
ENV_NAME = "cli_env.json"
BIG_IMAGES = ("mosaic12", "mosaic24")
KS = (16, 256)
CASES = (
    "floor-python",
    "floor-numba",
    "ours",
    "ours-speed10",
    "pngquant",
    "pngquant-speed10",
    "imagemagick",
)
OPTIONAL_CASES = ("ours-ref", "ours-cold")

FIELDS = [
    "image",
    "megapixels",
    "k",
    "case",
    "status",
    "n_runs",
    "time_median_s",
    "time_min_s",
    "time_max_s",
    "times_s",
    "cpu_median_s",
    "above_floor_s",
    "cpu_above_floor_s",
    "x_pngquant",
    "cpu_x_pngquant",
    "mse",
    "psnr",
    "n_colors_out",
    "output_bytes",
    "loadavg_1min",
    "command",
    "note",
    "core_version",
    "run_id",
    "timestamp",
]

FLOOR_CODE = (
    "import numpy, {numba}PIL.Image, sys; "
    "a = numpy.asarray(PIL.Image.open(sys.argv[1]).convert('RGB')); "
    "PIL.Image.fromarray(numpy.ascontiguousarray(a[..., 1])).save(sys.argv[2])"
)

# Run inside a process of its own: numba imported first, Dispatcher.compile wrapped, then the
# console script's main(): every kernel the call loads (from the cache or compiled) is counted.
KERNEL_CODE = r"""
import json, sys, time, threading
import numba
from numba.core import dispatcher
records, depth = [], threading.local()
original = dispatcher.Dispatcher.compile
def compile(self, sig):
    d = getattr(depth, "n", 0)
    depth.n = d + 1
    t0 = time.perf_counter()
    try:
        return original(self, sig)
    finally:
        depth.n = d
        fn = self.py_func
        records.append({"name": f"{fn.__module__}.{fn.__qualname__}", "depth": d,
                        "signature": str(sig), "seconds": time.perf_counter() - t0})
dispatcher.Dispatcher.compile = compile
loads = {"hits": 0, "misses": 0}
try:
    from numba.core import caching
    # _load_overload: what numba's load_overload and the package's lean one both call
    name = "_load_overload" if hasattr(caching.Cache, "_load_overload") else "load_overload"
    orig_load = getattr(caching.Cache, name)
    def load_overload(self, sig, target_context):
        res = orig_load(self, sig, target_context)
        loads["hits" if res is not None else "misses"] += 1
        return res
    setattr(caching.Cache, name, load_overload)
except Exception:
    pass
sys.argv = ["napari-kmeans-filter", *sys.argv[2:]]
out_json = __ARGV1__
t0 = time.perf_counter()
from napari_kmeans_filter.cli import main
t1 = time.perf_counter()
code = 0
try:
    code = main() or 0
except SystemExit as e:
    code = e.code or 0
t2 = time.perf_counter()
# A thread that asks for a kernel another one is loading waits for it (numba's lock) and
# records a second call: each kernel and signature counts once, its first call to end.
calls = [r for r in records if r["depth"] == 0]
top = list({(r["name"], r["signature"]): r for r in reversed(calls)}.values())
json.dump({"exit": code, "import_cli_s": t1 - t0, "run_s": t2 - t1,
           "kernels_loaded": len(top), "compile_calls": len(calls),
           "compiles_all_depths": len(records),
           "kernel_seconds": sum(r["seconds"] for r in top),
           "cache_hits": loads["hits"], "cache_misses": loads["misses"],
           "kernels": sorted(top, key=lambda r: -r["seconds"])}, open(out_json, "w"), indent=1)
"""


# --------------------------------------------------------------------------- inputs
def input_png(name: str) -> Path:
    """The benchmark image as a PNG file (cached in _data/cli/); Pillow's default compression
    for the small photos, level 1 for the big mosaics (a camera's fast PNG)."""
    from PIL import Image

    d = DATA_DIR / "cli"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.png"
    if not path.exists():
        img = get_image(name)
        tmp = path.with_suffix(".tmp.png")
        level = 1 if img.shape[0] * img.shape[1] > 4e6 else 6
        Image.fromarray(img).save(tmp, compress_level=level)
        tmp.replace(path)
    return path


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def mse_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from _methods import mse_psnr as f

    return f(a, b)


def n_colors(img: np.ndarray) -> int:
    flat = img.reshape(-1, 3).astype(np.uint32)
    return int(np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]).size)


# --------------------------------------------------------------------------- tools
def ours_command() -> list[str]:
    """The console script beside this Python (as a virtual environment has it; a version
    manager's shim on PATH, e.g. pyenv's, adds ~0.05 s of its own), else the one on PATH."""
    beside = Path(sys.executable).parent / "napari-kmeans-filter"
    exe = str(beside) if beside.exists() else shutil.which("napari-kmeans-filter")
    return [exe] if exe else [sys.executable, "-m", "napari_kmeans_filter"]


def imagemagick_command() -> list[str] | None:
    """ImageMagick's convert: `magick convert` (7) or convert-im6 (Debian's 6), checked by its
    -version text (a `convert` that is not ImageMagick is not used)."""
    for cand in (["magick", "convert"], ["convert-im6.q16"], ["convert-im6"], ["convert"]):
        exe = shutil.which(cand[0])
        if not exe:
            continue
        try:
            out = subprocess.run([exe, *cand[1:], "-version"], capture_output=True, text=True)
        except OSError:
            continue
        if "ImageMagick" in out.stdout.splitlines()[0] if out.stdout else False:
            return [exe, *cand[1:]]
    return None


def tool_versions() -> dict:
    v = {}
    if shutil.which("pngquant"):
        v["pngquant"] = subprocess.run(
            ["pngquant", "--version"], capture_output=True, text=True
        ).stdout.strip()
    im = imagemagick_command()
    if im:
        first = subprocess.run([*im, "-version"], capture_output=True, text=True).stdout
        v["imagemagick"] = first.splitlines()[0].strip()
    return v


def command(case: str, src: Path, out: Path, k: int) -> list[str] | None:
    if case.startswith("floor"):
        numba = "numba, " if case == "floor-numba" else ""
        return [sys.executable, "-c", FLOOR_CODE.format(numba=numba), str(src), str(out)]
    if case.startswith("ours"):
        extra = ["--speed", "10"] if case == "ours-speed10" else []
        return [*ours_command(), str(src), "-k", str(k), *extra, "-o", str(out), "--overwrite"]
    if case.startswith("pngquant"):
        if not shutil.which("pngquant"):
            return None
        extra = ["--speed", "10"] if case == "pngquant-speed10" else []
        return ["pngquant", "--nofs", *extra, "--force", "--output", str(out), str(k), str(src)]
    if case == "imagemagick":
        im = imagemagick_command()
        return None if im is None else [*im, str(src), "+dither", "-colors", str(k), str(out)]
    raise KeyError(case)


def shown(case: str, name: str, k: int) -> str:
    f = f"{name}.png"
    return {
        "floor-python": f"python -c 'import numpy, PIL.Image; read {f}; write an 8-bit PNG'",
        "floor-numba": f"python -c 'import numpy, numba, PIL.Image; read {f}; write an 8-bit PNG'",
        "ours": f"napari-kmeans-filter {f} -k {k} -o out.png --overwrite",
        "ours-speed10": f"napari-kmeans-filter {f} -k {k} --speed 10 -o out.png --overwrite",
        "ours-ref": f"PYTHONPATH=REF napari-kmeans-filter {f} -k {k} -o out.png --overwrite",
        "ours-cold": f"NUMBA_CACHE_DIR=$(mktemp -d) napari-kmeans-filter {f} -k {k} -o out.png",
        "pngquant": f"pngquant --nofs --force --output out.png {k} {f}",
        "pngquant-speed10": f"pngquant --nofs --speed 10 --force --output out.png {k} {f}",
        "imagemagick": f"convert {f} +dither -colors {k} out.png",
    }[case]


def compile_bytecode(package: Path | None) -> None:
    """Write the package's .pyc files, as installing a wheel does (see the docstring)."""
    import compileall

    if package is not None and package.is_dir():
        compileall.compile_dir(str(package), quiet=1)


def env_clean() -> dict:
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def timed(cmd, env, timeout=900):
    """(wall seconds, CPU seconds of the process and its threads (user + sys), the process)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, proc


# --------------------------------------------------------------------------- profiles
def importtime_profile(src: Path, out_dir: Path) -> tuple[dict, str]:
    """Cumulative import time (s) of every top-level package >= 5 ms and of each of our own
    modules, as `python -X importtime -m napari_kmeans_filter IN -k 16 -o OUT` loads them
    (the whole call: imports done lazily during the run count too)."""
    out = out_dir / "importtime.png"
    cmd = [sys.executable, "-X", "importtime", "-m", "napari_kmeans_filter", str(src)]
    proc = subprocess.run(
        [*cmd, "-k", "16", "-o", str(out), "--overwrite"],
        capture_output=True,
        text=True,
        env=env_clean(),
    )
    top, ours = {}, {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            cumulative = int(parts[1].strip())
        except ValueError:
            continue
        raw = parts[2]
        name = raw.strip()
        nested = len(raw) - len(raw.lstrip())  # importtime indents by 2 per level
        if name.startswith("napari_kmeans_filter"):
            ours[name] = max(ours.get(name, 0), cumulative / 1e6)
        elif "." not in name and cumulative >= 5_000:
            top[name] = (cumulative / 1e6, nested)
    top_sorted = {k: round(v[0], 4) for k, v in sorted(top.items(), key=lambda kv: -kv[1][0])}
    ours_sorted = {k: round(v, 4) for k, v in sorted(ours.items(), key=lambda kv: -kv[1])}
    return {"packages": top_sorted, "ours": ours_sorted}, proc.stderr


def kernel_profile(src: Path, out_dir: Path, k: int = 16) -> dict:
    out_json = out_dir / "kernels.json"
    code = KERNEL_CODE.replace("__ARGV1__", repr(str(out_json)))
    cmd = [sys.executable, "-c", code, "_", str(src), "-k", str(k)]
    cmd += ["-o", str(out_dir / "kernels.png"), "--overwrite"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env_clean())
    if not out_json.exists():
        return {"error": (proc.stderr or proc.stdout).strip()[-500:]}
    data = json.loads(out_json.read_text())
    data["image"], data["k"] = src.stem, k
    return data


def cold_row(src: Path, k: int, repeats: int, out_dir: Path, env: dict) -> dict:
    """ours-cold: first-ever runs, each with an empty NUMBA_CACHE_DIR (every kernel compiled)."""
    ref = read_rgb(src)
    walls, cpus = [], []
    row = dict(image=src.stem, megapixels=f"{ref.shape[0] * ref.shape[1] / 1e6:.3f}", k=k)
    row.update(case="ours-cold", command=shown("ours-cold", src.stem, k))
    load = []
    for _ in range(repeats):
        cache = Path(tempfile.mkdtemp(prefix="numba_cache_", dir=out_dir))
        load.append(os.getloadavg()[0])
        out = out_dir / "ours-cold.png"
        wall, cpu, proc = timed(
            command("ours-cold", src, out, k), {**env, "NUMBA_CACHE_DIR": str(cache)}
        )
        shutil.rmtree(cache, ignore_errors=True)
        if proc.returncode != 0:
            row.update(status="error", note=(proc.stderr or proc.stdout).strip()[-300:])
            return row
        walls.append(wall)
        cpus.append(cpu)
    got = read_rgb(out_dir / "ours-cold.png")
    mse, psnr = mse_psnr(got, ref)
    row.update(
        status="ok",
        n_runs=len(walls),
        time_median_s=f"{statistics.median(walls):.4f}",
        time_min_s=f"{min(walls):.4f}",
        time_max_s=f"{max(walls):.4f}",
        times_s=" ".join(f"{t:.3f}" for t in walls),
        cpu_median_s=f"{statistics.median(cpus):.4f}",
        mse=f"{mse:.4f}",
        psnr=f"{psnr:.3f}",
        n_colors_out=n_colors(got),
        loadavg_1min=f"{statistics.median(load):.2f}",
        timestamp=_runinfo.utc_stamp(),
    )
    print(
        f"  {src.stem:16s} k={k:<4d} ours-cold (empty numba cache) {walls} s, CPU {cpus} s",
        flush=True,
    )
    return row


def add_relative_columns(rows: list[dict]) -> None:
    """above_floor_s / x_pngquant (and their CPU twins) of every ok row of this run: against
    floor-numba on the same file and pngquant at the same k, both timed in the same
    round-robin as the row."""
    ok = [r for r in rows if r.get("status") == "ok"]
    floor = {(r["image"], str(r["k"])): r for r in ok if r["case"] == "floor-numba"}
    pngquant = {(r["image"], str(r["k"])): r for r in ok if r["case"] == "pngquant"}
    for r in ok:
        for suffix, key in (("", "time_median_s"), ("cpu_", "cpu_median_s")):
            value = float(r[key])
            f = floor.get((r["image"], str(r["k"])))
            if f is not None and not r["case"].startswith("floor"):
                r[f"{suffix}above_floor_s"] = f"{value - float(f[key]):.4f}"
            q = pngquant.get((r["image"], str(r["k"])))
            if q is not None and float(q[key]) > 0:
                r[f"{suffix}x_pngquant"] = f"{value / float(q[key]):.2f}"


def print_table(rows: list[dict]) -> None:
    """The run's figures: median wall (CPU) s, above the floor, x pngquant."""
    print(
        f"{'image':16s} {'MP':>5s} {'k':>4s} {'case':17s} {'wall s':>7s} {'cpu s':>6s} "
        f"{'above floor':>11s} {'x pngquant':>10s} {'MSE':>9s}"
    )
    for r in rows:
        if r.get("status") != "ok":
            print(f"{r['image']:16s} {'':5s} {r.get('k', '')!s:>4s} {r['case']:17s} {r['status']}")
            continue
        print(
            f"{r['image']:16s} {float(r['megapixels']):5.2f} {r.get('k', '')!s:>4s} "
            f"{r['case']:17s} {float(r['time_median_s']):7.3f} {float(r['cpu_median_s']):6.3f} "
            f"{r.get('above_floor_s', ''):>11s} {r.get('x_pngquant', ''):>10s} "
            f"{r.get('mse', ''):>9s}"
        )


# --------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", nargs="+", help=f"default {[*SMALL_PHOTOS, *BIG_IMAGES]}")
    p.add_argument("--k", nargs="+", type=int, default=list(KS))
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES + OPTIONAL_CASES)
    p.add_argument(
        "--ref-src", type=Path, help="add the case ours-ref: ours with PYTHONPATH=REF_SRC"
    )
    p.add_argument("--cold", action="store_true", help="add the case ours-cold")
    p.add_argument("--cold-repeats", type=int, default=2, help="first-ever runs (ours-cold)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (small files)")
    p.add_argument("--big-repeats", type=int, default=3, help="timed runs at >= 4 MP")
    p.add_argument("--quick", action="store_true", help="the small photos only")
    p.add_argument("--no-profile", action="store_true", help="no importtime / kernel count")
    p.add_argument(
        "--fresh", action="store_true", help="discard the existing CSV (default: merge by cell)"
    )
    p.add_argument("--results", type=Path, default=_runinfo.DEFAULT_RESULTS)
    args = p.parse_args(argv)

    images = args.images or (list(SMALL_PHOTOS) if args.quick else [*SMALL_PHOTOS, *BIG_IMAGES])
    info = _runinfo.run_info(load_peers=False)
    run_id, version = info["run_id"], info["core_version"]
    info["tools"] = tool_versions()
    print(f"run {run_id}; core {version}; {info['tools']}", flush=True)
    env = env_clean()
    cases = [c for c in args.cases if c != "ours-cold"]
    if args.ref_src is not None:
        cases += [] if "ours-ref" in cases else ["ours-ref"]
        envs = {"ours-ref": {**env, "PYTHONPATH": str(args.ref_src.resolve())}}
        info["ref_src"] = str(args.ref_src.resolve())
    else:
        cases = [c for c in cases if c != "ours-ref"]
        envs = {}
    compile_bytecode(_runinfo.package_dir())
    if args.ref_src is not None:
        compile_bytecode(args.ref_src.resolve() / "napari_kmeans_filter")
    out_dir = Path(tempfile.mkdtemp(prefix="nkf_cli_"))
    rows = []
    t_start = time.perf_counter()
    try:
        if not args.no_profile:
            src = input_png(images[0])
            prof, raw = importtime_profile(src, out_dir)
            args.results.mkdir(parents=True, exist_ok=True)
            (args.results / "cli_importtime.txt").write_text(raw)
            kern = kernel_profile(src, out_dir)
            (args.results / "cli_kernels.json").write_text(json.dumps(kern, indent=1))
            info["importtime_s"] = prof
            info["kernels"] = {key: kern.get(key) for key in kern if key != "kernels"}
            print("import time (cumulative s):", list(prof["packages"].items())[:12])
            print("our modules:", list(prof["ours"].items())[:8])
            print(
                f"kernels loaded by `-k 16` on {src.name}: {kern.get('kernels_loaded')} "
                f"({kern.get('kernel_seconds', 0):.3f} s), cache hits {kern.get('cache_hits')}, "
                f"misses {kern.get('cache_misses')}",
                flush=True,
            )
        for name in images:
            src = input_png(name)
            ref = read_rgb(src)
            mp = ref.shape[0] * ref.shape[1] / 1e6
            repeats = args.big_repeats if mp >= 4 else args.repeats
            for k in args.k:
                cmds = {}
                for case in cases:
                    # The floor does not depend on k, but the machine drifts between the k's
                    # round-robins (minutes apart): each k's block times its own floor.
                    cmd = command(case, src, out_dir / f"{case}.png", k)
                    if cmd is None:
                        rows.append(
                            dict(image=name, megapixels=f"{mp:.3f}", k=k, case=case,
                                 status="unavailable", note="not installed",
                                 run_id=run_id, timestamp=_runinfo.utc_stamp())
                        )  # fmt: skip
                        continue
                    cmds[case] = cmd
                times = {c: [] for c in cmds}
                cpus = {c: [] for c in cmds}
                failed = {}
                load = []
                for rep in range(-1, repeats):  # rep -1: untimed
                    for case, cmd in cmds.items():
                        if case in failed:
                            continue
                        load.append(os.getloadavg()[0])
                        wall, cpu, proc = timed(cmd, envs.get(case, env))
                        if proc.returncode != 0:
                            tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
                            failed[case] = " | ".join(tail)[:300]
                            continue
                        if rep >= 0:
                            times[case].append(wall)
                            cpus[case].append(cpu)
                for case in cmds:
                    row = dict(
                        image=name,
                        megapixels=f"{mp:.3f}",
                        k=k,
                        case=case,
                        command=shown(case, name, k),
                        core_version=version if case.startswith("ours") else "",
                        note=f"PYTHONPATH={args.ref_src}" if case == "ours-ref" else "",
                        loadavg_1min=f"{statistics.median(load):.2f}",
                        run_id=run_id,
                        timestamp=_runinfo.utc_stamp(),
                    )
                    if case in failed:
                        row.update(status="error", note=failed[case])
                        rows.append(row)
                        print(f"  {name} k={k} {case}: error {failed[case]}", flush=True)
                        continue
                    ts = times[case]
                    out = out_dir / f"{case}.png"
                    row.update(
                        status="ok",
                        n_runs=len(ts),
                        time_median_s=f"{statistics.median(ts):.4f}",
                        time_min_s=f"{min(ts):.4f}",
                        time_max_s=f"{max(ts):.4f}",
                        times_s=" ".join(f"{t:.3f}" for t in ts),
                        cpu_median_s=f"{statistics.median(cpus[case]):.4f}",
                        output_bytes=out.stat().st_size if out.exists() else "",
                    )
                    if not case.startswith("floor") and out.exists():
                        got = read_rgb(out)
                        mse, psnr = mse_psnr(got, ref)
                        row.update(mse=f"{mse:.4f}", psnr=f"{psnr:.3f}", n_colors_out=n_colors(got))
                    out.unlink(missing_ok=True)
                    rows.append(row)
                    print(
                        f"  {name:16s} {mp:6.2f} MP k={k:<4d} {case:17s} "
                        f"{float(row['time_median_s']):7.3f} s  MSE {row.get('mse', '-'):>9s}"
                        f"  load {row['loadavg_1min']}",
                        flush=True,
                    )
        if args.cold or "ours-cold" in args.cases:
            rows.append(cold_row(input_png(images[0]), args.k[0], args.cold_repeats, out_dir, env))
            rows[-1].update(run_id=run_id, core_version=version)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    add_relative_columns(rows)

    csv_path, env_path = args.results / CSV_NAME, args.results / ENV_NAME
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    merge = csv_path.exists() and not args.fresh
    if merge:
        # keep the earlier rows of every (image, k, case) this run did not measure
        done = {(r["image"], str(r.get("k") or ""), r["case"]) for r in rows}
        # and a floor timed once for every k (earlier runs) where this run timed it per k
        done |= {(image, "", case) for image, _, case in done if case.startswith("floor")}
        with open(csv_path, newline="") as f:
            old = [r for r in csv.DictReader(f) if (r["image"], r["k"], r["case"]) not in done]
        rows = old + rows
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    info.update(elapsed_s=round(time.perf_counter() - t_start, 1), script="bench_cli.py")
    if merge and args.no_profile:  # keep the profiles of the run that made them
        earlier = _runinfo.load_env(env_path)
        for key in ("importtime_s", "kernels"):
            if key in earlier:
                info[key] = earlier[key]
    _runinfo.save_env(env_path, info, merge=merge)
    print_table([r for r in rows if r.get("run_id") == run_id])
    print(f"wrote {csv_path}")
    import make_report

    print(make_report.format_summary(make_report.targets_summary(args.results, only="cli")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
