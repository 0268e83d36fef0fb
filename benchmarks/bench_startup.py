#!/usr/bin/env python
"""Benchmark 3: cold and warm starts, as a user meets them (issue 8, "no cold start").

    python benchmarks/bench_startup.py             # 5 fresh processes per case, ~1-2 min
    python benchmarks/bench_startup.py --repeats 2 --no-cli-12mp

Cases, each a whole fresh Python process timed from spawn to exit by this script:
  python       `python -c "import numpy"`: what any process pays before the package
  api          `python -c "import numpy as np; from napari_kmeans_filter import quantize;
               img = np.load(cat); quantize(img, 16, random_state=0); quantize(img, 16, ...)"`
               on the cat (chelsea, 0.14 MP). Inside the process it records the import time,
               the first call (cold) and a second call on the same image (warm), which
               heavy libraries the import loaded (scikit-learn, scipy, numba, dask, ...), and
               the wall-clock moment of the first result, so "spawn to first result" is the
               cold start a script meets.
  api-fresh-numba-cache  the api case with NUMBA_CACHE_DIR pointing at an empty directory:
               a first-ever run that compiles whatever the core caches (only when numba is
               installed; the same as api when the core does not use numba); 2 runs at most.
  cli          `napari-kmeans-filter cat.png -k 16 -o out.png` (the console script; or
               `python -m napari_kmeans_filter` when it is not on PATH)
  cli-12mp     the same on the 12 MP camera-like mosaic saved as PNG (writes a 12 MP indexed PNG)
  cli-12mp-optimize  with --optimize, when the CLI has that option
One untimed process per case first, so every timed one finds the OS file cache warm:
"cold" means a fresh interpreter, not a cold disk. One extra `python -X importtime` process
records what the import costs, module by module (top-level packages only).
Results: <results>/startup.csv (+ startup_env.json); the report is regenerated.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
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
from _images import DATA_DIR, get_image  # noqa: E402

CSV_NAME = "startup.csv"
ENV_NAME = "startup_env.json"
HEAVY = ("sklearn", "scipy", "numba", "dask", "skimage", "PIL", "napari", "qtpy", "tifffile")

FIELDS = [
    "case",
    "repeat",
    "status",
    "wall_s",
    "spawn_to_first_result_s",
    "import_s",
    "first_call_s",
    "warm_call_s",
    "heavy_modules_at_import",
    "heavy_modules_after_call",
    "output_bytes",
    "command",
    "note",
    "core_version",
    "run_id",
    "timestamp",
]

API_CODE = """
import time, sys, json
t0 = time.perf_counter()
import numpy as np
from napari_kmeans_filter import quantize
t1 = time.perf_counter()
heavy = {heavy!r}
at_import = sorted(m for m in heavy if m in sys.modules)
img = np.load({path!r})
t2 = time.perf_counter()
quantize(img, 16, random_state=0)
t3 = time.perf_counter()
first_result = time.time()
quantize(img, 16, random_state=0)
t4 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "first_call_s": t3 - t2, "warm_call_s": t4 - t3,
    "first_result_epoch": first_result, "heavy_modules_at_import": " ".join(at_import),
    "heavy_modules_after_call": " ".join(sorted(m for m in heavy if m in sys.modules))}}))
