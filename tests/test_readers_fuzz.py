"""Corrupt files of every kind the command line reads: right or refused, never a traceback.

Each kind of file is written small and valid, then damaged the ways files are damaged in
the wild: cut short (an interrupted download or copy), bits flipped (a bad disk, a bad
transfer) and the header overwritten.  The command line is run on each damaged file and
must either

* exit 2 with one line on stderr that names the file, write no output file (nor leave a
  temporary beside it), or
* exit 0 having read it; when the file was only cut short, the pixels written must be
  the original's (a reader that fills a missing part with zeros is silently lossy).

Never another exit status, never a traceback, never a crash of the interpreter.

The damaged files are a fixed, seeded sample (the same every run).  They are run through
``python -m napari_kmeans_filter`` semantics inside one helper interpreter
(``runpy.run_module(..., run_name="__main__")`` per file, stderr captured per run), so a
hundred runs cost one interpreter start; a segmentation fault in a codec ends the helper,
and the test names the file it was reading.  A few files also go through a real
``python -m napari_kmeans_filter`` process each.  More samples run under ``slow``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

imagecodecs = pytest.importorskip("imagecodecs")
zarr = pytest.importorskip("zarr")

PROG = "napari-kmeans-filter"
HEIGHT, WIDTH = 16, 24


def picture() -> np.ndarray:
    """Six colours in stripes and blocks: small, compressible, every codec's happy case."""
    colours = np.array(
        [[250, 20, 20], [20, 200, 20], [20, 20, 240], [240, 240, 40], [0, 0, 0], [255] * 3],
        np.uint8,
    )
    y, x = np.mgrid[:HEIGHT, :WIDTH]
    return colours[(y // 4 + x // 5) % 6]


def write_kinds(folder: Path) -> dict[str, Path]:
    """One valid file of every kind the command line reads."""
    rgb = picture()
    rgb16 = rgb.astype(np.uint16) * 257 + np.arange(3, dtype=np.uint16)
    grey16 = rgb16[..., 0]
    frames = [Image.fromarray(np.roll(rgb, shift, axis=1)) for shift in (0, 5, 10)]
    kinds: dict[str, Path] = {}

    def pillow(name: str, image: Image.Image, **options) -> None:
        kinds[name] = folder / name
        image.save(kinds[name], **options)

    def raw(name: str, data: bytes) -> None:
        kinds[name] = folder / name
        kinds[name].write_bytes(data)

    image = Image.fromarray(rgb)
    pillow("indexed.png", image.quantize(6))
    raw("rgb16.png", imagecodecs.png_encode(rgb16))
    pillow("anim.png", frames[0], save_all=True, append_images=frames[1:])
    pillow("anim.gif", frames[0], save_all=True, append_images=frames[1:])
    pillow("photo.jpg", image, quality=95)
    pillow("lossless.webp", image, lossless=True)
    pillow("rgb.bmp", image)
    pillow("bits.pbm", Image.fromarray(rgb[..., 0] > 100))
    raw("grey16.pgm", b"P5\n%d %d\n65535\n" % (WIDTH, HEIGHT) + grey16.astype(">u2").tobytes())
    raw("rgb16.ppm", b"P6\n%d %d\n65535\n" % (WIDTH, HEIGHT) + rgb16.astype(">u2").tobytes())
    header = f"P7\nWIDTH {WIDTH}\nHEIGHT {HEIGHT}\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n"
    raw("rgb.pam", header.encode() + rgb.tobytes())
    raw("rgb16.jp2", imagecodecs.jpeg2k_encode(rgb16, level=0))
    floats = (rgb[::-1] / 255).astype("<f4").tobytes()  # PFM rows run bottom to top
    raw("rgb.pfm", b"PF\n%d %d\n-1.0\n" % (WIDTH, HEIGHT) + floats)
    kinds["zlib.tif"] = folder / "zlib.tif"
    tifffile.imwrite(kinds["zlib.tif"], rgb, photometric="rgb", compression="zlib", rowsperstrip=4)
    kinds["raw.tif"] = folder / "raw.tif"
    tifffile.imwrite(kinds["raw.tif"], rgb16, photometric="rgb", rowsperstrip=4)
    kinds["pages.tif"] = folder / "pages.tif"
    for frame in frames:
        tifffile.imwrite(kinds["pages.tif"], np.asarray(frame), photometric="rgb", append=True)
    cmyk = np.dstack([255 - rgb, np.zeros((HEIGHT, WIDTH), np.uint8)])
    pillow("cmyk.tif", Image.fromarray(cmyk, "CMYK"), compression="tiff_lzw")
    kinds["rgb.zarr"] = folder / "rgb.zarr"
    stored = zarr.open_array(
        kinds["rgb.zarr"], mode="w", shape=rgb.shape, chunks=(8, 8, 3), dtype="u1"
    )
    stored[...] = rgb
    return kinds


def damaged(kinds: dict[str, Path], folder: Path, per_kind: int, seed: int) -> list[dict]:
    """``per_kind`` damaged copies of each file: cut to nothing, cut in half, cut at a
    seeded point, header bytes overwritten, bits flipped; then seeded extras."""
    rng = random.Random(seed)
    cases = []
    for kind, path in kinds.items():
        target = path
        if path.is_dir():  # zarr: damage a chunk, or the metadata, of a copy
            import shutil

            chunk = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")[0]
        plans = ["cut:0", "cut:0.5", "header", "bits", "cut:seeded"]
        plans += [rng.choice(["header", "bits", "cut:seeded"]) for _ in range(per_kind - 5)]
        for number, plan in enumerate(plans[:per_kind]):
            name = f"{number}-{plan.replace(':', '')}-{kind}"
            if path.is_dir():
                copy = folder / name
                shutil.copytree(path, copy)
                inner = "zarr.json" if plan == "header" else str(chunk.relative_to(path))
                target, victim = copy, copy / inner
            else:
                target = victim = folder / name
                victim.write_bytes(path.read_bytes())
            data = bytearray(victim.read_bytes())
            if plan.startswith("cut"):
                fraction = {"0": 0.0, "0.5": 0.5}.get(plan[4:], rng.uniform(0.05, 0.98))
                data = data[: int(len(data) * fraction)]
            elif plan == "header":
                for _ in range(4):
                    data[rng.randrange(min(len(data), 48))] = rng.randrange(256)
            else:
                for _ in range(4):
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            victim.write_bytes(bytes(data))
            cases.append({"kind": kind, "plan": plan, "input": str(target), "original": str(path)})
    return cases


#: The helper interpreter: each run is ``python -m napari_kmeans_filter ARGS`` (runpy
#: with run_name="__main__"), its stderr captured at the file-descriptor level.
HELPER = textwrap.dedent(
    """
    import io, json, os, runpy, sys, tempfile, traceback
    cases_file, results_file = sys.argv[1:3]
    cases = json.load(open(cases_file))
    results = []
    for case in cases:
        print(case["input"], flush=True)  # the last line names the file if we crash
        sys.argv = ["napari_kmeans_filter", *case["argv"]]
        with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as err:
            saved = os.dup(2)
            os.dup2(err.fileno(), 2)
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
            try:
                runpy.run_module("napari_kmeans_filter", run_name="__main__")
                status = 0
            except SystemExit as done:
                status = done.code if isinstance(done.code, int) else 1
            except BaseException:
                traceback.print_exc()
                status = "traceback"
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                sys.stderr = sys.__stderr__
            err.seek(0)
            results.append({**case, "status": status, "stderr": err.read()})
    with open(results_file, "w") as handle:
        json.dump(results, handle)
    """
)


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("NAPARI_KMEANS_FILTER_DEBUG", None)  # it turns errors into tracebacks
    return env


def run_damaged(cases: list[dict], folder: Path) -> list[dict]:
    out = folder / "out"
    out.mkdir()
    for number, case in enumerate(cases):
        case["output"] = str(out / f"{number}.npy")
        case["argv"] = [case["input"], "-k", "8", "--seed", "0", "-o", case["output"]]
    (folder / "cases.json").write_text(json.dumps(cases))
    helper = subprocess.run(
        [sys.executable, "-c", HELPER, str(folder / "cases.json"), str(folder / "results.json")],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=environment(),
        timeout=600,
    )
    last = helper.stdout.strip().splitlines()[-1:] or ["(none)"]
    assert helper.returncode == 0, f"the interpreter died reading {last[0]}: {helper.stderr}"
    return json.loads((folder / "results.json").read_text())


def check(result: dict, reference: dict[str, np.ndarray]) -> list[str]:
    """What is wrong with one run (nothing: an empty list); ``reference``: the output of
    each kind's intact file."""
    problems = []
    status, err, output = result["status"], result["stderr"], Path(result["output"])
    where = f"{result['plan']} {result['kind']}"
    if status not in (0, 2):
        return [f"{where}: exit {status}: {err}"]
    if "Traceback" in err:
        return [f"{where}: a traceback: {err}"]
    if status == 2:
        lines = err.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith(f"{PROG}: error:"):
            problems.append(f"{where}: not one error line: {err!r}")
        if Path(result["input"]).name not in err:
            problems.append(f"{where}: the error does not name the file: {err!r}")
        if output.exists() or list(output.parent.glob(f".{output.name}*")):
            problems.append(f"{where}: an output was left behind")
    elif not output.exists():
        problems.append(f"{where}: exit 0 without an output")
    elif result["plan"].startswith("cut"):
        # Cut short yet read: only right if nothing was lost (the same options and seed
        # on the intact file give the same output).
        if not np.array_equal(np.load(output), reference[result["kind"]]):
            problems.append(f"{where}: read with other pixels than the intact file")
    return problems


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> dict[str, Path]:
    return write_kinds(tmp_path_factory.mktemp("valid"))


def test_damaged_files_are_refused_in_one_line_or_read_right(kinds, tmp_path):
    intact = [
        {"kind": kind, "plan": "intact", "input": str(path), "original": str(path)}
        for kind, path in kinds.items()
    ]
    results = run_damaged(intact + damaged(kinds, tmp_path, per_kind=6, seed=17), tmp_path)
    # The undamaged files are read, else the rest would prove nothing.
    assert len(kinds) == 18
    assert [r["stderr"] for r in results[: len(kinds)] if r["status"] != 0] == []
    reference = {r["kind"]: np.load(r["output"]) for r in results[: len(kinds)]}
    problems = [problem for result in results for problem in check(result, reference)]
    assert problems == []
    # The sample is not vacuous: most damage is refused, every kind is damaged.
    assert sum(result["status"] == 2 for result in results) > len(results) // 2
    assert {result["kind"] for result in results} == set(kinds)


@pytest.mark.parametrize(
    ("kind", "plan"), [("indexed.png", "cut:0.5"), ("zlib.tif", "header"), ("rgb.zarr", "bits")]
)
def test_damaged_file_through_the_console_program(kinds, tmp_path, kind, plan):
    """The real ``python -m`` process: one error line naming the file, exit 2."""
    (case,) = [c for c in damaged({kind: kinds[kind]}, tmp_path, 5, 17) if c["plan"] == plan]
    output = tmp_path / "out.png"
    completed = subprocess.run(
        [sys.executable, "-m", "napari_kmeans_filter", case["input"], "-k", "8", "-o", output],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=environment(),
        timeout=300,
    )
    assert completed.returncode == 2, completed.stderr
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith(f"{PROG}: error:") and Path(case["input"]).name in line
    assert not output.exists()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])  # seeds 2 and 3 found nothing more (18 x 20 runs each)
def test_more_damaged_files(kinds, tmp_path, seed):
    intact = [
        {"kind": kind, "plan": "intact", "input": str(path), "original": str(path)}
        for kind, path in kinds.items()
    ]
    results = run_damaged(intact + damaged(kinds, tmp_path, per_kind=20, seed=seed), tmp_path)
    reference = {r["kind"]: np.load(r["output"]) for r in results[: len(kinds)]}
    problems = [problem for result in results for problem in check(result, reference)]
    assert problems == []
