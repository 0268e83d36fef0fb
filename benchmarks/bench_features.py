#!/usr/bin/env python
"""Benchmark 4: the features of issue 11 against what a user would do without them.

    python benchmarks/bench_features.py            # ~3-5 min once the features exist
    python benchmarks/bench_features.py --quick    # the cat at 35 dB; dithering at 2 MP

auto-k   `quantize(img, "auto", target_psnr=P, random_state=0)` for P in 30, 35, 40 dB
         (median of 3) vs fitting k = 2, 3, ..., 64 one by one with `quantize(img, k)`
         (one run each): "linear search" is the time of the fits up to the first k that
         reaches P (what a script would do), "sweep" the time of all 63. The k the sweep
         finds is the minimal k; auto-k must choose it (PSNR as `QuantizeResult.psnr`).
dither   at 12 MP (the camera-like mosaic), k=16: ours `fit_palette` (the fit), then
         `apply_palette(img, palette)` and `apply_palette(img, palette, dither=True)`; Pillow
         (`Image.quantize` only dithers when given a palette): `img.quantize(k, MEDIANCUT)`
         for the palette, then `img.quantize(palette=p, dither=NONE)` and
         `img.quantize(palette=p, dither=FLOYDSTEINBERG)`; libimagequant with
         dithering_level 0 and 1 (fit and remap in one call). Median of 3 runs each.
Cases the installed quantize does not support yet are recorded as "unsupported" (found by
its signature); the peers are measured anyway. Results: <results>/features.csv.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _runinfo  # noqa: E402
from _images import get_image  # noqa: E402
from _methods import SEED, libimagequant, mse_psnr, supports  # noqa: E402

CSV_NAME = "features.csv"
ENV_NAME = "features_env.json"
AUTO_IMAGES = ["chelsea", "astronaut"]
AUTO_TARGETS = [30.0, 35.0, 40.0]
SWEEP_K_MAX = 64
DITHER_IMAGE = "mosaic12"
DITHER_K = 16

FIELDS = [
    "feature",
    "image",
    "megapixels",
    "method",
    "step",
    "k",
    "target_psnr",
    "status",
    "note",
    "repeats",
    "time_median_s",
    "times_s",
    "n_colors",
    "psnr",
    "mse_uint8",
    "core_version",
    "run_id",
    "timestamp",
]


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def _row(base, **kw):
    row = {**base, **kw}
    if "times" in row:
        row["times_s"] = " ".join(f"{t:.4f}" for t in row.pop("times"))
    for key in ("time_median_s", "psnr", "mse_uint8"):
        if isinstance(row.get(key), float):
            row[key] = f"{row[key]:.4f}"
    return row


# --------------------------------------------------------------------------- auto-k
def bench_auto(images, targets, repeats, base, k_max=SWEEP_K_MAX) -> list[dict]:
    from napari_kmeans_filter import quantize

    rows = []
    supported = supports("target_psnr")
    for image in images:
        img = get_image(image)
        b = {**base, "feature": "auto-k", "image": image, "megapixels": img.size / 3e6}
        if not supported:
            for p in targets:
                rows.append(
                    _row(
                        b,
                        method="ours",
                        step="auto",
                        target_psnr=p,
                        status="unsupported",
                        note="n_colors='auto' / target_psnr not supported by the installed "
                        "quantize",
                    )
                )
            print(f"  auto-k on {image}: unsupported by the installed quantize")
            continue
        quantize(img[:64, :64], 4, random_state=SEED)  # warm-up
        # the sweep: every k once, PSNR as the package reports it
        sweep = []
        for k in range(2, k_max + 1):
            t0 = time.perf_counter()
            res = quantize(img, k, random_state=SEED)
            sweep.append((k, time.perf_counter() - t0, float(res.psnr)))
        total = sum(t for _, t, _ in sweep)
        rows.append(
            _row(
                b,
                method="ours",
                step=f"sweep k=2..{k_max}",
                status="ok",
                repeats=1,
                time_median_s=total,
                note=" ".join(f"{k}:{psnr:.2f}" for k, _, psnr in sweep),
            )
        )
        print(f"  sweep k=2..{k_max} on {image}: {total:.2f} s")
        for p in targets:
            reach = [i for i, (_, _, psnr) in enumerate(sweep) if psnr >= p]
            if reach:
                i = reach[0]
                k_min = sweep[i][0]
                linear = sum(t for _, t, _ in sweep[: i + 1])
                rows.append(
                    _row(
                        b,
                        method="ours",
                        step="linear search",
                        target_psnr=p,
                        k=k_min,
                        status="ok",
                        repeats=1,
                        time_median_s=linear,
                        psnr=sweep[i][2],
                    )
                )
            else:
                k_min = None
                rows.append(
                    _row(
                        b,
                        method="ours",
                        step="linear search",
                        target_psnr=p,
                        status="n/a",
                        note=f"no k <= {k_max} reaches the target",
                    )
                )
            try:
                med, times, res = timed(
                    lambda p=p, img=img: quantize(img, "auto", target_psnr=p, random_state=SEED),
                    repeats,
                )
            except Exception as exc:
                rows.append(
                    _row(
                        b,
                        method="ours",
                        step="auto",
                        target_psnr=p,
                        status="error",
                        note=f"{type(exc).__name__}: {exc}"[:300],
                    )
                )
                print(f"  auto-k {image} {p:g} dB: ERROR {exc}")
                continue
            chosen = len(res.palette)
            note = "" if k_min is None else f"sweep's minimal k = {k_min}"
            rows.append(
                _row(
                    b,
                    method="ours",
                    step="auto",
                    target_psnr=p,
                    k=chosen,
                    n_colors=chosen,
                    status="ok",
                    repeats=len(times),
                    time_median_s=med,
                    times=times,
                    psnr=float(res.psnr),
                    note=note,
                )
            )
            print(f"  auto-k {image} {p:g} dB: k={chosen} in {med:.3f} s ({note})")
    return rows


# --------------------------------------------------------------------------- dithering
def bench_dither(image, k, repeats, base) -> list[dict]:
    from PIL import Image

    import napari_kmeans_filter as nkf

    img = get_image(image)
    b = {**base, "feature": "dither", "image": image, "megapixels": img.size / 3e6, "k": k}
    rows = []

    def ok(method, step, med, times, out=None, **kw):
        extra = {}
        if out is not None:
            mse, psnr = mse_psnr(img, out)
            extra = {"mse_uint8": mse, "psnr": psnr}
        rows.append(
            _row(
                b,
                method=method,
                step=step,
                status="ok",
                repeats=len(times),
                time_median_s=med,
                times=times,
                **extra,
                **kw,
            )
        )
        print(f"  dither {method:14s} {step:28s} {med:8.3f} s", flush=True)

    # ours
    import inspect

    can = "dither" in inspect.signature(nkf.apply_palette).parameters
    nkf.quantize(img[:64, :64], 4, random_state=SEED)  # warm-up
    med, times, pal = timed(lambda: nkf.fit_palette(img, k, random_state=SEED), repeats)
    ok("ours", "fit (fit_palette)", med, times)
    med, times, res = timed(lambda: nkf.apply_palette(img, pal), repeats)
    ok("ours", "paint (apply_palette)", med, times, np.asarray(res.image))
    del res
    if can:
        nkf.apply_palette(img[:64, :64], pal, dither=True)  # warm-up (a compiled kernel)
        med, times, res = timed(lambda: nkf.apply_palette(img, pal, dither=True), repeats)
        ok("ours", "dithered paint (dither=True)", med, times, np.asarray(res.image))
        del res
    else:
        rows.append(
            _row(
                b,
                method="ours",
                step="dithered paint (dither=True)",
                status="unsupported",
                note="dither not supported by the installed apply_palette",
            )
        )
        print("  dither ours: unsupported by the installed apply_palette")

    # Pillow: quantize(palette=...) is where Image.quantize applies Floyd-Steinberg
    pil = Image.fromarray(img)
    med, times, p = timed(
        lambda: pil.quantize(colors=k, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE),
        repeats,
    )
    ok("pillow", "fit (MEDIANCUT)", med, times)
    for step, dither in (
        ("paint (palette=, NONE)", Image.Dither.NONE),
        ("dithered paint (FLOYDSTEINBERG)", Image.Dither.FLOYDSTEINBERG),
    ):
        med, times, q = timed(lambda d=dither: pil.quantize(palette=p, dither=d), repeats)
        ok("pillow", step, med, times, np.asarray(q.convert("RGB")))

    # libimagequant: fit + remap in one call
    for step, level in (("fit + paint (level 0)", 0.0), ("fit + dithered paint (level 1)", 1.0)):
        if k > 256:
            break
        med, times, r = timed(lambda lv=level: libimagequant(img, k, dithering_level=lv), repeats)
        ok("libimagequant", step, med, times, r["image"])
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="the cat at 35 dB; dithering at 2 MP")
    p.add_argument("--auto-images", nargs="+", help=f"default {AUTO_IMAGES}")
    p.add_argument("--targets", nargs="+", type=float, help=f"dB, default {AUTO_TARGETS}")
    p.add_argument("--dither-image", help=f"default {DITHER_IMAGE}")
    p.add_argument("--dither-k", type=int, default=DITHER_K)
    p.add_argument(
        "--sweep-k-max", type=int, default=SWEEP_K_MAX, help="the one-by-one fits go up to this k"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip", nargs="+", choices=["auto-k", "dither"], default=[])
    p.add_argument("--results", type=Path, default=_runinfo.DEFAULT_RESULTS)
    p.add_argument("--no-report", action="store_true")
    args = p.parse_args(argv)

    info = _runinfo.run_info(load_peers=False)
    base = {
        "core_version": info["core_version"],
        "run_id": info["run_id"],
        "timestamp": _runinfo.utc_stamp(),
    }
    print(f"run {info['run_id']}; core {info['core_version']}")
    t_start = time.perf_counter()
    rows = []
    if "auto-k" not in args.skip:
        images = args.auto_images or (["chelsea"] if args.quick else AUTO_IMAGES)
        targets = args.targets or ([35.0] if args.quick else AUTO_TARGETS)
        rows += bench_auto(images, targets, args.repeats, base, args.sweep_k_max)
    if "dither" not in args.skip:
        image = args.dither_image or ("mosaic2" if args.quick else DITHER_IMAGE)
        rows += bench_dither(image, args.dither_k, args.repeats, base)
    csv_path, env_path = args.results / CSV_NAME, args.results / ENV_NAME
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    info["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    _runinfo.save_env(env_path, info, merge=False)
    print(f"wrote {csv_path} in {info['elapsed_s']:.0f} s")
    import make_report

    print(make_report.format_summary(make_report.targets_summary(args.results, only="features")))
    if not args.no_report:
        make_report.main(["--results", str(args.results)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