"""


def inputs() -> dict:
    """The cat as .npy and .png and the 12 MP mosaic as .png, cached in _data/."""
    from PIL import Image

    d = DATA_DIR / "startup"
    d.mkdir(parents=True, exist_ok=True)
    paths = {"cat_npy": d / "chelsea.npy", "cat_png": d / "chelsea.png"}
    if not paths["cat_npy"].exists():
        np.save(paths["cat_npy"], get_image("chelsea"))
    if not paths["cat_png"].exists():
        Image.fromarray(get_image("chelsea")).save(paths["cat_png"])
    return paths


def mosaic_png() -> Path:
    from PIL import Image

    path = DATA_DIR / "startup" / "mosaic12.png"
    if not path.exists():
        print(f"writing {path} (once) ...", flush=True)
        tmp = path.with_suffix(".tmp.png")
        Image.fromarray(get_image("mosaic12")).save(tmp, compress_level=1)
        tmp.replace(path)
    return path


def cli_command() -> tuple[list[str], str]:
    exe = shutil.which("napari-kmeans-filter")
    if exe:
        return [exe], "napari-kmeans-filter"
    return [sys.executable, "-m", "napari_kmeans_filter"], "python -m napari_kmeans_filter"


def cli_has(option: str) -> bool:
    cmd, _ = cli_command()
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=False)
    return option in proc.stdout


def timed_process(cmd, env=None, timeout=600) -> tuple[float, subprocess.CompletedProcess, float]:
    spawn_epoch = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    return time.perf_counter() - t0, proc, spawn_epoch


def import_profile() -> dict:
    """Cumulative import time (s, >= 10 ms) of each top-level package that
    `from napari_kmeans_filter import quantize` loads, from `python -X importtime`."""
    code = "from napari_kmeans_filter import quantize"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
    )
    top = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            cumulative = int(parts[1].strip())
        except ValueError:
            continue  # the header line
        name = parts[2].strip()
        # a package is listed once, where it is first imported (nested under its importer):
        # its cumulative time includes what it imports in turn
        if "." not in name and cumulative >= 10_000:
            top[name] = cumulative / 1e6
    return dict(sorted(top.items(), key=lambda kv: -kv[1]))


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=5, help="timed fresh processes per case")
    p.add_argument("--no-cli-12mp", action="store_true", help="skip the 12 MP CLI cases")
    p.add_argument("--results", type=Path, default=_runinfo.DEFAULT_RESULTS)
    p.add_argument("--no-report", action="store_true")
    args = p.parse_args(argv)

    info = _runinfo.run_info(load_peers=False)
    run_id, version = info["run_id"], info["core_version"]
    print(f"run {run_id}; core {version} from {info['git'].get('package_dir')}")
    paths = inputs()
    cli, cli_name = cli_command()
    out_dir = Path(tempfile.mkdtemp(prefix="nkf_startup_"))
    code = API_CODE.format(heavy=HEAVY, path=str(paths["cat_npy"]))
    cases = {
        "python": ([sys.executable, "-c", "import numpy"], None, "python -c 'import numpy'"),
        "api": (
            [sys.executable, "-c", code],
            None,
            "python -c 'from napari_kmeans_filter import quantize; quantize(cat, 16) x2'",
        ),
    }
    try:
        import numba  # noqa: F401

        cases["api-fresh-numba-cache"] = (
            [sys.executable, "-c", code],
            "numba",
            "the api case with an empty NUMBA_CACHE_DIR",
        )
    except ImportError:
        pass
    cases["cli"] = (
        [*cli, str(paths["cat_png"]), "-k", "16", "-o", "{out}"],
        None,
        f"{cli_name} chelsea.png -k 16 -o out.png",
    )
    if not args.no_cli_12mp:
        big = mosaic_png()
        cases["cli-12mp"] = (
            [*cli, str(big), "-k", "16", "-o", "{out}"],
            None,
            f"{cli_name} mosaic12.png -k 16 -o out.png",
        )
        if cli_has("--optimize"):
            cases["cli-12mp-optimize"] = (
                [*cli, str(big), "-k", "16", "--optimize", "-o", "{out}"],
                None,
                f"{cli_name} mosaic12.png -k 16 --optimize -o out.png",
            )

    rows = []
    t_start = time.perf_counter()
    try:
        for case, (cmd, special, shown) in cases.items():
            # rep -1: untimed, warms the file cache. A first-ever run (empty numba cache) may
            # compile for tens of seconds and needs no warming (the api case did it): 2 runs.
            first = 0 if special == "numba" else -1
            n = min(args.repeats, 2) if special == "numba" else args.repeats
            for rep in range(first, n):
                out = out_dir / f"{case}_{rep + 1}.png"
                run_cmd = [c.replace("{out}", str(out)) for c in cmd]
                env = None
                tmp_cache = None
                if special == "numba":
                    tmp_cache = tempfile.mkdtemp(prefix="nkf_numba_")
                    env = {**os.environ, "NUMBA_CACHE_DIR": tmp_cache}
                wall, proc, spawn = timed_process(run_cmd, env=env)
                if tmp_cache:
                    shutil.rmtree(tmp_cache, ignore_errors=True)
                if rep < 0:
                    out.unlink(missing_ok=True)
                    continue
                row = {
                    "case": case,
                    "repeat": rep + 1,
                    "wall_s": f"{wall:.4f}",
                    "command": shown,
                    "core_version": version if case != "python" else "",
                    "run_id": run_id,
                    "timestamp": _runinfo.utc_stamp(),
                }
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
                    row.update(status="error", note=" | ".join(tail)[:300])
                else:
                    row["status"] = "ok"
                    if case.startswith("api"):
                        res = json.loads(proc.stdout.strip().splitlines()[-1])
                        row.update(
                            spawn_to_first_result_s=f"{res['first_result_epoch'] - spawn:.4f}",
                            import_s=f"{res['import_s']:.4f}",
                            first_call_s=f"{res['first_call_s']:.4f}",
                            warm_call_s=f"{res['warm_call_s']:.4f}",
                            heavy_modules_at_import=res["heavy_modules_at_import"],
                            heavy_modules_after_call=res["heavy_modules_after_call"],
                        )
                    if out.exists():
                        row["output_bytes"] = out.stat().st_size
                        out.unlink()
                rows.append(row)
                extra = (
                    f" (import {float(row['import_s']):.3f}, first call "
                    f"{float(row['first_call_s']):.3f}, warm call {float(row['warm_call_s']):.3f})"
                    if row.get("import_s")
                    else ""
                )
                print(f"  {case:24s} #{rep + 1}: {row['status']} {wall:7.3f} s{extra}", flush=True)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)

    profile = import_profile()
    print("import cost of `from napari_kmeans_filter import quantize` (cumulative s):")
    for name, sec in list(profile.items())[:10]:
        print(f"  {name:24s} {sec:.3f}")
    csv_path, env_path = args.results / CSV_NAME, args.results / ENV_NAME
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    info.update(
        elapsed_s=round(time.perf_counter() - t_start, 1),
        import_profile_s={k: round(v, 4) for k, v in profile.items()},
        cli=cli_name,
    )
    _runinfo.save_env(env_path, info, merge=False)
    for case in cases:
        ok = [float(r["wall_s"]) for r in rows if r["case"] == case and r["status"] == "ok"]
        if ok:
            print(f"{case:24s} median {statistics.median(ok):.3f} s over {len(ok)} processes")
    print(f"wrote {csv_path}")
    import make_report

    print(make_report.format_summary(make_report.targets_summary(args.results, only="startup")))
    if not args.no_report:
        make_report.main(["--results", str(args.results)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
