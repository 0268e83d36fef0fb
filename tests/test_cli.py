"""The command line, run as a user runs it: a subprocess on real images in a temp dir.

Every success case checks the files a user would look at (shape, dtype, number of
colours, that they equal what the Python API gives); every error case checks the
contract of the CLI: exit status 2, one line on stderr naming the problem, no traceback.
The image-format details (indexed PNG, tRNS, TIFF layouts) are tested in-process on
``_io`` because they need no subprocess.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data

from napari_kmeans_filter import Palette, quantize
from napari_kmeans_filter._io import open_image, write_array

PROG = "napari-kmeans-filter"
ERROR_PREFIX = f"{PROG}: error: "
# A parameter of the Python API named in a message meant for the shell.
PYTHON_NAME = re.compile(
    r"\b(n_colors|target_psnr|target_delta_e|fixed_colors|random_state|color_space|channel_axis)\b"
)
# "[2/5] cat.png → cat_k16.png  243→16 colours  PSNR 30.9 dB  0.42 s"; with -k auto
# "... 32584→13 colours (auto)  PSNR 30.1 dB  0.42 s", plus "  CIEDE2000 2.51" when that
# is the target and "(... dB before dithering)" with --dither; "16 colours (3 unused)" when
# palette entries paint no pixel.
FILE_LINE = re.compile(
    r"^\[(\d+)/(\d+)\] (\S+) (?:→|->) (\S+)  (\d+)(?:→|->)(\d+) colours?"
    r"(?: \(\d+ unused\))?( \(auto\))?  "
    r"(PSNR \d+\.\d dB|lossless)(.*?)  \d+\.\d\d s$"
)


# ---------------------------------------------------------------------------------------------
# Helpers


def run_cli(*args, cwd: Path, script: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (``python -m`` or the installed console script)."""
    command = [shutil.which(PROG)] if script else [sys.executable, "-m", "napari_kmeans_filter"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("NAPARI_KMEANS_FILTER_DEBUG", None)  # errors must be one line, as for users
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> np.ndarray:
    """Decode an output the way the CLI reads its inputs."""
    return np.asarray(open_image(path).load())


def n_colours(image: np.ndarray, channel_axis: int | None = -1) -> int:
    if image.ndim == 2 or channel_axis is None:
        return len(np.unique(image))
    pixels = np.moveaxis(image, channel_axis, -1).reshape(-1, image.shape[channel_axis])
    return len(np.unique(pixels, axis=0))


def stderr_lines(completed: subprocess.CompletedProcess) -> list[str]:
    return completed.stderr.splitlines()


def assert_ok(completed: subprocess.CompletedProcess) -> None:
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr


# ---------------------------------------------------------------------------------------------
# Input images, written once per module from skimage.data


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")
    Image.fromarray(data.coffee()[::2, ::2]).save(folder / "coffee.jpg", quality=90)
    Image.fromarray(data.camera()).save(folder / "camera.png")
    tifffile.imwrite(folder / "camera16.tif", data.camera().astype(np.uint16) * 257)
    # Five channels stored as samples of each pixel (tifffile axes "YXS"): not a colour
    # image, but one pixel is still one 5-vector.
    astronaut = data.astronaut()[::2, ::2]
    five = np.dstack([astronaut, data.camera()[::2, ::2], astronaut[..., 0] // 2])
    tifffile.imwrite(
        folder / "five.tif",
        five.astype(np.uint16) * 100,
        photometric="minisblack",
        planarconfig="contig",
    )
    # Written in strips of 16 rows, as many scanners do: many small chunks when lazy.
    tifffile.imwrite(folder / "astronaut.tif", astronaut, photometric="rgb", rowsperstrip=16)
    return folder


# ---------------------------------------------------------------------------------------------
# Success


def test_console_script_quantises_and_matches_the_api(images, tmp_path):
    if shutil.which(PROG) is None:
        pytest.skip(f"console script {PROG} is not on PATH")
    source = images / "chelsea.png"
    before = digest(source)
    completed = run_cli(source, "-k", 16, "-o", tmp_path / "cat16.png", cwd=tmp_path, script=True)
    assert_ok(completed)
    (line,) = stderr_lines(completed)
    match = FILE_LINE.match(line)
    assert match, line
    assert match.group(1, 2, 3, 4) == ("1", "1", "chelsea.png", "cat16.png")
    assert match.group(6) == "16"

    written = read(tmp_path / "cat16.png")
    expected = quantize(data.chelsea(), 16, random_state=0)
    assert Image.open(tmp_path / "cat16.png").mode == "P"
    assert written.shape == data.chelsea().shape
    np.testing.assert_array_equal(written, expected.image)
    assert int(match.group(5)) == expected.n_input_colors
    assert digest(source) == before


def test_batch_out_dir_keeps_dtype_and_channels(images, tmp_path):
    inputs = ["chelsea.png", "coffee.jpg", "camera.png", "camera16.tif", "five.tif"]
    before = {name: digest(images / name) for name in inputs}
    out = tmp_path / "out"
    completed = run_cli(
        *[images / name for name in inputs],
        "-k",
        6,
        "--out-dir",
        out,
        "--labels",
        out / "{stem}_labels.tif",
        "--palette",
        out / "{stem}.json",
        cwd=tmp_path,
    )
    assert_ok(completed)
    lines = stderr_lines(completed)
    assert len(lines) == len(inputs) + 1  # one per file, then the total
    for number, (line, name) in enumerate(zip(lines, inputs, strict=False), start=1):
        match = FILE_LINE.match(line)
        assert match, line
        assert match.group(1, 2, 3) == (str(number), str(len(inputs)), name)
    assert lines[-1].startswith(f"{len(inputs)} images in ")

    expected = {
        # name: (output, shape, dtype, channel axis)
        "chelsea.png": ("chelsea_k6.png", (300, 451, 3), np.uint8, -1),
        "coffee.jpg": ("coffee_k6.png", (200, 300, 3), np.uint8, -1),  # JPEG in, PNG out
        "camera.png": ("camera_k6.png", (512, 512), np.uint8, None),
        "camera16.tif": ("camera16_k6.tif", (512, 512), np.uint16, None),
        "five.tif": ("five_k6.tif", (256, 256, 5), np.uint16, -1),
    }
    for name, (output, shape, dtype, channel_axis) in expected.items():
        image = read(out / output)
        assert image.shape == shape, name
        assert image.dtype == dtype, name
        assert 1 < n_colours(image, channel_axis) <= 6, name
        stem = Path(name).stem
        labels = tifffile.imread(out / f"{stem}_labels.tif")
        palette = Palette.from_dict(json.loads((out / f"{stem}.json").read_text()))
        assert labels.shape == (shape if channel_axis is None else shape[:-1])
        assert palette.colors.dtype == dtype
        # The three outputs agree: the image is the palette looked up by the labels.
        painted = palette.colors[labels]
        np.testing.assert_array_equal(
            painted if channel_axis is not None else painted[..., 0], image
        )
        assert digest(images / name) == before[name]


def test_saved_palette_is_applied_again(images, tmp_path):
    source = images / "chelsea.png"
    assert_ok(run_cli(source, "-k", 5, "-o", "cat5.png", "--palette", "cat5.json", cwd=tmp_path))
    assert set(json.loads((tmp_path / "cat5.json").read_text())) >= {"colors", "dtype"}
    completed = run_cli(
        source,
        images / "coffee.jpg",
        "--apply-palette",
        "cat5.json",
        "--out-dir",
        "again",
        cwd=tmp_path,
    )
    assert_ok(completed)
    # Repainting the cat with its own palette gives the same picture...
    np.testing.assert_array_equal(
        read(tmp_path / "again/chelsea_k5.png"), read(tmp_path / "cat5.png")
    )
    # ...and the coffee cup is painted with the cat's colours only.
    cat_colours = {tuple(c) for c in read(tmp_path / "cat5.png").reshape(-1, 3)}
    coffee = read(tmp_path / "again/coffee_k5.png")
    assert {tuple(c) for c in coffee.reshape(-1, 3)} <= cat_colours


def test_lazy_tiff_equals_in_memory(images, tmp_path):
    pytest.importorskip("zarr")
    import zarr

    source = images / "astronaut.tif"
    lazy = ["-o", "lazy.zarr/", "--labels", "lazy_labels.tif"]  # a store, as a shell completes it
    assert_ok(run_cli(source, "-k", 8, "--chunked", *lazy, cwd=tmp_path))
    eager = ["-o", "eager.tif", "--labels", "eager_labels.png"]
    assert_ok(run_cli(source, "-k", 8, *eager, cwd=tmp_path))
    image = zarr.open_array(str(tmp_path / "lazy.zarr"), mode="r")[...]
    assert image.shape == (256, 256, 3)
    assert n_colours(image) <= 8
    np.testing.assert_array_equal(image, tifffile.imread(tmp_path / "eager.tif"))
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "lazy_labels.tif"),
        np.asarray(Image.open(tmp_path / "eager_labels.png")),
    )


def test_lazy_tiff_layouts_in_process(tmp_path, monkeypatch, capsys):
    """Band-by-band TIFF writing (tiny chunks: many bands) and the memory-mapped
    fallback for planar RGB, against the in-memory result."""
    from napari_kmeans_filter._io import tiff
    from napari_kmeans_filter.cli import main

    monkeypatch.setattr(tiff, "CHUNK_BYTES", 20_000)  # bands of 256 rows (tiles): two here
    monkeypatch.chdir(tmp_path)
    astronaut = data.astronaut()
    tifffile.imwrite("rgb.tif", astronaut, photometric="rgb")
    tifffile.imwrite("planar.tif", np.moveaxis(astronaut, -1, 0), photometric="rgb")
    tifffile.imwrite(
        "stack.tif",
        np.stack([data.camera()[::4, ::4]] * 3).astype(np.uint16),
        photometric="minisblack",
    )
    for name in ("rgb", "planar", "stack"):
        assert main([f"{name}.tif", "-k", "5", "-q"]) == 0  # in memory
        assert main([f"{name}.tif", "-k", "5", "--chunked", "-o", "lazy.tif", "--overwrite"]) == 0
        expected = tifffile.imread(f"{name}_k5.tif")
        written = tifffile.imread("lazy.tif")
        assert written.dtype == expected.dtype
        np.testing.assert_array_equal(written, expected)
        # The colour axis as the written file declares it (a planar input may be written
        # with its samples last, as it is read).
        assert n_colours(written, open_image("lazy.tif").channel_axis) <= 5
    assert "Traceback" not in capsys.readouterr().err


def test_inputs_of_formats_not_written_get_png_or_tiff_by_default(tmp_path, monkeypatch, capsys):
    """Without -o, an input whose format is not an output format (Netpbm here; WebP, BMP,
    GIF alike) is written as PNG where PNG holds it (8 and 16 bits), else as TIFF (a float
    PFM): each output the API's result, in the input's dtype. (A PPM input once stopped
    at "unknown output format '.ppm'".)"""
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    cat = data.chelsea()
    camera16 = data.camera().astype(np.uint16) * 257
    Image.fromarray(cat).save("cat.ppm")
    Path("camera16.pgm").write_bytes(b"P5\n512 512\n65535\n" + camera16.astype(">u2").tobytes())
    as_float = (cat / 255).astype(np.float32)
    Path("cat.pfm").write_bytes(b"PF\n451 300\n-1.0\n" + as_float[::-1].astype("<f4").tobytes())
    assert main(["cat.ppm", "camera16.pgm", "cat.pfm", "-k", "6", "-q"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    expected = {
        "cat_k6.png": (cat, -1),
        "camera16_k6.png": (camera16, None),
        "cat_k6.tif": (as_float, -1),
    }
    for output, (image, channel_axis) in expected.items():
        written = read(Path(output))
        result = quantize(image, 6, channel_axis=channel_axis, random_state=0)
        assert written.dtype == image.dtype, output
        np.testing.assert_array_equal(written, result.image, err_msg=output)


def test_an_animated_png_without_o_is_written_as_tiff(tmp_path, monkeypatch, capsys):
    """Without -o an animated PNG gets a .tif with every frame (the API's result), as
    animated GIF and WebP do; it once stopped at "PNG holds one" frame, and stopped a batch."""
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    cat = data.chelsea()[::2, ::2]
    frames = np.stack([cat, cat[:, ::-1], 255 - cat])
    pictures = [Image.fromarray(frame) for frame in frames]
    pictures[0].save("anim.png", save_all=True, append_images=pictures[1:])
    Image.fromarray(cat).save("still.png")
    assert main(["anim.png", "still.png", "-k", "6", "-q"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    written = read(Path("anim_k6.tif"))
    np.testing.assert_array_equal(written, quantize(frames, 6, random_state=0).image)
    assert Path("still_k6.png").exists() and not Path("anim_k6.png").exists()


def test_a_problem_in_a_files_data_names_the_file_without_keep_going(tmp_path, monkeypatch, capsys):
    """Found while quantising (NaN in a float TIFF, every pixel transparent), the problem
    that ends a batch names its file, as --keep-going's lines do; the files before it are
    written."""
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    Image.fromarray(data.chelsea()[::4, ::4]).save("good.png")
    bad = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    bad[3, 4, 1] = np.nan
    tifffile.imwrite("nan.tif", bad)
    clear = np.zeros((10, 10, 4), np.uint8)
    Image.fromarray(clear).save("clear.png")
    for name in ("nan.tif", "clear.png"):
        assert main(["good.png", name, "-k", "2", "--out-dir", "out", "-q", "--overwrite"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"napari-kmeans-filter: error: {name}: ")
        assert "Traceback" not in lines[0]
        assert Path("out/good_k2.png").exists()


def test_zarr_input_to_tiff_and_png(images, tmp_path):
    da = pytest.importorskip("dask.array")
    pytest.importorskip("zarr")
    image = data.astronaut()[::2, ::2]
    da.to_zarr(da.from_array(image, chunks=(64, 64, 3)), str(tmp_path / "astro.zarr"))
    completed = run_cli(
        "astro.zarr",
        "-k",
        4,
        "--labels",
        "astro_labels.png",
        "--palette",
        "astro.json",
        cwd=tmp_path,
    )
    assert_ok(completed)
    written = read(tmp_path / "astro_k4.zarr")  # default name, beside the input
    assert written.shape == image.shape and n_colours(written) <= 4
    palette = Palette.from_dict(json.loads((tmp_path / "astro.json").read_text()))
    labels = np.asarray(Image.open(tmp_path / "astro_labels.png"))
    np.testing.assert_array_equal(palette.colors[labels], written)


def test_no_image_writes_the_labels_alone_in_the_inputs_storage_chunks(tmp_path):
    """A segmentation run (``--no-image``) of a lazy zarr stack writes the labels, in the
    input's storage chunks, equal to the numpy result's, and no quantised image anywhere."""
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    stack = np.stack([data.astronaut()[::4, ::4], data.chelsea()[:128, :128]])
    zarr.create_array(str(tmp_path / "stack.zarr"), data=stack, chunks=(1, 32, 64, 3))
    completed = run_cli(
        "stack.zarr", "-k", 6, "--no-image", "--labels", "labels.zarr", cwd=tmp_path
    )
    assert_ok(completed)
    (line,) = stderr_lines(completed)
    assert FILE_LINE.match(line).group(4) == "labels.zarr", line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr", "stack.zarr"]
    labels = zarr.open_array(str(tmp_path / "labels.zarr"), mode="r")
    assert labels.chunks == (1, 32, 64)
    expected = quantize(stack, 6, random_state=0)
    np.testing.assert_array_equal(labels[...], expected.labels)
    assert da.from_zarr(str(tmp_path / "labels.zarr")).dtype == expected.labels.dtype


def test_chunked_on_a_picture_says_it_is_read_whole(images, tmp_path, monkeypatch, capsys):
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    args = [str(images / "chelsea.png"), "-k", "4", "--chunked", "-o", "out.png"]
    assert main(args) == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert "--chunked reads TIFF files only" in warning and "chelsea.png" in warning


def test_zarr_group_member_is_protected_and_named_after_the_group(tmp_path, monkeypatch, capsys):
    zarr = pytest.importorskip("zarr")
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    group = zarr.open_group("scan.zarr", mode="w")
    group.create_array("0", shape=(64, 64), dtype="uint16", chunks=(32, 32))[...] = np.arange(
        64 * 64, dtype=np.uint16
    ).reshape(64, 64)
    assert main(["scan.zarr/0", "-k", "3", "-o", "scan.zarr/k3.zarr"]) == 2
    assert "would change the input" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "scan.zarr").iterdir()) == ["0", "zarr.json"]
    assert main(["scan.zarr/0", "-k", "3"]) == 0
    assert "scan.zarr/0 " in capsys.readouterr().err
    written = zarr.open_array("scan_0_k3.zarr", mode="r")[...]  # beside the group
    assert written.dtype == np.uint16 and len(np.unique(written)) == 3


def test_jpeg_output_warns_and_overwrite_replaces(images, tmp_path):
    source = images / "camera.png"
    completed = run_cli(source, "-k", 3, "-o", "camera3.jpg", cwd=tmp_path)
    assert_ok(completed)
    warning, line = stderr_lines(completed)
    assert warning.startswith(f"{PROG}: warning: JPEG") and "colours" in warning
    assert FILE_LINE.match(line)
    first = digest(tmp_path / "camera3.jpg")

    completed = run_cli(source, "-k", 2, "-o", "camera3.jpg", "--overwrite", "-q", cwd=tmp_path)
    assert_ok(completed)
    assert stderr_lines(completed) == [warning]  # -q keeps warnings only
    assert digest(tmp_path / "camera3.jpg") != first
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_version(tmp_path):
    completed = run_cli("--version", cwd=tmp_path)
    assert_ok(completed)
    assert completed.stdout.startswith(f"{PROG} ")


def test_help_has_examples(capsys):
    from napari_kmeans_filter.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "--apply-palette" in help_text and "demo" in help_text


def test_help_states_the_seed_default(capsys):
    from napari_kmeans_filter.cli import main

    for argv in (["--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        help_text = " ".join(capsys.readouterr().out.split())
        assert re.search(r"--seed N?\s*\S.*?\(default: 0\)", help_text), help_text


def test_bare_command_points_to_help(tmp_path):
    completed = run_cli(cwd=tmp_path)
    assert_one_error_line(completed.returncode, completed.stderr, ["INPUT", f"{PROG} --help"])


def test_demo_follows_the_overwrite_rule_and_quiet(tmp_path, monkeypatch, capsys):
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    unrelated = tmp_path / "out" / "chelsea_k2.png"
    unrelated.write_bytes(b"a file of the user's")
    # Refused before any work: nothing else is written.
    assert main(["demo", "--out-dir", "out", "-k", "2", "--dither-k", "--target-psnr"]) == 2
    assert_one_error_line(2, capsys.readouterr().err, ["chelsea_k2.png", "--overwrite"])
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["chelsea_k2.png"]
    assert unrelated.read_bytes() == b"a file of the user's"

    only_k2 = ["-k", "2", "--dither-k", "--target-psnr"]  # no dithering, no auto k
    assert main(["demo", "--out-dir", "out", *only_k2, "--overwrite", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert n_colours(read(unrelated)) == 2
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "chelsea.png",
        "chelsea_contact_sheet.png",
        "chelsea_k2.png",
    ]


@pytest.mark.skipif(not hasattr(os, "kill") or sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("signum", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_stop_signal_while_writing_leaves_nothing(tmp_path, signum, status):
    """SIGTERM (timeout, batch schedulers) is handled like Ctrl-C: the PNG being written
    is removed and the exit status is non-zero (128 + the signal's number)."""
    import signal
    import time

    rng = np.random.default_rng(0)
    colours = np.array([[200, 30, 40], [20, 90, 250]], np.uint8)
    # Two colours in random order, 24 MP, written as plain RGB: Pillow streams the
    # compressed rows into the file for seconds (--optimize would encode in memory and
    # write the file at once, too fast to be interrupted).
    Image.fromarray(colours[rng.integers(0, 2, (4000, 6000))]).save(
        tmp_path / "big.png", compress_level=1
    )
    command = [sys.executable, "-m", "napari_kmeans_filter", "big.png", "-k", "2"]
    command += ["-o", "out.png", "--no-indexed-png"]
    env = {**os.environ}
    env.pop("NAPARI_KMEANS_FILTER_DEBUG", None)
    process = subprocess.Popen(
        command, cwd=tmp_path, stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".out.png.partial-*")):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the output was never started"
            time.sleep(0.01)
        time.sleep(0.3)  # well inside the write
        assert process.poll() is None, "the write ended before the signal: make it longer"
        process.send_signal(getattr(signal, signum))
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["big.png"]


@pytest.mark.slow
def test_demo_writes_the_gallery(tmp_path):
    """Every kind of gallery image, as a user runs it (a few k only: the full gallery is
    compared with the committed one in test_docs.py)."""
    some = ["-k", "2", "5", "--dither-k", "4", "--target-psnr", "25"]
    completed = run_cli("demo", "--out-dir", "gallery", *some, cwd=tmp_path)
    assert_ok(completed)
    gallery = tmp_path / "gallery"
    cat = data.chelsea()
    distinct = n_colours(cat)
    assert f"{distinct} distinct colours" in completed.stdout
    assert read(gallery / "chelsea.png").tolist() == cat.tolist()
    auto = quantize(cat, "auto", target_psnr=25)
    chosen = len(auto.palette)
    expected = {
        "chelsea_k2.png": quantize(cat, 2),
        "chelsea_k5.png": quantize(cat, 5),
        "chelsea_k4.png": quantize(cat, 4),
        "chelsea_k4_dither.png": quantize(cat, 4, dither=True),
        f"chelsea_psnr25_k{chosen}.png": auto,
    }
    for name, result in expected.items():
        path = gallery / name
        assert str(path.relative_to(tmp_path)) in completed.stdout
        assert Image.open(path).mode == "P"
        np.testing.assert_array_equal(read(path), result.image)
    assert f"fewest colours reaching 25 dB: {chosen} colours" in completed.stdout
    assert sorted(path.name for path in gallery.iterdir()) == sorted(
        [*expected, "chelsea.png", "chelsea_contact_sheet.png"]
    )
    sheet = Image.open(gallery / "chelsea_contact_sheet.png")
    assert sheet.width > 2 * cat.shape[1] and sheet.height > cat.shape[0]
    # One overwrite rule for every command: existing files need --overwrite, checked
    # for every file before any work...
    before = {path.name: digest(path) for path in gallery.iterdir()}
    refused = run_cli("demo", "--out-dir", "gallery", *some, cwd=tmp_path)
    assert_one_error_line(refused.returncode, refused.stderr, ["already exists", "--overwrite"])
    assert {path.name: digest(path) for path in gallery.iterdir()} == before
    # ... and with it the same version writes the same bytes; -q prints nothing.
    again = run_cli("demo", "--out-dir", "gallery", *some, "--overwrite", "-q", cwd=tmp_path)
    assert_ok(again)
    assert again.stdout == "" and again.stderr == ""
    assert {path.name: digest(path) for path in gallery.iterdir()} == before


def test_corrupt_zarr_chunk_is_one_error_line(tmp_path):
    import zarr

    store = tmp_path / "stack.zarr"
    array = zarr.open_array(
        str(store), mode="w", shape=(2, 40, 50, 3), chunks=(1, 40, 50, 3), dtype="uint8"
    )
    array[:] = np.stack([data.chelsea()[:40, :50]] * 2)
    chunk_files = [
        p for p in store.rglob("*") if p.is_file() and not p.name.startswith(("zarr", "."))
    ]
    chunk_files.sort()
    chunk_files[-1].write_bytes(b"this is not a compressed chunk" * 4)
    completed = run_cli(str(store), "-k", "4", "--out-dir", "out", cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Errors.  The cases of the issue run as subprocesses, all started at once (each one is a fresh
# interpreter); the others call main() in-process, which is the same code without the start-up.

# id: (arguments, words the one-line message must contain)
SUBPROCESS_ERROR_CASES = {
    "missing-file": (["nope.png", "-k", "4"], ["no such file", "nope.png"]),
    "unreadable-input": (["folder", "-k", "4"], ["folder", "directory"]),
    "corrupt-file": (["garbage.png", "-k", "4"], ["garbage.png", "not a recognised image"]),
    "k-zero": (["chelsea.png", "-k", "0"], ["-k/--n-colors 0", "[1, 4096]"]),
    "k-not-int": (["chelsea.png", "-k", "2.5"], ["-k/--n-colors 2.5", "an int"]),
    "k-too-big": (["chelsea.png", "-k", "5000"], ["-k", "5000"]),
    "output-is-input": (["chelsea.png", "-k", "4", "-o", "./sub/../chelsea.png"], ["input"]),
    "out-dir-unwritable": (["chelsea.png", "-k", "4", "--out-dir", "chelsea.png/x"], ["directory"]),
    "bad-palette-json": (["chelsea.png", "--apply-palette", "bad.json"], ["bad.json", "JSON"]),
    "target-without-auto": (
        ["chelsea.png", "-k", "8", "--target-psnr", "30"],
        ["--target-psnr", "-k auto"],
    ),
    "quality-refused": (
        ["chelsea.png", "-k", "8", "--quality", "65-80"],
        ["--quality", "-k auto --target-psnr"],
    ),
    # Issue 16: without -k, --quality still gets its pointer to --target-psnr.
    "quality-without-k": (
        ["chelsea.png", "--quality", "60-80"],
        ["--quality 60-80", "pngquant", "-k auto --target-psnr"],
    ),
    # Issue 16: a greyscale palette on an RGB image is said in the options' words.
    "grey-palette-on-rgb": (
        ["chelsea.png", "--apply-palette", "grey.json"],
        ["chelsea.png: --apply-palette grey.json: must have as many colour channels"],
    ),
}
IN_PROCESS_ERROR_CASES = {
    "truncated-file": (["truncated.png", "-k", "4", "-o", "t.png"], ["truncated.png"]),
    "palette-not-a-palette": (["chelsea.png", "--apply-palette", "list.json"], ["list.json"]),
    "palette-missing": (["chelsea.png", "--apply-palette", "none.json"], ["none.json"]),
    "palette-channels": (
        ["camera.png", "--apply-palette", "rgb.json", "-o", "g.png"],
        ["camera.png", "channel"],
    ),
    "existing-output": (["chelsea.png", "-k", "4", "-o", "exists.png"], ["--overwrite"]),
    "o-with-many-inputs": (["chelsea.png", "camera.png", "-k", "4", "-o", "x.png"], ["--out-dir"]),
    "labels-need-stem": (
        ["chelsea.png", "camera.png", "-k", "2", "--labels", "l.png"],
        ["{stem}"],
    ),
    "same-path-twice": (["chelsea.png", "-k", "2", "-o", "x.png", "--labels", "x.png"], ["x.png"]),
    "lab-on-greyscale": (["camera.png", "-k", "2", "--color-space", "lab"], ["3 colour"]),
    "labels-as-jpeg": (["chelsea.png", "-k", "2", "--labels", "l.jpg"], ["--labels"]),
    "png-of-float": (["float.tif", "-k", "2", "-o", "f.png"], ["float32", ".tif"]),
    "unknown-format": (["chelsea.png", "-k", "2", "-o", "x.gif"], [".gif"]),
    "bad-channel-axis": (["chelsea.png", "-k", "2", "--channel-axis", "3"], ["--channel-axis"]),
    "no-k": (["chelsea.png"], ["-k"]),
    "k-auto-typo": (["chelsea.png", "-k", "atuo"], ["-k", "'auto'", "atuo"]),
    "auto-without-target": (["chelsea.png", "-k", "auto"], ["-k auto", "--target-psnr"]),
    "target-psnr-range": (
        ["chelsea.png", "-k", "auto", "--target-psnr", "300"],
        ["--target-psnr 300", "(0, 200] (dB)"],
    ),
    "target-psnr-not-a-number": (
        ["chelsea.png", "-k", "auto", "--target-psnr", "high"],
        ["--target-psnr high", "a float"],
    ),
    "delta-e-on-greyscale": (
        ["camera.png", "-k", "auto", "--target-delta-e", "2"],
        ["--target-delta-e", "3 colour channels"],
    ),
    "dither-level": (["chelsea.png", "-k", "8", "--dither", "1.5"], ["--dither 1.5", "[0, 1]"]),
    "dither-takes-the-input": (
        ["--dither", "chelsea.png", "-k", "8"],
        ["--dither", "chelsea.png", "after the input files"],
    ),
    "speed-range": (["chelsea.png", "-k", "8", "--speed", "0"], ["--speed 0", "[1, 10]"]),
    "fixed-color-syntax": (
        ["chelsea.png", "-k", "8", "--fixed-color", "#ff00zz"],
        ["--fixed-color '#ff00zz'", "#rrggbb"],
    ),
    "fixed-color-rgb-on-greyscale": (
        ["camera.png", "-k", "8", "--fixed-color", "#ff0000"],
        ["--fixed-color", "camera.png", "'#ff0000'", "grey level", "'#808080'"],
    ),
    "fixed-color-range": (
        ["chelsea.png", "-k", "8", "--fixed-color", "256,0,0"],
        ["--fixed-color", "[0, 255]", "256"],
    ),
    "fixed-color-16-bit-on-8-bit": (
        ["chelsea.png", "-k", "8", "--fixed-color", "#ffff00000000"],
        ["--fixed-color '#ffff00000000'", "8-bit colour", "#rrggbb"],
    ),
    "fixed-color-twice": (
        ["chelsea.png", "-k", "8", "--fixed-color", "#ffffff", "--fixed-color", "255,255,255"],
        ["--fixed-color", "repeat"],
    ),
    "more-fixed-colours-than-k": (
        ["chelsea.png", "-k", "1", "--fixed-color", "#ffffff", "--fixed-color", "#000000"],
        ["--fixed-color", "-k 1", "2 colours"],
    ),
    "fixed-colors-from-channels": (
        ["camera.png", "-k", "4", "--fixed-colors-from", "rgb.json"],
        ["camera.png", "--fixed-colors-from rgb.json", "(1)", "3 channel"],
    ),
    "fixed-colors-from-not-a-palette": (
        ["chelsea.png", "-k", "4", "--fixed-colors-from", "list.json"],
        ["--fixed-colors-from", "list.json"],
    ),
    "mask-shape": (
        ["chelsea.png", "-k", "4", "--mask", "camera.png"],
        ["--mask camera.png", "(512, 512)", "(300, 451)"],
    ),
    "mask-empty": (
        ["chelsea.png", "-k", "4", "--mask", "black.png"],
        ["--mask black.png", "no pixel to fit"],
    ),
    "mask-missing": (["chelsea.png", "-k", "4", "--mask", "none.png"], ["--mask", "none.png"]),
    "mask-with-apply-palette": (
        ["chelsea.png", "--apply-palette", "rgb.json", "--mask", "black.png"],
        ["--mask", "--apply-palette"],
    ),
    "seed-with-apply-palette": (
        ["chelsea.png", "--apply-palette", "rgb.json", "--seed", "3"],
        ["--seed", "--apply-palette"],
    ),
    "output-is-a-directory": (
        ["chelsea.png", "-k", "4", "-o", "."],
        [".", "is a directory", "--out-dir . to write into it"],
    ),
    "output-names-a-new-directory": (  # a trailing separator: a directory, not yet there
        ["chelsea.png", "-k", "4", "-o", "new dir/"],
        ["-o 'new dir/' names a directory", "--out-dir 'new dir/' to write into it, created"],
    ),
    "output-to-standard-output": (  # pngquant's -o -: not supported, said so
        ["chelsea.png", "-k", "4", "-o", "-"],
        ["-o -: writing to standard output is not supported", "-o out.png"],
    ),
    "speed-with-apply-palette": (
        ["chelsea.png", "--apply-palette", "rgb.json", "--speed", "3"],
        ["--speed", "--apply-palette"],
    ),
    "no-image-nothing-to-write": (
        ["chelsea.png", "-k", "4", "--no-image"],
        ["--no-image", "--labels", "nothing to write"],
    ),
    "no-image-with-output": (
        ["chelsea.png", "-k", "4", "--no-image", "-o", "x.png"],
        ["--no-image", "-o/--output"],
    ),
    "no-image-with-format": (
        ["chelsea.png", "-k", "4", "--no-image", "--labels", "l.png", "--format", "tif"],
        ["--no-image", "--format"],
    ),
    "stats-suffix": (["chelsea.png", "-k", "4", "--stats", "s.txt"], ["--stats", ".csv"]),
    "stats-needs-stem": (
        ["chelsea.png", "camera.png", "-k", "4", "--stats", "s.csv"],
        ["--stats", "{stem}"],
    ),
}


@pytest.fixture(scope="module")
def error_folder(images, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("errors")
    for name in ("chelsea.png", "camera.png"):
        shutil.copy(images / name, folder / name)
    (folder / "folder").mkdir()
    (folder / "garbage.png").write_bytes(b"this is not a PNG at all")
    (folder / "truncated.png").write_bytes((images / "chelsea.png").read_bytes()[:5000])
    (folder / "bad.json").write_text('{"colors": [[0, 0, 0]')
    (folder / "list.json").write_text("[1, 2, 3]")
    (folder / "rgb.json").write_text(json.dumps({"colors": [[0, 0, 0]], "dtype": "uint8"}))
    (folder / "grey.json").write_text(json.dumps({"colors": [[0], [255]], "dtype": "uint8"}))
    (folder / "exists.png").write_bytes(b"keep me")
    Image.fromarray(np.zeros((300, 451), np.uint8)).save(folder / "black.png")
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    tifffile.imwrite(folder / "float.tif", ramp)
    return folder


def folder_state(folder: Path) -> dict:
    return {path.name: digest(path) if path.is_file() else "dir" for path in folder.iterdir()}


@pytest.fixture(scope="module")
def error_runs(error_folder) -> dict:
    command = [sys.executable, "-m", "napari_kmeans_filter"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("NAPARI_KMEANS_FILTER_DEBUG", None)
    before = folder_state(error_folder)
    running = {
        case: subprocess.Popen(
            [*command, *arguments],
            cwd=error_folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        for case, (arguments, _) in SUBPROCESS_ERROR_CASES.items()
    }
    results = {
        case: (process, *process.communicate(timeout=300)) for case, process in running.items()
    }
    assert folder_state(error_folder) == before  # nothing written, nothing changed
    return {case: (process.returncode, stderr) for case, (process, _, stderr) in results.items()}


def assert_one_error_line(returncode: int, stderr: str, words: list[str]) -> None:
    lines = stderr.splitlines()
    assert returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    # The shell's words, never the Python API's ("The 'palette' parameter", n_colors=...).
    assert " parameter" not in lines[0] and not PYTHON_NAME.search(lines[0]), lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


@pytest.mark.parametrize("case", list(SUBPROCESS_ERROR_CASES))
def test_error_subprocess(case, error_runs):
    assert_one_error_line(*error_runs[case], SUBPROCESS_ERROR_CASES[case][1])


@pytest.mark.parametrize("case", list(IN_PROCESS_ERROR_CASES))
def test_error_in_process(case, error_folder, monkeypatch, capsys):
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(error_folder)
    monkeypatch.delenv("NAPARI_KMEANS_FILTER_DEBUG", raising=False)
    before = folder_state(error_folder)
    arguments, words = IN_PROCESS_ERROR_CASES[case]
    returncode = main(arguments)
    assert_one_error_line(returncode, capsys.readouterr().err, words)
    assert folder_state(error_folder) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads all")
def test_error_unreadable_file(error_folder, tmp_path, monkeypatch, capsys):
    from napari_kmeans_filter.cli import main

    locked = tmp_path / "locked.png"
    shutil.copy(error_folder / "camera.png", locked)
    locked.chmod(0)
    monkeypatch.chdir(tmp_path)
    assert_one_error_line(main([str(locked), "-k", "2"]), capsys.readouterr().err, ["locked.png"])


# ---------------------------------------------------------------------------------------------
# --keep-going (issue 17): failing files are reported as they fail, the others are processed,
# and the run ends with "N of M files failed" and exit status 2.

SUMMARY = re.compile(rf"^{re.escape(ERROR_PREFIX)}(\d+) of (\d+) files failed$")


@pytest.fixture
def mixed_batch(images, tmp_path) -> Path:
    """A good PNG, a truncated PNG and a greyscale PNG (refused with --color-space lab)."""
    cat = data.chelsea()[::3, ::3]
    Image.fromarray(cat).save(tmp_path / "a_cat.png")
    (tmp_path / "b_truncated.png").write_bytes((images / "chelsea.png").read_bytes()[:5000])
    Image.fromarray(data.camera()[::4, ::4]).save(tmp_path / "c_grey.png")
    return tmp_path


def test_keep_going_reports_failures_and_processes_the_rest(mixed_batch):
    inputs = ["a_cat.png", "b_truncated.png", "c_grey.png"]
    # Without the flag: one line, nothing written (the batch is checked first).
    refused = run_cli(*inputs, "-k", "4", "--out-dir", "out", cwd=mixed_batch)
    assert_one_error_line(refused.returncode, refused.stderr, ["b_truncated.png"])
    assert not (mixed_batch / "out").exists()

    completed = run_cli(*inputs, "-k", "4", "--out-dir", "out", "--keep-going", cwd=mixed_batch)
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = stderr_lines(completed)
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 2 and "b_truncated.png" in errors[0], lines
    assert SUMMARY.match(errors[-1]).groups() == ("1", "3") and lines[-1] == errors[-1]
    finished = [FILE_LINE.match(line) for line in lines if FILE_LINE.match(line)]
    # Each file keeps its number among the inputs: the failed one is number 2 of 3.
    assert [m.group(1, 2, 3, 4) for m in finished] == [
        ("1", "3", "a_cat.png", "a_cat_k4.png"),
        ("3", "3", "c_grey.png", "c_grey_k4.png"),
    ]
    assert sorted(p.name for p in (mixed_batch / "out").iterdir()) == [
        "a_cat_k4.png",
        "c_grey_k4.png",
    ]
    expected = quantize(data.chelsea()[::3, ::3], 4).image
    np.testing.assert_array_equal(read(mixed_batch / "out" / "a_cat_k4.png"), expected)

    # A file refused by the core for its own content (lab needs RGB) is one failure too;
    # -q keeps the failures and the summary.
    completed = run_cli(
        *inputs,
        "-k",
        "4",
        "--out-dir",
        "lab",
        "--keep-going",
        "-q",
        "--color-space",
        "lab",
        cwd=mixed_batch,
    )
    assert completed.returncode == 2
    lines = stderr_lines(completed)
    assert len(lines) == 3, lines
    assert "b_truncated.png" in lines[0]
    assert lines[1].startswith(f"{ERROR_PREFIX}c_grey.png: --color-space lab: must be 'rgb'")
    assert SUMMARY.match(lines[2]).groups() == ("2", "3")
    assert sorted(p.name for p in (mixed_batch / "lab").iterdir()) == ["a_cat_k4.png"]


def test_keep_going_past_a_file_that_fails_while_processed(mixed_batch):
    """A corrupt zarr chunk is only found while quantising: its partial outputs are removed
    and the next file is still processed."""
    import zarr

    store = mixed_batch / "stack.zarr"
    array = zarr.open_array(
        str(store), mode="w", shape=(2, 40, 50, 3), chunks=(1, 40, 50, 3), dtype="uint8"
    )
    array[:] = np.stack([data.chelsea()[:40, :50]] * 2)
    chunks = sorted(p for p in store.rglob("*") if p.is_file() and not p.name.startswith("zarr"))
    chunks[-1].write_bytes(b"this is not a compressed chunk" * 4)
    completed = run_cli(
        "stack.zarr",
        "a_cat.png",
        "-k",
        "4",
        "--out-dir",
        "out",
        "--keep-going",
        "--labels",
        "out/{stem}_labels.png",
        "-q",
        cwd=mixed_batch,
    )
    lines = stderr_lines(completed)
    assert completed.returncode == 2 and len(lines) == 2, lines
    assert lines[0].startswith(ERROR_PREFIX) and "stack.zarr" in lines[0], lines
    assert SUMMARY.match(lines[1]).groups() == ("1", "2")
    assert sorted(p.name for p in (mixed_batch / "out").iterdir()) == [
        "a_cat_k4.png",
        "a_cat_labels.png",
    ]


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["-k", "0"], ["-k/--n-colors 0"]),
        (["-k", "4", "--mask", "none.png"], ["--mask", "none.png"]),
        (["-k", "4", "--labels", "out/{name}.png"], ["--labels", "{stem}"]),
        (["--apply-palette", "none.json"], ["none.json"]),
    ],
    ids=["bad-k", "missing-mask", "bad-pattern", "missing-palette"],
)
def test_keep_going_still_stops_at_a_bad_option(mixed_batch, arguments, words, monkeypatch, capsys):
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(mixed_batch)
    before = folder_state(mixed_batch)
    status = main(["a_cat.png", "c_grey.png", "--out-dir", "out", "--keep-going", *arguments])
    assert_one_error_line(status, capsys.readouterr().err, words)
    assert folder_state(mixed_batch) == before


# ---------------------------------------------------------------------------------------------
# The options of issue 11 (-k auto, --dither, --fixed-color, --mask, --stats) and --speed:
# each reaches the core as its parameter, so the files equal what the Python API gives.


def read_stats(path: Path) -> dict[str, list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {column: [row[column] for row in rows] for column in rows[0]}


def assert_stats_equal(written: dict, result, frame_axis=None) -> None:
    """The CSV holds the core's cluster_stats exactly (floats are written with repr)."""
    expected = result.cluster_stats(frame_axis=frame_axis)
    frames = expected.pop("frame_counts", None)
    colors = result.palette.colors
    assert list(written)[: 1 + colors.shape[1]] == [
        "label",
        *(f"color_{c}" for c in range(colors.shape[1])),
    ]
    for c in range(colors.shape[1]):
        assert [int(v) for v in written[f"color_{c}"]] == colors[:, c].tolist()
    for column, values in expected.items():
        parsed = [float(v) if v else np.nan for v in written[column]]
        np.testing.assert_array_equal(parsed, values, err_msg=column)
    if frames is not None:
        for t in range(frames.shape[1]):
            assert [int(v) for v in written[f"count_frame_{t}"]] == frames[:, t].tolist()
        assert f"count_frame_{frames.shape[1]}" not in written


def test_auto_k_with_dither_and_stats_as_a_user_runs_it(images, tmp_path):
    source = images / "chelsea.png"
    completed = run_cli(
        source,
        "-k",
        "auto",
        "--target-psnr",
        30,
        "--dither",
        "--stats",
        "{stem}_{k}.csv",
        "--out-dir",
        ".",
        cwd=tmp_path,
        script=shutil.which(PROG) is not None,
    )
    assert_ok(completed)
    expected = quantize(data.chelsea(), "auto", target_psnr=30, dither=True)
    k = len(expected.palette)
    curve = expected.error_curve
    assert curve["reached"] and curve["psnr"][curve["n_colors"].index(k)] >= 30
    (line,) = stderr_lines(completed)
    match = FILE_LINE.match(line)
    assert match, line
    assert match.group(4, 6, 7) == ("chelsea_auto_dither.png", str(k), " (auto)")
    assert match.group(8) == f"PSNR {expected.psnr:.1f} dB"
    before = curve["psnr"][curve["n_colors"].index(k)]
    assert match.group(9) == f" ({before:.1f} dB before dithering)"
    np.testing.assert_array_equal(read(tmp_path / "chelsea_auto_dither.png"), expected.image)
    assert_stats_equal(read_stats(tmp_path / "chelsea_auto.csv"), expected)


def test_target_delta_e_prints_the_mean_ciede2000(tmp_path, monkeypatch, capsys):
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    astronaut = data.astronaut()[::2, ::2]
    Image.fromarray(astronaut).save("astronaut.png")
    assert main(["astronaut.png", "-k", "auto", "--target-delta-e", "4", "-o", "a.png"]) == 0
    expected = quantize(astronaut, "auto", target_delta_e=4)
    curve, k = expected.error_curve, len(expected.palette)
    delta_e = curve["delta_e"][curve["n_colors"].index(k)]
    assert delta_e <= 4
    match = FILE_LINE.match(capsys.readouterr().err.strip())
    assert match.group(6, 8, 9) == (
        str(k),
        f"PSNR {expected.psnr:.1f} dB",
        f"  CIEDE2000 {delta_e:.2f}",
    )
    np.testing.assert_array_equal(read(tmp_path / "a.png"), expected.image)


def test_fixed_colours_and_a_painted_mask_as_a_user_runs_it(tmp_path):
    astronaut = data.astronaut()[::2, ::2]
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    # A mask painted in black over a transparent background: alpha decides, not colour.
    painted = np.zeros((*astronaut.shape[:2], 4), np.uint8)
    painted[40:200, 60:180, 3] = 255
    Image.fromarray(painted).save(tmp_path / "roi.png")
    (tmp_path / "red.json").write_text(json.dumps({"colors": [[255, 0, 0]], "dtype": "uint8"}))
    completed = run_cli(
        "astronaut.png",
        "-k",
        6,
        "--fixed-colors-from",
        "red.json",
        "--fixed-color",
        "#FFFFFF",
        "--fixed-color",
        " 0, 0,255",
        "--mask",
        "roi.png",
        "--palette",
        "p.json",
        "-o",
        "out.png",
        cwd=tmp_path,
    )
    assert_ok(completed)
    fixed = [[255, 0, 0], [255, 255, 255], [0, 0, 255]]
    expected = quantize(astronaut, 6, fixed_colors=fixed, mask=painted[..., 3] > 0)
    palette = Palette.from_dict(json.loads((tmp_path / "p.json").read_text()))
    assert palette.colors[:3].tolist() == fixed  # first, in the order given
    np.testing.assert_array_equal(palette.colors, expected.palette.colors)
    np.testing.assert_array_equal(read(tmp_path / "out.png"), expected.image)
    # The mask changed the fit: without it the palette differs.
    unmasked = quantize(astronaut, 6, fixed_colors=fixed)
    assert not np.array_equal(unmasked.palette.colors, expected.palette.colors)


def test_sixteen_bit_fixed_colours(tmp_path, monkeypatch, capsys):
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    image = data.astronaut()[::4, ::4].astype(np.uint16) * 257
    tifffile.imwrite("astro16.tif", image, photometric="rgb")
    colours = ["#ff0000", "#00000000ffff", "1000,2000,3000"]
    arguments = ["astro16.tif", "-k", "5", "--palette", "p.json", "-o", "out.tif"]
    assert main([*arguments, *(f"--fixed-color={c}" for c in colours)]) == 0
    fixed = [[65535, 0, 0], [0, 0, 65535], [1000, 2000, 3000]]
    palette = Palette.from_dict(json.loads((tmp_path / "p.json").read_text()))
    assert palette.colors.dtype == np.uint16
    assert palette.colors[:3].tolist() == fixed
    expected = quantize(image, 5, fixed_colors=fixed)
    np.testing.assert_array_equal(tifffile.imread("out.tif"), expected.image)
    assert FILE_LINE.match(capsys.readouterr().err.strip())


@pytest.mark.parametrize("bits", [8, 16])
def test_grey_fixed_colours_written_as_colours_on_a_greyscale_image(tmp_path, monkeypatch, bits):
    """'#808080', 'white' or '#000' on a greyscale image are its grey levels (scaled to 16
    bits as for RGB), the same palette as the levels given as numbers."""
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    image = data.camera()[::4, ::4]
    scale = 257 if bits == 16 else 1
    image = image.astype(np.uint16) * scale if bits == 16 else image
    tifffile.imwrite("grey.tif", image)
    arguments = ["grey.tif", "-k", "5", "-q", "--palette"]
    named = ["--fixed-color", "#808080", "--fixed-color", "white", "--fixed-color", "#000"]
    assert main([*arguments, "named.json", *named, "-o", "named.tif"]) == 0
    levels = [str(128 * scale), str(255 * scale), "0"]
    numbers = [word for level in levels for word in ("--fixed-color", level)]
    assert main([*arguments, "numbers.json", *numbers, "-o", "numbers.tif"]) == 0
    named = Palette.from_dict(json.loads((tmp_path / "named.json").read_text()))
    given = Palette.from_dict(json.loads((tmp_path / "numbers.json").read_text()))
    assert named.colors[:3, 0].tolist() == [128 * scale, 255 * scale, 0]
    np.testing.assert_array_equal(named.colors, given.colors)
    np.testing.assert_array_equal(tifffile.imread("named.tif"), tifffile.imread("numbers.tif"))


def test_colour_forms_on_greyscale_images_of_every_dtype():
    """Greys written as colours are levels of 8- and 16-bit greyscale images; on a float
    image the message asks for numbers, never suggesting a form it would refuse."""
    from napari_kmeans_filter._color_text import parse_color

    assert parse_color("#808080", np.uint8, 1) == [128.0]
    assert parse_color("white", np.uint16, 1) == [65535.0]
    assert parse_color("#800080008000", np.uint16, 1) == [32768.0]
    for text in ("red", "#808080"):
        with pytest.raises(ValueError, match=r"numbers in the image's units .* float32 image"):
            parse_color(text, np.float32, 1)
    with pytest.raises(ValueError, match="grey level"):
        parse_color("red", np.uint8, 1)


def test_colours_with_alpha_are_refused_not_cut():
    """'#ff000080' is half-transparent red: a palette colour has no alpha, so it is refused
    with a message naming the opaque form, not read as opaque red; '#ff0000ff' is opaque."""
    from napari_kmeans_filter._color_text import parse_color

    assert parse_color("#ff0000ff", np.uint8, 3) == [255.0, 0.0, 0.0]
    assert parse_color("#f00f", np.uint16, 3) == [65535.0, 0.0, 0.0]
    for text in ("#ff000080", "#f008"):
        with pytest.raises(ValueError, match=r"fixed_colors.*opaque.*'#rrggbb'"):
            parse_color(text, np.uint8, 3)


def test_summary_counts_unused_palette_entries(tmp_path, monkeypatch, capsys):
    """A fixed colour the image lacks paints no pixel: "3→4 colours" would claim four."""
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    image = np.zeros((20, 20, 3), np.uint8)
    image[:10] = 200
    image[5:, 5:] = 50
    Image.fromarray(image).save("three.png")
    assert main(["three.png", "-k", "4", "--fixed-color", "#ff0000", "-o", "red.png"]) == 0
    line = capsys.readouterr().err.strip()
    assert FILE_LINE.match(line), line
    assert "  3→4 colours (1 unused)  " in line.replace("->", "→"), line
    result = quantize(image, 4, fixed_colors=[[255, 0, 0]])
    assert result.palette.counts.tolist().count(0) == 1
    # Every entry used: no note.
    assert main(["three.png", "-k", "3", "-o", "three3.png"]) == 0
    assert "  3→3 colours  " in capsys.readouterr().err.replace("->", "→")


def test_one_frame_mask_for_a_stack_and_stats_per_frame(tmp_path, monkeypatch):
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    cat = data.chelsea()[::2, ::2]
    stack = np.stack([np.roll(cat, 30 * t, axis=1) for t in range(3)])
    tifffile.imwrite("stack.tif", stack, photometric="rgb")
    mask = np.zeros(cat.shape[:2], np.uint8)
    mask[20:120, 40:200] = 7  # nonzero is True
    Image.fromarray(mask).save("roi.png")
    assert main(["stack.tif", "-k", "4", "--mask", "roi.png", "--stats", "s.csv", "-q"]) == 0
    expected = quantize(stack, 4, mask=np.broadcast_to(mask > 0, stack.shape[:3]))
    np.testing.assert_array_equal(tifffile.imread("stack_k4.tif"), expected.image)
    written = read_stats(tmp_path / "s.csv")
    assert_stats_equal(written, expected, frame_axis=0)
    per_frame = np.array([[int(v) for v in written[f"count_frame_{t}"]] for t in range(3)])
    assert per_frame.sum(axis=0).tolist() == [int(v) for v in written["count"]]
    assert per_frame.sum(axis=1).tolist() == [cat.shape[0] * cat.shape[1]] * 3


def test_zarr_stack_with_mask_dither_and_stats_equals_the_api_on_dask(tmp_path, monkeypatch):
    """A lazy input takes the same options: the CLI gives what the API gives for the
    same dask array (dithering diffuses within each chunk, as the core documents)."""
    da = pytest.importorskip("dask.array")
    pytest.importorskip("zarr")
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    cat = data.chelsea()[::2, ::2]
    stack = np.stack([np.roll(cat, 25 * t, axis=0) for t in range(3)])
    da.to_zarr(da.from_array(stack, chunks=(1, 75, 226, 3)), "stack.zarr")
    mask = np.zeros(cat.shape[:2], bool)
    mask[30:120, 50:200] = True
    Image.fromarray(mask.astype(np.uint8) * 255).save("roi.png")
    arguments = ["stack.zarr", "-k", "5", "--mask", "roi.png", "--dither", "--stats", "s.csv"]
    assert main([*arguments, "-q"]) == 0
    # The dask array the command line reads: its tasks may cover several storage chunks.
    lazy = open_image(tmp_path / "stack.zarr").load()
    expected = quantize(lazy, 5, mask=np.broadcast_to(mask, stack.shape[:3]), dither=True)
    written = read(tmp_path / "stack_k5_dither.zarr")
    np.testing.assert_array_equal(written, np.asarray(expected.image))
    assert_stats_equal(read_stats(tmp_path / "s.csv"), expected, frame_axis=0)


def test_speed_and_dither_level_reach_the_core(images, tmp_path, monkeypatch):
    from napari_kmeans_filter import apply_palette
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    cat = data.chelsea()
    arguments = [str(images / "chelsea.png"), "-k", "8", "--speed", "10", "--dither", "0.5"]
    assert main([*arguments, "-o", "fast.png", "--palette", "p.json", "-q"]) == 0
    expected = quantize(cat, 8, speed=10, dither=0.5)
    np.testing.assert_array_equal(read(tmp_path / "fast.png"), expected.image)
    # --dither applies to --apply-palette too.
    palette = Palette.from_dict(json.loads((tmp_path / "p.json").read_text()))
    coffee = images / "coffee.jpg"
    assert main([str(coffee), "--apply-palette", "p.json", "--dither", "-o", "c.png", "-q"]) == 0
    repainted = apply_palette(read(coffee), palette, dither=True)
    np.testing.assert_array_equal(read(tmp_path / "c.png"), repainted.image)
    plain = apply_palette(read(coffee), palette)
    assert not np.array_equal(plain.labels, repainted.labels)


def test_dithered_and_plain_outputs_sit_side_by_side(images, tmp_path):
    """Without -o a dithered output is named <stem>_k<K>_dither (pngquant's -fs8 / -or8
    habit), so the plain run that follows needs no --overwrite; -o's folder is created."""
    source = tmp_path / "cat.png"
    shutil.copy(images / "chelsea.png", source)
    assert_ok(run_cli(source, "-k", 4, "--dither", cwd=tmp_path))
    assert_ok(run_cli(source, "-k", 4, cwd=tmp_path))
    assert_ok(run_cli(source, "-k", 4, "--dither", "0", "-o", "new/folder/c.png", cwd=tmp_path))
    cat = data.chelsea()
    np.testing.assert_array_equal(
        read(tmp_path / "cat_k4_dither.png"), quantize(cat, 4, dither=True).image
    )
    plain = quantize(cat, 4).image
    np.testing.assert_array_equal(read(tmp_path / "cat_k4.png"), plain)
    np.testing.assert_array_equal(read(tmp_path / "new" / "folder" / "c.png"), plain)


def test_unreached_target_is_one_warning_line(tmp_path, monkeypatch, capsys):
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    # 5000 distinct colours: more than 4096, so 200 dB cannot be reached.
    noise = np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8)
    Image.fromarray(noise).save("noise.png")
    arguments = ["-k", "auto", "--target-psnr", "200", "--speed", "10", "-o", "n.tif"]
    assert main(["noise.png", *arguments]) == 0
    warning, line = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"{PROG}: warning: noise.png: ") and "not reached" in warning
    assert FILE_LINE.match(line).group(6, 7) == ("4096", " (auto)")


@pytest.mark.parametrize(
    ("mode", "pixels", "expected"),
    [
        # grey: nonzero
        ("L", np.array([[0, 3], [255, 0]], np.uint8), [[False, True], [True, False]]),
        # RGB: nonzero in any channel
        (
            "RGB",
            np.array([[[0, 0, 0], [0, 0, 1]], [[9, 0, 0], [0, 0, 0]]], np.uint8),
            [[False, True], [True, False]],
        ),
        # RGBA with transparent pixels: visible ones, black included
        (
            "RGBA",
            np.array([[[0, 0, 0, 255], [9, 9, 9, 0]], [[0, 0, 0, 1], [0, 0, 0, 0]]], np.uint8),
            [[True, False], [True, False]],
        ),
        # RGBA fully opaque: the colour decides
        (
            "RGBA",
            np.array(
                [[[0, 0, 0, 255], [1, 0, 0, 255]], [[0, 0, 0, 255], [0, 5, 0, 255]]], np.uint8
            ),
            [[False, True], [False, True]],
        ),
        # grey + alpha with transparent pixels
        (
            "LA",
            np.array([[[0, 255], [200, 0]], [[0, 0], [0, 10]]], np.uint8),
            [[True, False], [False, True]],
        ),
    ],
)
def test_read_mask(tmp_path, mode, pixels, expected):
    from napari_kmeans_filter._io import read_mask

    image = Image.fromarray(pixels)
    assert image.mode == mode
    image.save(tmp_path / "mask.png")
    mask = read_mask(tmp_path / "mask.png")
    assert mask.dtype == bool
    assert mask.tolist() == expected


def test_read_mask_colour_key(tmp_path):
    """An RGB PNG whose tRNS chunk marks one colour transparent is a mask by alpha."""
    from napari_kmeans_filter._io import read_mask

    pixels = np.array([[[0, 0, 0], [255, 255, 255]], [[0, 0, 0], [0, 0, 0]]], np.uint8)
    Image.fromarray(pixels).save(tmp_path / "key.png", transparency=(255, 255, 255))
    assert read_mask(tmp_path / "key.png").tolist() == [[True, False], [True, True]]


# ---------------------------------------------------------------------------------------------
# Image formats (in-process)


def test_indexed_png_is_smaller_and_decodes_exactly(tmp_path):
    result = quantize(data.chelsea(), 16, random_state=0)
    indexed, plain = tmp_path / "indexed.png", tmp_path / "plain.png"
    options = {"fmt": "png", "channel_axis": -1, "labels": result.labels}
    write_array(indexed, result.image, colors=result.palette.colors, **options)
    write_array(plain, result.image, colors=result.palette.colors, indexed=False, **options)
    assert Image.open(indexed).mode == "P" and Image.open(plain).mode == "RGB"
    assert indexed.stat().st_size < plain.stat().st_size
    np.testing.assert_array_equal(read(indexed), result.image)
    np.testing.assert_array_equal(read(plain), result.image)


def test_rgba_indexed_png_keeps_alpha_with_trns(tmp_path):
    rgba = np.dstack([data.chelsea(), np.full(data.chelsea().shape[:2], 255, np.uint8)])
    rgba[:50, :50, 3] = 0
    rgba[50:80, :, 3] = 128
    result = quantize(rgba, 8, random_state=0)
    path = tmp_path / "rgba.png"
    write_array(
        path,
        result.image,
        fmt="png",
        channel_axis=-1,
        labels=result.labels,
        colors=result.palette.colors,
    )
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    written = read(path)
    # Visible pixels are exact; every invisible one is the one transparent entry.
    visible = result.image[..., 3] > 0
    np.testing.assert_array_equal(written[visible], result.image[visible])
    np.testing.assert_array_equal(written[~visible], 0)
    entries = np.asarray(Image.open(path).getpalette()).reshape(-1, 3)
    alphas = np.frombuffer(Image.open(path).info["transparency"], np.uint8)
    assert (alphas == 0).sum() == 1
    pairs = result.labels[visible].astype(np.int64) * 256 + result.image[visible][:, 3]
    assert len(entries) == len(np.unique(pairs)) + 1  # hidden colours take no entry


def test_greyscale_and_16_bit_pngs_round_trip(tmp_path):
    grey = quantize(data.camera(), 4, channel_axis=None)
    write_array(tmp_path / "grey.png", grey.image, fmt="png", channel_axis=None)
    assert read(tmp_path / "grey.png").shape == (512, 512)  # grey palette -> greyscale
    np.testing.assert_array_equal(read(tmp_path / "grey.png"), grey.image)

    pytest.importorskip("imagecodecs")
    rgb16 = data.astronaut()[::4, ::4].astype(np.uint16) * 257
    write_array(tmp_path / "rgb16.png", rgb16, fmt="png", channel_axis=-1)
    np.testing.assert_array_equal(read(tmp_path / "rgb16.png"), rgb16)


@pytest.mark.parametrize(
    ("shape", "channel_axis"),
    [((32, 48, 3), -1), ((3, 32, 48), 0), ((4, 32, 48), None), ((32, 48, 7), -1)],
)
def test_tiff_layouts_round_trip(tmp_path, shape, channel_axis):
    array = np.random.default_rng(0).integers(0, 60000, shape, dtype=np.uint16)
    write_array(tmp_path / "a.tif", array, fmt="tiff", channel_axis=channel_axis)
    source = open_image(tmp_path / "a.tif")
    if shape == (3, 32, 48) and channel_axis == 0:
        # Planar RGB is read as viewers show it: an RGB picture, samples last.
        array, channel_axis = np.moveaxis(array, 0, -1), -1
    np.testing.assert_array_equal(source.load(), array)
    if channel_axis is not None:  # the samples axis is found again on reading
        assert source.channel_axis % len(shape) == channel_axis % len(shape)


# ---------------------------------------------------------------------------------------------
# OME-Zarr and zarr (issue 19): labels as an OME-NGFF label image under the input image, a new
# OME-Zarr image from an OME-Zarr image, plain zarr outputs in the input's chunks and format.

OME_VERSIONS = [pytest.param(2, id="ngff0.4-zarr2"), pytest.param(3, id="ngff0.5-zarr3")]


def noisy_cyx(shape=(3, 64, 48), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).sum(axis=0) * 7 % 256
    return np.clip(grid + rng.normal(0, 9, shape), 0, 255).astype(np.uint8)


def write_ome_image(path: Path, array: np.ndarray, axes: str, zarr_format: int, chunks) -> Path:
    """An OME-Zarr image written by ome-zarr-py, with a pyramid of 2 levels."""
    zarr = pytest.importorskip("zarr")
    writer = pytest.importorskip("ome_zarr.writer")
    formats = pytest.importorskip("ome_zarr.format")
    fmt = formats.FormatV04() if zarr_format == 2 else formats.FormatV05()
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    writer.write_image(
        array, group, axes=axes, fmt=fmt, scale_factors=(2,), storage_options={"chunks": chunks}
    )
    return path


def ome_attributes(path: Path) -> dict:
    import zarr

    from napari_kmeans_filter._omezarr import _ome_attrs

    return _ome_attrs(dict(zarr.open_group(str(path), mode="r").attrs))[0]


@pytest.mark.parametrize("zarr_format", OME_VERSIONS)
def test_ome_zarr_labels_go_under_the_input_image(tmp_path, zarr_format):
    """`--labels IMAGE` writes labels/kmeans: an OME-NGFF label image valid for the spec's
    models, label values 1..k, the palette as colours, the statistics as properties, one
    level per image level; `-o out.zarr` a new OME-Zarr image like the input."""
    import zarr

    from napari_kmeans_filter._omezarr import read_image

    models = pytest.importorskip(f"ome_zarr_models.v0{4 if zarr_format == 2 else 5}")
    data = noisy_cyx()
    image = write_ome_image(tmp_path / "img.ome.zarr", data, "cyx", zarr_format, (3, 16, 16))
    completed = run_cli(
        "img.ome.zarr", "-k", "6", "--labels", "img.ome.zarr", "-o", "out.zarr", cwd=tmp_path
    )
    assert_ok(completed)
    assert FILE_LINE.match(completed.stderr.strip())
    expected = quantize(data, 6, channel_axis=0, random_state=0)

    group = zarr.open_group(str(image), mode="r")
    models.Image.from_zarr(group)
    models.Labels.from_zarr(group["labels"])
    label = models.ImageLabel.from_zarr(group["labels"]["kmeans"])
    assert label.attributes is not None
    assert ome_attributes(image / "labels")["labels"] == ["kmeans"]
    labels = group["labels"]["kmeans"]
    np.testing.assert_array_equal(labels["0"][...], expected.labels + 1)
    np.testing.assert_array_equal(labels["1"][...], labels["0"][...][::2, ::2])
    assert labels["0"].chunks == (16, 16)
    assert labels["0"].metadata.zarr_format == zarr_format
    meta = ome_attributes(image / "labels" / "kmeans")["image-label"]
    # label 0, the background, transparent and without statistics; then the palette
    assert meta["colors"] == [{"label-value": 0, "rgba": [0, 0, 0, 0]}] + [
        {"label-value": i + 1, "rgba": [*map(int, colour), 255]}
        for i, colour in enumerate(expected.palette.colors)
    ]
    assert meta["properties"][0] == {"label-value": 0}
    assert [row["count"] for row in meta["properties"][1:]] == expected.palette.counts.tolist()
    assert meta["source"] == {"image": "../../"}

    written = read_image(tmp_path / "out.zarr")
    source = read_image(image)
    assert (written.zarr_format, written.axis_names) == (zarr_format, ("c", "y", "x"))
    assert written.storage_chunks == source.storage_chunks
    np.testing.assert_array_equal(written.data.compute(), expected.image)
    models.Image.from_zarr(zarr.open_group(str(tmp_path / "out.zarr"), mode="r"))


def test_ome_zarr_image_and_labels_outputs_read_the_input_once(tmp_path, monkeypatch):
    """`-o out.zarr --labels IMAGE` from an OME-Zarr image computes both outputs in one pass
    over the input, as `--no-image --labels IMAGE` does: the fit's pass and one writing
    pass. Each OME output used to compute on its own (3 reads)."""
    import zarr

    from napari_kmeans_filter.cli import main

    image = write_ome_image(tmp_path / "img.ome.zarr", noisy_cyx(), "cyx", 3, (3, 16, 16))
    reads = []
    real = zarr.Array.__getitem__

    def counting(self, selection):
        inside = str(self.store_path).partition("img.ome.zarr")[2]
        values = real(self, selection)
        if inside and "labels" not in inside and values.size:  # not the image's labels,
            reads.append(selection)  # nor dask's empty reads of its metadata
        return values

    monkeypatch.setattr(zarr.Array, "__getitem__", counting)
    counts = []
    both = ["--labels", str(image), "-o", str(tmp_path / "out.zarr")]
    for outputs in (["--no-image", "--labels", str(image)], both):
        reads.clear()
        assert main([str(image), "-k", "4", "-q", "--chunked", *outputs, "--overwrite"]) == 0
        counts.append(len(reads))
    assert counts == [2, 2]  # the image is one task here
    monkeypatch.undo()
    expected = quantize(noisy_cyx(), 4, channel_axis=0, random_state=0)
    group = zarr.open_group(str(image), mode="r")
    np.testing.assert_array_equal(group["labels"]["kmeans"]["0"][...], expected.labels + 1)


def test_a_second_ctrl_c_does_not_stop_the_cleanup_of_ome_labels(tmp_path, monkeypatch, capsys):
    """`timeout -s INT` (and an impatient user) sends Ctrl-C twice: the second one arrived
    while the unfinished label image was being removed and left it, complete, inside the
    input's labels/ folder. Signals after the first are now ignored until the run ends.
    Here the first Ctrl-C comes as the label image is to be put in place, the second as its
    removal starts."""
    from napari_kmeans_filter import _omezarr
    from napari_kmeans_filter.cli import main

    image = write_ome_image(tmp_path / "img.ome.zarr", noisy_cyx(), "cyx", 3, (3, 16, 16))

    def interrupted_finish(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the KeyboardInterrupt comes first
        raise AssertionError("Ctrl-C was not delivered")

    real_remove = _omezarr.remove_output

    def remove_interrupted_again(path, **options):
        os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode: inside the removal
        time.sleep(0.05)
        real_remove(path, **options)

    monkeypatch.setattr(_omezarr.PendingLabels, "finish", interrupted_finish)
    monkeypatch.setattr(_omezarr, "remove_output", remove_interrupted_again)
    outputs = ["--labels", str(image), "-o", str(tmp_path / "out.zarr"), "-q"]
    assert main([str(image), "-k", "4", *outputs]) == 130
    assert capsys.readouterr().err.strip().endswith("interrupted")
    assert sorted(p.name for p in (image / "labels").iterdir() if p.is_dir()) == []
    assert not list(tmp_path.glob(".out.zarr*")) and not (tmp_path / "out.zarr").exists()


def test_labels_named_as_an_array_of_an_ome_zarr_input_point_to_the_image(tmp_path):
    """`--labels img.ome.zarr/0` (the image's own full-resolution array) is refused as a
    change to the input, and the message says how to write its OME-NGFF label image; it
    said "is a directory: name a file for the labels"."""
    image = write_ome_image(tmp_path / "img.ome.zarr", noisy_cyx(), "cyx", 2, (3, 16, 16))
    before = sorted(p.name for p in image.rglob("*"))
    completed = run_cli("img.ome.zarr", "-k", "4", "--labels", "img.ome.zarr/0", cwd=tmp_path)
    assert completed.returncode == 2
    message = completed.stderr.strip()
    assert "\n" not in message and "would change the input" in message, message
    assert message.endswith("(--labels img.ome.zarr writes its OME-NGFF label image)"), message
    assert sorted(p.name for p in image.rglob("*")) == before


def test_ome_zarr_volume_labels_pool_planes_into_one_palette(tmp_path, monkeypatch):
    """A CZYX image: z stays an axis of the labels (ZYX), every plane shares the palette."""
    import zarr

    from napari_kmeans_filter.cli import main

    models = pytest.importorskip("ome_zarr_models.v05")
    monkeypatch.chdir(tmp_path)
    volume = noisy_cyx((3, 4, 32, 24), seed=2)
    write_ome_image(tmp_path / "vol.ome.zarr", volume, "czyx", 3, (3, 1, 16, 16))
    assert main(["vol.ome.zarr", "-k", "5", "--labels", "vol.ome.zarr", "-q"]) == 0
    expected = quantize(volume, 5, channel_axis=0)
    group = zarr.open_group("vol.ome.zarr/labels/kmeans", mode="r")
    np.testing.assert_array_equal(group["0"][...], expected.labels + 1)
    assert group["0"].chunks == (1, 16, 16)
    axes = ome_attributes(tmp_path / "vol.ome.zarr/labels/kmeans")["multiscales"][0]["axes"]
    assert [axis["name"] for axis in axes] == ["z", "y", "x"]
    models.ImageLabel.from_zarr(group)
    written = zarr.open_group("vol_k5.ome.zarr", mode="r")["0"][...]  # the default output
    np.testing.assert_array_equal(written, expected.image)


def test_ome_zarr_labels_follow_the_overwrite_rule_and_names(tmp_path, monkeypatch, capsys):
    import zarr

    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    data = noisy_cyx((3, 32, 40), seed=1)
    write_ome_image(tmp_path / "img.ome.zarr", data, "cyx", 2, (3, 16, 16))
    first = ["img.ome.zarr", "-k", "4", "-o", "a.npy", "-q"]
    assert main([*first, "--labels", "img.ome.zarr/labels"]) == 0
    assert (tmp_path / "img.ome.zarr" / "labels" / "kmeans").is_dir()
    # The one overwrite rule: an existing label image needs --overwrite, checked first.
    assert main(["img.ome.zarr", "-k", "4", "-o", "b.npy", "--labels", "img.ome.zarr"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.endswith(
        "img.ome.zarr/labels/kmeans already exists (use --overwrite to replace it)"
    )
    assert not (tmp_path / "b.npy").exists()
    # Another name beside it, listed too.
    into = "img.ome.zarr/labels/k3"
    assert main(["img.ome.zarr", "-k", "3", "-o", "c.npy", "--labels", into, "-q"]) == 0
    assert ome_attributes(tmp_path / "img.ome.zarr" / "labels")["labels"] == ["kmeans", "k3"]
    k3 = zarr.open_group("img.ome.zarr/labels/k3", mode="r")["0"][...]
    np.testing.assert_array_equal(k3, quantize(data, 3, channel_axis=0).labels + 1)
    # Anywhere else inside the input is still refused, and a channel axis other than the
    # image's own cannot give label images of the image's axes.
    for arguments, words in [
        (["--labels", "img.ome.zarr/0/x.zarr"], ["refusing to write labels", "input"]),
        (["--labels", "img.ome.zarr", "--channel-axis", "none"], ["--labels", "channel axis"]),
    ]:
        before = folder_state(tmp_path / "img.ome.zarr")
        status = main(["img.ome.zarr", "-k", "3", "-o", "d.npy", "--overwrite", *arguments])
        assert_one_error_line(status, capsys.readouterr().err, words)
        assert folder_state(tmp_path / "img.ome.zarr") == before


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_outputs_keep_the_inputs_chunks_and_format(tmp_path, monkeypatch, zarr_format):
    """v2 in, v2 out (older readers open it), in the input's storage chunks: the labels in
    those less the channel axis."""
    import zarr

    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    stack = np.stack([data.chelsea()[:64, :80], data.astronaut()[:64, :80, :3]])
    array = zarr.create_array(
        "stack.zarr",
        shape=stack.shape,
        chunks=(1, 16, 32, 3),
        dtype="uint8",
        zarr_format=zarr_format,
    )
    array[...] = stack
    assert main(["stack.zarr", "-k", "5", "-o", "out.zarr", "--labels", "labels.zarr", "-q"]) == 0
    expected = quantize(stack, 5)
    image, labels = zarr.open_array("out.zarr", mode="r"), zarr.open_array("labels.zarr", mode="r")
    assert (image.metadata.zarr_format, labels.metadata.zarr_format) == (zarr_format,) * 2
    assert image.chunks == (1, 16, 32, 3) and labels.chunks == (1, 16, 32)
    np.testing.assert_array_equal(image[...], expected.image)
    np.testing.assert_array_equal(labels[...], expected.labels)


@pytest.mark.parametrize("channel_axis", [None, 2])
def test_imagej_hyperstack_keeps_its_axes_through_the_command_line(tmp_path, channel_axis):
    """A TZCYX ImageJ hyperstack comes out as one (issue 19): the quantised image TZCYX, the
    labels TZYX when --channel-axis names C (channels clustered jointly), else TZCYX too."""
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (2, 3, 2, 40, 50)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "hyper.tif", stack, imagej=True, metadata={"axes": "TZCYX"})
    options = [] if channel_axis is None else ["--channel-axis", str(channel_axis)]
    completed = run_cli(
        "hyper.tif", "-k", "4", *options, "-o", "out.tif", "--labels", "labels.tif", cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    with tifffile.TiffFile(tmp_path / "out.tif") as written:
        assert written.is_imagej and written.series[0].axes == "TZCYX"
        image = written.asarray()
    with tifffile.TiffFile(tmp_path / "labels.tif") as written:
        assert written.is_imagej
        assert written.series[0].axes == ("TZCYX" if channel_axis is None else "TZYX")
        labels = written.asarray()
    assert image.shape == stack.shape
    assert labels.shape == (stack.shape if channel_axis is None else (2, 3, 40, 50))
    assert labels.max() < 4
