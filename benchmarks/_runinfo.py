"""Facts about a benchmark run, shared by every script in benchmarks/.

Every row a benchmark writes carries the `run_id` of the run that measured it, and every
results/*_env.json lists those runs (date, the git commit and source hash of the package that
was measured, machine, BLAS), so the report can name the run behind each figure.

Nothing here is imported by the package or the tests.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import inspect
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results"

PEER_DISTRIBUTIONS = (
    "napari-kmeans-filter",
    "numpy",
    "scikit-learn",
    "scikit-image",
    "pillow",
    "imagequant",
    "opencv-python-headless",
    "dask",
    "distributed",
    "dask-ml",
    "zarr",
    "scipy",
    "numba",
    "threadpoolctl",
)


def package_dir() -> Path | None:
    """Directory of the napari_kmeans_filter that `import` would load (not imported here).

    The benchmarks measure whatever is importable (the editable install, or PYTHONPATH), which
    need not be the checkout the scripts live in: the version is taken from there.
    """
    spec = importlib.util.find_spec("napari_kmeans_filter")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).resolve().parent


def core_version() -> str:
    """'<git HEAD of the measured package's repo>+src<hash of its *.py as on disk now>'.

    The core changes while benchmarks run: each row records the version it measured, and
    the source hash tells an uncommitted edit from the commit.
    """
    pkg = package_dir()
    if pkg is None:
        return "not-installed"
    digest = hashlib.sha1()
    for path in sorted(pkg.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    head = ""
    try:
        head = subprocess.run(
            ["git", "-C", str(pkg), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        pass
    return f"{head or 'nogit'}+src{digest.hexdigest()[:8]}"


def git_facts() -> dict:
    """Commit, branch and dirty state of the measured package's checkout."""
    pkg = package_dir()
    out = {"package_dir": str(pkg) if pkg else None}
    if pkg is None:
        return out

    def git(*args):
        try:
            return subprocess.run(
                ["git", "-C", str(pkg), *args], capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            return ""

    out["commit"] = git("rev-parse", "HEAD")
    out["branch"] = git("rev-parse", "--abbrev-ref", "HEAD")
    status = git("status", "--porcelain", "--", ".")
    out["dirty"] = bool(status)
    return out


def blas_summary(pools: list[dict]) -> str:
    """'openblas 0.3.30 Haswell x2 (scipy_openblas); ...' from threadpoolctl records."""
    parts = []
    for p in pools:
        bits = [p.get("internal_api"), p.get("version"), p.get("architecture")]
        txt = " ".join(str(b) for b in bits if b) + f" x{p.get('num_threads')}"
        if p.get("prefix"):
            txt += f" ({p['prefix']})"
        parts.append(txt)
    return "; ".join(parts)


def _threadpools(load_peers: bool) -> list[dict]:
    import threadpoolctl

    if load_peers:
        # load the native libraries of the peers so threadpoolctl sees their BLAS / OpenMP
        for mod in ("numpy", "scipy.linalg", "sklearn.cluster", "cv2"):
            try:
                __import__(mod)
            except Exception:
                pass
    return [
        {k: p.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "prefix")}
        for p in threadpoolctl.threadpool_info()
    ]


def quantize_capabilities() -> dict:
    """Which parameters the installed `quantize` / `apply_palette` accept (by signature)."""
    try:
        import napari_kmeans_filter as nkf
    except Exception as exc:  # a broken core is a result, not a crash
        return {"error": f"{type(exc).__name__}: {exc}"}
    caps = {}
    try:
        params = inspect.signature(nkf.quantize).parameters
        caps["quantize"] = list(params)
        caps["speed"] = "speed" in params
        if caps["speed"] and params["speed"].default is not inspect.Parameter.empty:
            caps["default_speed"] = params["speed"].default
        caps["dither"] = "dither" in params
        caps["auto_k"] = "target_psnr" in params
    except (TypeError, ValueError, AttributeError) as exc:
        caps["error"] = f"{type(exc).__name__}: {exc}"
    if hasattr(nkf, "apply_palette"):
        caps["apply_palette_dither"] = "dither" in inspect.signature(nkf.apply_palette).parameters
    caps["max_n_colors"] = getattr(nkf, "MAX_N_COLORS", None)
    return caps


def run_info(load_peers: bool = True) -> dict:
    """Everything the report needs to name this run."""
    now = datetime.now(timezone.utc)
    vers = {}
    for dist in PEER_DISTRIBUTIONS:
        try:
            vers[dist] = md.version(dist)
        except md.PackageNotFoundError:
            vers[dist] = None
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    pools = _threadpools(load_peers)
    return {
        "run_id": now.strftime("%Y%m%dT%H%M%SZ"),
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "core_version": core_version(),
        "git": git_facts(),
        "capabilities": quantize_capabilities(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "n_cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "loadavg_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "versions": vers,
        "threadpools": pools,
        "blas": blas_summary(pools),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }


def load_env(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_env(path: Path, info: dict, merge: bool) -> dict:
    """Write `info` as the env file; `runs` keeps every run behind a merged CSV, newest last."""
    runs = load_env(path).get("runs", []) if merge else []
    runs = [r for r in runs if r.get("run_id") != info.get("run_id")]
    runs.append({k: v for k, v in info.items() if k != "runs"})
    out = {**info, "runs": runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)
    return out


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
