#!/usr/bin/env python
"""Build docs/benchmarks.md and docs/images/bench_*.png from the benchmark CSVs.

Every number in docs/benchmarks.md comes from benchmarks/results/quantize.csv and
benchmarks/results/dask.csv (and their *_env.json); nothing is typed by hand.

    python benchmarks/make_report.py
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DOC = ROOT / "docs" / "benchmarks.md"
IMG_DIR = ROOT / "docs" / "images"
Q_CSV = RESULTS / "quantize.csv"
D_CSV = RESULTS / "dask.csv"

sys.path.insert(0, str(HERE))
from _methods import LABELS  # noqa: E402

METHOD_ORDER = list(LABELS)
PEERS = [m for m in METHOD_ORDER if m != "ours"]

# The targets, as stated by the lead (docs quote them; results decide PASS/FAIL).
T_SPEEDUP_VS_SKLEARN = 30.0  # at 12 MP, k=16: sklearn-all time / our time >= 30
T_RATIO_VS_MEDIANCUT = 0.25  # at 12 MP, k=16: our time / Pillow MEDIANCUT time <= 0.25
T_K64_SECONDS = 2.0  # at 12 MP, k=64: our time < 2 s
T_MEM_FACTOR, T_MEM_EXTRA_MB = 2.0, 200.0  # peak extra memory < 2 x input bytes + 200 MB
T_DASK_RSS_MB = 700.0  # bench_dask: peak RSS <= 700 MB
T_DASK_MPS = 40.0  # bench_dask: >= 40 megapixels / s
BIG = "mosaic12"


def _f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def load_quantize(path=Q_CSV):
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["k"] = int(r["k"])
        for key in (
            "time_median_s",
            "mse_uint8",
            "psnr_uint8",
            "float_mse",
            "peak_extra_mb",
            "megapixels",
            "input_bytes",
            "reported_mse",
            "baseline_rss_mb",
        ):
            r[key] = _f(r.get(key))
    return rows


def load_dask(path=D_CSV):
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _index(rows):
    return {(r["image"], r["method"], r["k"]): r for r in rows}


def _ok(r):
    return r is not None and r.get("status") == "ok" and r.get("time_median_s") is not None


# --------------------------------------------------------------------------- targets
def targets_summary(rows, drows=None):
    """[(name, target, measured, status)] with status PASS / FAIL / NOT MEASURED."""
    idx = _index(rows)
    out = []

    def get(m, k, image=BIG):
        r = idx.get((image, m, k))
        return r if _ok(r) else None

    def why_missing(m, k, image=BIG):
        r = idx.get((image, m, k))
        if r is None:
            return f"no run of {m} at {image} k={k}"
        return f"{m}: {r.get('note') or r.get('status')}"

    ours16, sk16, mc16 = get("ours", 16), get("sklearn-all", 16), get("pillow-mediancut", 16)
    name = "12 MP, k=16: speed-up vs scikit-learn KMeans on all pixels"
    if ours16 and sk16:
        ratio = sk16["time_median_s"] / ours16["time_median_s"]
        out.append(
            (
                name,
                f">= {T_SPEEDUP_VS_SKLEARN:g}x",
                f"{ratio:.1f}x ({sk16['time_median_s']:.2f} s / {ours16['time_median_s']:.3f} s)",
                "PASS" if ratio >= T_SPEEDUP_VS_SKLEARN else "FAIL",
            )
        )
    else:
        out.append(
            (
                name,
                f">= {T_SPEEDUP_VS_SKLEARN:g}x",
                why_missing("ours" if not ours16 else "sklearn-all", 16),
                "NOT MEASURED",
            )
        )
    name = "12 MP, k=16: our time / Pillow MEDIANCUT time"
    if ours16 and mc16:
        ratio = ours16["time_median_s"] / mc16["time_median_s"]
        out.append(
            (
                name,
                f"<= {T_RATIO_VS_MEDIANCUT:g}",
                f"{ratio:.3f} ({ours16['time_median_s']:.3f} s / {mc16['time_median_s']:.3f} s)",
                "PASS" if ratio <= T_RATIO_VS_MEDIANCUT else "FAIL",
            )
        )
    else:
        out.append(
            (
                name,
                f"<= {T_RATIO_VS_MEDIANCUT:g}",
                why_missing("ours" if not ours16 else "pillow-mediancut", 16),
                "NOT MEASURED",
            )
        )
    name = "12 MP, k=64: our time"
    ours64 = get("ours", 64)
    if ours64:
        t = ours64["time_median_s"]
        out.append(
            (name, f"< {T_K64_SECONDS:g} s", f"{t:.3f} s", "PASS" if t < T_K64_SECONDS else "FAIL")
        )
    else:
        out.append((name, f"< {T_K64_SECONDS:g} s", why_missing("ours", 64), "NOT MEASURED"))

    name = "12 MP: our peak extra memory"
    mems = [
        r
        for r in rows
        if r["image"] == BIG and r["method"] == "ours" and r["peak_extra_mb"] is not None
    ]
    if mems:
        worst = max(mems, key=lambda r: r["peak_extra_mb"])
        limit = T_MEM_FACTOR * worst["input_bytes"] / 2**20 + T_MEM_EXTRA_MB
        ks = ", ".join(str(r["k"]) for r in sorted(mems, key=lambda r: r["k"]))
        out.append(
            (
                name,
                f"< {T_MEM_FACTOR:g} x input + {T_MEM_EXTRA_MB:g} MB = {limit:.0f} MB",
                f"{worst['peak_extra_mb']:.0f} MB (worst of k = {ks}: k={worst['k']})"
                + (f"; {worst['note']}" if worst.get("note") else ""),
                "PASS" if worst["peak_extra_mb"] < limit else "FAIL",
            )
        )
    else:
        out.append(
            (
                name,
                f"< {T_MEM_FACTOR:g} x input + {T_MEM_EXTRA_MB:g} MB",
                "no memory run",
                "NOT MEASURED",
            )
        )

    name = "MSE <= best peer, per image and k"
    cells = mse_cells(rows)
    if cells:
        n_pass = sum(c["pass"] for c in cells)
        fails = [c for c in cells if not c["pass"]]
        worst = max(cells, key=lambda c: c["excess"])
        detail = f"{n_pass}/{len(cells)} cells"
        if fails:
            detail += (
                f"; worst {worst['image']} k={worst['k']}: ours {worst['ours']:.2f} vs "
                f"{worst['best_peer']} {worst['best']:.2f} ({100 * worst['excess']:+.2f}%)"
            )
        out.append((name, "every cell", detail, "PASS" if not fails else "FAIL"))
    else:
        out.append((name, "every cell", "no cells with ours and a peer", "NOT MEASURED"))

    drows = load_dask() if drows is None else drows
    full = [
        r
        for r in drows
        if r.get("method") == "ours" and r.get("scope") == "full" and r.get("status") == "ok"
    ]
    if full:
        rss = max(float(r["peak_rss_mb"]) for r in full)
        mps = statistics.median(float(r["mp_per_s"]) for r in full)
        out.append(
            (
                "dask stack: peak RSS of the process",
                f"<= {T_DASK_RSS_MB:g} MB",
                f"{rss:.0f} MB (max of {len(full)} runs)",
                "PASS" if rss <= T_DASK_RSS_MB else "FAIL",
            )
        )
        out.append(
            (
                "dask stack: throughput",
                f">= {T_DASK_MPS:g} MP/s",
                f"{mps:.1f} MP/s (median of {len(full)} runs)",
                "PASS" if mps >= T_DASK_MPS else "FAIL",
            )
        )
    else:
        out.append(
            (
                "dask stack: peak RSS / throughput",
                f"<= {T_DASK_RSS_MB:g} MB, >= {T_DASK_MPS:g} MP/s",
                "bench_dask.py not run",
                "NOT MEASURED",
            )
        )
    return out


def mse_cells(rows):
    """Per (image, k) with our run and >= 1 peer run: ours vs the best peer (uint8 MSE)."""
    by = defaultdict(dict)
    for r in rows:
        if _ok(r) and r["mse_uint8"] is not None:
            by[(r["image"], r["k"])][r["method"]] = r["mse_uint8"]
    cells = []
    for (image, k), d in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        peers = {m: v for m, v in d.items() if m != "ours"}
        if "ours" not in d or not peers:
            continue
        best_peer = min(peers, key=peers.get)
        best = peers[best_peer]
        excess = d["ours"] / best - 1 if best > 0 else (0.0 if d["ours"] == 0 else math.inf)
        cells.append(
            {
                "image": image,
                "k": k,
                "ours": d["ours"],
                "best_peer": best_peer,
                "best": best,
                "excess": excess,
                "pass": d["ours"] <= best,
            }
        )
    return cells


def format_summary(summary):
    lines = ["TARGETS"]
    for name, target, measured, status in summary:
        lines.append(f"  [{status:^12s}] {name}: {measured}  (target {target})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots
def _methods_present(rows):
    present = {r["method"] for r in rows if _ok(r)}
    return [m for m in METHOD_ORDER if m in present]


STYLE = {
    "ours": dict(color="black", marker="o", lw=2.4, zorder=5),
    "sklearn-all": dict(color="tab:blue", marker="s"),
    "sklearn-1000": dict(color="tab:cyan", marker="v"),
    "pillow-mediancut": dict(color="tab:red", marker="^"),
    "pillow-fastoctree": dict(color="tab:orange", marker="<"),
    "dask-ml": dict(color="tab:purple", marker="D"),
    "opencv": dict(color="tab:green", marker="x"),
}


def table_images(rows):
    imgs = []
    for r in rows:
        if r["image"] not in imgs and (not r["image"].startswith("mosaic") or r["image"] == BIG):
            imgs.append(r["image"])
    order = ["chelsea", "astronaut", "coffee", "china", BIG]
    return sorted(imgs, key=lambda i: order.index(i) if i in order else len(order))


def _k_ticks(ax, ks):
    # 15 and 16 overlap on a log axis: label 16 only when 15 is absent
    shown = [k for k in ks if not (k == 16 and 15 in ks)]
    ax.set_xticks(shown)
    ax.set_xticklabels([str(k) for k in shown])
    ax.minorticks_off()


REL_YMAX = 1.30


def plot_mse_vs_k(rows, path):
    """One panel per image: MSE relative to the best method at each k (the k-means methods
    differ by a few percent, invisible on an absolute scale), plus one panel of absolute MSE
    on the 12 MP image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = table_images(rows)
    if not images:
        return None
    panels = [*images, "__abs__"] if BIG in images else list(images)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols, 3.9 * nrows + 0.9), squeeze=False)
    axes = axes.ravel()
    handles = {}
    for ax, image in zip(axes, panels, strict=False):
        absolute = image == "__abs__"
        name = BIG if absolute else image
        sub = [r for r in rows if r["image"] == name and _ok(r) and r["mse_uint8"] is not None]
        best = defaultdict(lambda: math.inf)
        for r in sub:
            best[r["k"]] = min(best[r["k"]], r["mse_uint8"])
        for m in _methods_present(sub):
            pts = sorted((r["k"], r["mse_uint8"]) for r in sub if r["method"] == m)
            xs = [p[0] for p in pts]
            if absolute:
                ys = [p[1] for p in pts]
            else:
                ys = [min(p[1] / best[p[0]], REL_YMAX) for p in pts]
            (h,) = ax.plot(xs, ys, label=LABELS[m], **STYLE.get(m, {}))
            handles[m] = h
        r0 = sub[0] if sub else None
        mp = f" ({r0['megapixels']:.2f} MP)" if r0 else ""
        ax.set_xscale("log")
        _k_ticks(ax, sorted({r["k"] for r in sub}))
        ax.set_xlabel("k (colours)")
        if absolute:
            ax.set_yscale("log")
            ax.set_title(f"{name}{mp}: absolute MSE")
            ax.set_ylabel("MSE of the uint8 result")
        else:
            ax.set_ylim(0.995, REL_YMAX + 0.01)
            ax.set_title(f"{name}{mp}")
            ax.set_ylabel("MSE / best MSE at this k")
            ax.axhline(REL_YMAX, color="grey", lw=0.6, ls=":")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    fig.legend(
        [handles[m] for m in METHOD_ORDER if m in handles],
        [LABELS[m] for m in METHOD_ORDER if m in handles],
        loc="lower center",
        ncol=4,
        frameon=False,
        fontsize=9,
    )
    fig.suptitle(
        f"Quantisation error vs k: MSE relative to the best method at each k (1.0 = best; "
        f"values above {REL_YMAX:.2f} drawn on the dotted line), lower is better"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scaling_rows(rows, k=16):
    return [r for r in rows if r["image"].startswith("mosaic") and r["k"] == k and _ok(r)]


def plot_time_vs_mp(rows, path, k=16):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = scaling_rows(rows, k)
    if not sub:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for m in _methods_present(sub):
        pts = sorted((r["megapixels"], r["time_median_s"]) for r in sub if r["method"] == m)
        if len(pts) < 2 and m != "ours":
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=LABELS[m], **STYLE.get(m, {}))
    at12 = {r["method"]: r["time_median_s"] for r in sub if r["image"] == BIG}
    goals = []
    if "sklearn-all" in at12:
        goals.append(at12["sklearn-all"] / T_SPEEDUP_VS_SKLEARN)
    if "pillow-mediancut" in at12:
        goals.append(at12["pillow-mediancut"] * T_RATIO_VS_MEDIANCUT)
    if goals:
        mp12 = next(r["megapixels"] for r in sub if r["image"] == BIG)
        ax.plot(
            [mp12],
            [min(goals)],
            marker="*",
            ms=14,
            color="gold",
            mec="black",
            ls="none",
            label="target for ours at 12 MP (sklearn-all / 30, MEDIANCUT x 0.25)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    mps = sorted({r["megapixels"] for r in sub})
    ax.set_xticks(mps)
    ax.set_xticklabels([f"{v:.1f}" for v in mps])
    ax.minorticks_off()
    ax.set_xlabel("image size (megapixels, camera-like mosaic)")
    ax.set_ylabel(f"seconds (median), k={k}")
    ax.set_title(f"Time vs image size, k={k} (lower is better)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- markdown
def _md_table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _fmt_t(t):
    if t is None:
        return "-"
    return f"{t:.3f}" if t < 10 else f"{t:.1f}"


def per_image_table(rows, image):
    sub = [r for r in rows if r["image"] == image]
    ks = sorted({r["k"] for r in sub})
    idx = _index(sub)
    best = {}
    for k in ks:
        vals = [r["mse_uint8"] for r in sub if r["k"] == k and _ok(r)]
        best[k] = min(vals) if vals else None
    body = []
    for m in METHOD_ORDER:
        if not any((image, m, k) in idx for k in ks):
            continue
        cells = []
        for k in ks:
            r = idx.get((image, m, k))
            if r is None:
                cells.append("")
            elif not _ok(r):
                cells.append("skipped" if r.get("status") == "skipped" else r.get("status", "?"))
            else:
                mse = r["mse_uint8"]
                mse_txt = (
                    f"**{mse:.1f}**" if best[k] is not None and mse <= best[k] else f"{mse:.1f}"
                )
                cells.append(f"{_fmt_t(r['time_median_s'])} s / {mse_txt}")
        body.append([LABELS[m], *cells])
    return _md_table(["method", *[f"k={k}" for k in ks]], body)


def speed_ratio_table(rows, image=BIG):
    """Our time relative to each peer (peer time / our time) at every k on `image`."""
    idx = _index(rows)
    ks = sorted({r["k"] for r in rows if r["image"] == image and r["method"] == "ours" and _ok(r)})
    body = []
    for m in PEERS:
        cells = []
        for k in ks:
            o, p = idx.get((image, "ours", k)), idx.get((image, m, k))
            cells.append(
                f"{p['time_median_s'] / o['time_median_s']:.2f}x" if _ok(o) and _ok(p) else "-"
            )
        if any(c != "-" for c in cells):
            body.append([LABELS[m], *cells])
    return _md_table(["peer time / our time", *[f"k={k}" for k in ks]], body) if body else ""


def memory_table(rows):
    mem = [r for r in rows if r["peak_extra_mb"] is not None]
    mem.sort(key=lambda r: (r["image"] != BIG, r["image"], r["k"], METHOD_ORDER.index(r["method"])))
    body = []
    for r in mem:
        inp = r["input_bytes"] / 2**20
        limit = T_MEM_FACTOR * inp + T_MEM_EXTRA_MB
        body.append(
            [
                r["image"],
                r["k"],
                LABELS[r["method"]],
                f"{inp:.1f}",
                f"{r['peak_extra_mb']:.1f}",
                f"{r['peak_extra_mb'] / inp:.1f}x",
                f"{limit:.0f}",
                r.get("note") or "",
            ]
        )
    header = [
        "image",
        "k",
        "method",
        "input MiB",
        "peak extra MiB",
        "/ input",
        "target limit MiB",
        "note",
    ]
    return _md_table(header, body)


def scaling_table(rows, k=16):
    sub = scaling_rows(rows, k)
    mps = sorted({(r["megapixels"], r["image"]) for r in sub})
    idx = _index(sub)
    body = []
    for m in _methods_present(sub):
        if sum((image, m, k) in idx for _, image in mps) < 2:
            continue  # only timed at one size (e.g. 12 MP for the per-image table)
        cells = []
        for _, image in mps:
            r = idx.get((image, m, k))
            cells.append(f"{_fmt_t(r['time_median_s'])} s" if r else "-")
        body.append([LABELS[m], *cells])
    skipped = [
        r
        for r in rows
        if r["image"].startswith("mosaic") and r["k"] == k and r.get("status") == "skipped"
    ]
    return _md_table(["method", *[f"{mp:.2f} MP" for mp, _ in mps]], body), skipped


def float_mse_table(rows):
    sub = [r for r in rows if _ok(r) and r["float_mse"] is not None and r["image"] == BIG]
    body = []
    for r in sorted(sub, key=lambda r: (METHOD_ORDER.index(r["method"]), r["k"])):
        body.append([LABELS[r["method"]], r["k"], f"{r['float_mse']:.2f}", f"{r['mse_uint8']:.2f}"])
    return _md_table(["method", "k", "MSE of float centres", "MSE after rounding to uint8"], body)


def dask_table(drows):
    body = []
    for r in drows:
        if r.get("status") != "ok":
            body.append(
                [r["method"], r.get("scope", ""), r.get("frames", ""), *[""] * 6, r.get("note", "")]
            )
            continue
        extra = r.get("extrapolated_full_s")
        note = r.get("note") or ""
        if extra:
            note += f"; extrapolated to the full stack: {float(extra):.0f} s"
        body.append(
            [
                r["method"],
                r["scope"],
                r["frames"],
                f"{float(r['megapixels']):.1f}",
                f"{float(r['wall_s']):.2f} ({float(r['fit_s']):.2f} + {float(r['write_s']):.2f})",
                f"{float(r['mp_per_s']):.1f}",
                f"{float(r['peak_rss_mb']):.0f}",
                f"{float(r['mse']):.2f}" if r.get("mse") else "",
                r.get("core_version", ""),
                note,
            ]
        )
    header = [
        "method",
        "scope",
        "frames",
        "MP",
        "wall s (fit + write labels)",
        "MP/s",
        "peak RSS MB",
        "MSE",
        "core",
        "note",
    ]
    return _md_table(header, body)


def main(argv=None):
    rows = load_quantize()
    drows = load_dask()
    env = (
        json.loads((RESULTS / "quantize_env.json").read_text())
        if (RESULTS / "quantize_env.json").exists()
        else {}
    )
    denv = (
        json.loads((RESULTS / "dask_env.json").read_text())
        if (RESULTS / "dask_env.json").exists()
        else {}
    )
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    p1 = plot_mse_vs_k(rows, IMG_DIR / "bench_mse_vs_k.png")
    p2 = plot_time_vs_mp(rows, IMG_DIR / "bench_time_vs_mp.png")
    summary = targets_summary(rows, drows)

    from _images import GAIN_E_PER_DN, NOISE_SEED, READ_NOISE_DN

    md = []
    md.append("# Benchmarks\n")
    md.append(
        "<!-- GENERATED by benchmarks/make_report.py from benchmarks/results/*.csv; do not edit by "
        "hand. -->\n"
    )
    md.append(
        "How to rerun: see [benchmarks/README.md](../benchmarks/README.md). Every number below was "
        "produced by `benchmarks/bench_quantize.py` / `benchmarks/bench_dask.py` on the machine "
        "described at the end; timings on a shared 2-core machine are noisy, so compare the ratios "
        "measured in the same run rather than absolute seconds.\n"
    )
    if env:
        runs = env.get("runs") or [env]
        md.append(
            "Runs behind `benchmarks/results/quantize.csv` (a selection run replaces only its "
            "own image/method/k rows):\n"
        )
        for run in runs:
            md.append(
                f"- `{run.get('command', '')}` on {run.get('date', '')}, "
                f"{run.get('elapsed_s', '?')} s, core `{run.get('core_version', '?')}`"
            )
        if any(r.get("quick") == "1" for r in rows):
            md.append("- some rows come from `--quick` runs")
        md.append("")
        versions = sorted(
            {r.get("core_version") for r in rows if r["method"] == "ours"} - {None, ""}
        )
        if versions:
            md.append(
                f"Core measured (git HEAD + hash of `src/napari_kmeans_filter/*.py`): "
                f"{', '.join(f'`{v}`' for v in versions)}"
                + (
                    " -- **more than one: the core changed between runs**"
                    if len(versions) > 1
                    else ""
                )
                + ".\n"
            )

    md.append("## Targets\n")
    md.append(
        _md_table(
            ["target", "goal", "measured", "result"],
            [[n, t, m, f"**{s}**"] for n, t, m, s in summary],
        )
    )
    md.append("")

    md.append("## Methods\n")
    md.append(
        "Each method gets the RGB uint8 image and k and must return the RGB uint8 image a user "
        "would "
        "save; everything in between is timed (float reconstructions are rounded to uint8). "
        "Time is the median of 3 runs, or 1 run when the first run took longer than 10 s. "
        "Each method is run once on a 64x64 crop first (imports, JIT, thread pools), untimed.\n"
    )
    body = [
        ["ours", "`quantize(img, k, random_state=0)`; `.image`"],
        [
            "sklearn-all",
            "`KMeans(n_clusters=k, n_init=1, random_state=0).fit(pixels)` on every pixel as "
            "float32, "
            "`centres[labels_]`",
        ],
        [
            "sklearn-1000",
            "scikit-learn's *Color Quantization using K-Means* example: image/255 as float64, "
            "`shuffle(..., n_samples=1000, random_state=0)`, `KMeans(n_clusters=k, "
            "random_state=0)`, "
            "`predict` on all pixels",
        ],
        [
            "pillow-mediancut / -fastoctree",
            "`Image.fromarray(img).quantize(k, method=..., dither=Dither.NONE).convert('RGB')`",
        ],
        [
            "dask-ml",
            "as in the seed article: the uint8 pixel vector `da.from_array(img.reshape(-1, 3))` "
            "(default chunks), `dask_ml.cluster.KMeans(n_clusters=k, random_state=0).fit(...)` "
            "with its "
            "defaults (k-means\\|\\| init), `centres[labels_]`. With uint8 input dask-ml keeps its "
            "centres in uint8 (truncated every iteration): that is what the seed's code does.",
        ],
        [
            "opencv",
            "`cv2.kmeans(float32 pixels, k, None, (EPS+MAX_ITER, 10, 1.0), attempts=1, "
            "KMEANS_PP_CENTERS)` after `cv2.setRNGSeed(0)`, as in OpenCV's tutorial",
        ],
    ]
    md.append(_md_table(["name", "what is timed"], body))
    md.append("")
    md.append(
        "Images: `skimage.data` chelsea (the cat), astronaut, coffee; scikit-learn's `china.jpg`; "
        "and "
        "`mosaic<MP>`, a camera-like image built from those four (2x2 mosaic, each resized "
        "bilinearly to a "
        f"quarter of the frame, 3:4 aspect, 12 MP = 3000x4000) with Poisson shot noise at "
        f"{GAIN_E_PER_DN:g} e-/DN plus Gaussian read noise of {READ_NOISE_DN:g} DN (seed "
        f"{NOISE_SEED}), "
        f"rounded and clipped to uint8 (`benchmarks/_images.py`).\n"
    )
    md.append(
        "MSE is over all pixels and channels, in uint8 units, of the uint8 result vs the original; "
        "PSNR "
        "uses data range 255 (in the CSV). **Bold** = lowest MSE in that column.\n"
    )

    md.append("## Time and error per image\n")
    md.append("Cells: `median seconds / MSE`.\n")
    for image in table_images(rows):
        sub = [r for r in rows if r["image"] == image]
        r0 = sub[0]
        md.append(
            f"### {image}: {r0['height']}x{r0['width']} ({r0['megapixels']:.2f} MP), "
            f"{int(r0['n_distinct_colors']):,} distinct colours\n"
        )
        md.append(per_image_table(rows, image))
        md.append("")
        notes = sorted(
            {(r["method"], r["note"]) for r in sub if r.get("status") != "ok" and r.get("note")}
        )
        for m, note in notes:
            md.append(f"- {LABELS.get(m, m)}: {note}")
        if notes:
            md.append("")
    if p1:
        md.append("![MSE vs k](images/bench_mse_vs_k.png)\n")

    ratio = speed_ratio_table(rows)
    if ratio:
        md.append(f"### Speed relative to ours on {BIG}\n")
        md.append("Above 1x: the peer is slower than ours.\n")
        md.append(ratio)
        md.append("")

    cells = mse_cells(rows)
    if cells:
        md.append("### MSE: ours vs the best peer in each cell\n")
        body = [
            [
                c["image"],
                c["k"],
                f"{c['ours']:.2f}",
                f"{c['best']:.2f}",
                LABELS[c["best_peer"]],
                f"{100 * c['excess']:+.2f}%",
                "PASS" if c["pass"] else "FAIL",
            ]
            for c in cells
        ]
        md.append(_md_table(["image", "k", "ours", "best peer", "peer", "ours vs best", ""], body))
        md.append("")

    ft = float_mse_table(rows)
    if ft.count("\n") > 1:
        md.append(f"### Float-centre MSE of the KMeans peers ({BIG})\n")
        md.append(
            "For transparency: the error of the peers' float centres before the uint8 rounding a "
            "user "
            "applies when saving.\n"
        )
        md.append(ft)
        md.append("")

    md.append("## Time vs image size\n")
    st, skipped = scaling_table(rows)
    md.append(st)
    md.append("")
    for r in skipped:
        md.append(f"- {LABELS.get(r['method'], r['method'])} at {r['image']}: {r['note']}")
    if skipped:
        md.append("")
    if p2:
        md.append("![time vs megapixels](images/bench_time_vs_mp.png)\n")

    md.append("## Peak extra memory\n")
    how = sorted({r["peak_method"] for r in rows if r.get("peak_method")})
    md.append(
        "Each measurement runs the method once in a fresh subprocess (after an untimed warm-up "
        "on a 64x64 crop): peak extra memory = peak resident set size during the call minus the "
        f"RSS just before it ({'; '.join(how) or 'not measured'}). It includes the returned image "
        "and labels. MiB = 2**20 bytes (the targets' MB are read as MiB).\n"
    )
    md.append(memory_table(rows))
    md.append("")

    md.append("## Dask: a ~1 GB zarr stack\n")
    if drows:
        if denv:
            md.append(
                f"Stack: `{denv.get('stack_path', '')}`, shape {denv.get('shape')}, chunks "
                f"{denv.get('chunks')}, "
                f"{denv.get('nbytes', 0) / 2**30:.2f} GiB uint8, frames from the real sample "
                "images "
                f"(random crops resized to {denv.get('frame_size')}, light camera noise). "
                f"Run: `{denv.get('command', '')}` on {denv.get('date', '')}. "
                f"Scheduler: {denv.get('scheduler', '')}.\n"
            )
        md.append(
            "`ours`: `quantize(da.from_zarr(path), 16)` then `da.to_zarr(result.labels, ...)`; "
            "`dask-ml`: the seed's usage on the same data (pixels `x.reshape(-1, 3)` as a dask "
            "array, "
            "`KMeans(n_clusters=16, random_state=0).fit`, labels written with `da.to_zarr`). "
            "Each row is one fresh subprocess; peak RSS is the process's VmHWM (whole process, "
            "including imports), cross-checked by a psutil sampling thread (CSV).\n"
        )
        md.append(dask_table(drows))
        md.append("")
        for line in denv.get("notes", []):
            md.append(f"- {line}")
        for r in drows:
            if r.get("status") == "ok" and r.get("stage_peak_rss_mb"):
                colours = (
                    f", {int(r['n_input_colors']):,} distinct input colours"
                    if r.get("n_input_colors")
                    else ""
                )
                md.append(
                    f"- {r['method']} ({r['scope']}, {r['frames']} frames{colours}): sampled peak "
                    f"RSS (MB) per stage, stages as named by the method's progress messages: "
                    f"{r['stage_peak_rss_mb']}"
                )
        md.append("")
    else:
        md.append("Not run yet (`python benchmarks/bench_dask.py`).\n")

    md.append("## Environment\n")
    if env:
        v = env.get("versions", {})
        md.append(
            f"- CPU: {env.get('cpu')}, {env.get('n_cpus')} cores, {env.get('memory_gb')} GB; "
            f"{env.get('platform')}"
        )
        md.append(
            f"- Python {env.get('python')}; "
            + ", ".join(f"{k} {val}" for k, val in v.items() if val)
        )
        pools = "; ".join(
            " ".join(
                str(x) for x in (p["internal_api"], p.get("version"), p.get("architecture")) if x
            )
            + f" x{p['num_threads']}"
            for p in env.get("threadpools", [])
        )
        md.append(f"- Thread pools (threadpoolctl): {pools}")
        md.append(
            "- OPENBLAS_CORETYPE during the run: "
            f"{env.get('OPENBLAS_CORETYPE') or 'unset (native kernel)'}"
        )
        for line in env.get("notes", []):
            md.append(f"- {line}")
    dask_ml_note = HERE / "results" / "dask_ml_install.txt"
    if dask_ml_note.exists():
        md.append(f"- dask-ml install: {dask_ml_note.read_text().strip()}")
    md.append("")

    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(md))
    print(
        f"wrote {DOC.relative_to(ROOT)}"
        + "".join(f", {p.relative_to(ROOT)}" for p in (p1, p2) if p)
    )
    return 0


if __name__ == "__main__":
    if "--summary" in sys.argv:
        print(format_summary(targets_summary(load_quantize())))
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
