"""TIFF outputs keep an ImageJ hyperstack's or OME-TIFF's metadata (issue 19 item 3):
the physical pixel size (OME-XML ``PhysicalSizeX/Y/Z``; ImageJ's X/Y resolution, unit and
Z spacing), in memory and chunk by chunk, and the hyperstack itself when the pixels are
written chunk by chunk.

Inputs are written by tifffile as microscopy software writes them; outputs are read back
by tifffile's OME-XML and ImageJ parsers.
"""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_kmeans_filter import _io, quantize
from napari_kmeans_filter._io import open_image, tiff

RNG = np.random.default_rng(7)


def _ome_sizes(path) -> dict:
    """``PhysicalSize*`` attributes of the first image of an OME-TIFF, as tifffile parses them."""
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    return {key: value for key, value in pixels.items() if key.startswith("PhysicalSize")}


def _imagej_calibration(path) -> tuple:
    """(X resolution, Y resolution, ImageJ unit, ImageJ spacing) of an ImageJ TIFF."""
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        page, metadata = tif.pages.first, tif.imagej_metadata
        return (*page.resolution, metadata.get("unit"), metadata.get("spacing"))


OME_SIZES = {
    "PhysicalSizeX": 0.325,
    "PhysicalSizeXUnit": "µm",
    "PhysicalSizeY": 0.5,
    "PhysicalSizeYUnit": "µm",
    "PhysicalSizeZ": 2.0,
    "PhysicalSizeZUnit": "nm",
}


def _outputs(source, channel_axis, k=6) -> dict:
    """The quantised image and labels of an input, as the command line writes them."""
    result = quantize(source.load(), k, channel_axis=channel_axis, random_state=0)
    return {"image": result.image, "labels": result.labels}


# ---------------------------------------------------------------------------------------------
# Reading


def test_ome_tiff_pixel_sizes_are_read(tmp_path):
    stack = RNG.integers(0, 9, (2, 3, 16, 12), dtype=np.uint16)  # C Z Y X
    tifffile.imwrite(
        tmp_path / "in.ome.tif", stack, ome=True, metadata={"axes": "CZYX", **OME_SIZES}
    )
    with open_image(tmp_path / "in.ome.tif") as source:
        assert source.pixel_sizes == {"X": (0.325, "µm"), "Y": (0.5, "µm"), "Z": (2.0, "nm")}
    # OME-XML's default unit is the micrometre
    tifffile.imwrite(tmp_path / "default.ome.tif", stack[0, 0], metadata={"PhysicalSizeX": 0.1})
    with open_image(tmp_path / "default.ome.tif") as source:
        assert source.pixel_sizes == {"X": (0.1, "µm")}
    tifffile.imwrite(tmp_path / "none.ome.tif", stack, ome=True, metadata={"axes": "CZYX"})
    with open_image(tmp_path / "none.ome.tif") as source:
        assert source.pixel_sizes is None


def test_imagej_calibration_is_read(tmp_path):
    stack = RNG.integers(0, 9, (3, 16, 12), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "cal.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),
        metadata={"axes": "ZYX", "unit": "micron", "spacing": 1.5},
    )
    with open_image(tmp_path / "cal.tif") as source:
        assert source.pixel_sizes == {"X": (0.25, "µm"), "Y": (0.5, "µm"), "Z": (1.5, "µm")}
    # no unit in the description: the ResolutionUnit tag's, written back as ImageJ's unit
    tifffile.imwrite(
        tmp_path / "cm.tif", stack, imagej=True, resolution=(10, 20), resolutionunit="CENTIMETER"
    )
    with open_image(tmp_path / "cm.tif") as source:
        assert source.pixel_sizes == {"X": (0.1, "cm"), "Y": (0.05, "cm")}
        metadata = _io.output_metadata(source, stack.shape, None)
    _io.write_array(tmp_path / "cm_out.tif", stack, fmt="tiff", channel_axis=None, **metadata)
    assert _imagej_calibration(tmp_path / "cm_out.tif") == (10.0, 20.0, "cm", None)
    # ImageJ's "pixel" (no calibration) is no physical size
    tifffile.imwrite(tmp_path / "pixel.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    with open_image(tmp_path / "pixel.tif") as source:
        assert source.pixel_sizes is None


def test_ome_zarr_scale_and_units_are_pixel_sizes(tmp_path):
    zarr = pytest.importorskip("zarr")
    ome_writer = pytest.importorskip("ome_zarr.writer")
    data = RNG.integers(0, 200, (3, 32, 24), dtype=np.uint8)
    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    ome_writer.write_image(
        data,
        group,
        axes="cyx",
        scale={"c": 1.0, "y": 0.4, "x": 0.2},
        axes_units={"y": "micrometer", "x": "micrometer"},
        scale_factors=(),
    )
    with open_image(tmp_path / "img.zarr") as source:
        assert source.pixel_sizes == {"Y": (0.4, "µm"), "X": (0.2, "µm")}
        result = quantize(source.load(), 6, channel_axis=source.channel_axis, random_state=0)
        metadata = _io.output_metadata(source, result.image.shape, source.channel_axis)
    # an OME-Zarr image goes to TIFF as an OME-TIFF with its pixel size
    tiff.write_tiff_from_dask(tmp_path / "out.tif", result.image, source.channel_axis, **metadata)
    assert _ome_sizes(tmp_path / "out.tif") == {
        "PhysicalSizeX": 0.2,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": 0.4,
        "PhysicalSizeYUnit": "µm",
    }
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), result.image.compute())


# ---------------------------------------------------------------------------------------------
# Writing: in memory and chunk by chunk


@pytest.mark.parametrize("lazy", [False, True], ids=["in-memory", "chunked"])
def test_ome_tiff_outputs_keep_the_physical_pixel_size(tmp_path, lazy):
    """Image (TCZYX) and labels (TZYX) of an OME-TIFF keep its PhysicalSizeX/Y/Z, units
    included; before, the OME-XML of the outputs had none."""
    stack = RNG.integers(0, 3, (2, 2, 3, 32, 24), dtype=np.uint16) * 1000  # T C Z Y X
    tifffile.imwrite(
        tmp_path / "in.ome.tif", stack, ome=True, metadata={"axes": "TCZYX", **OME_SIZES}
    )
    with open_image(tmp_path / "in.ome.tif", chunked=lazy) as source:
        assert source.lazy is lazy
        outputs = _outputs(source, 1)
        for name, array in outputs.items():
            path = tmp_path / f"{name}.tif"
            metadata = _io.output_metadata(source, array.shape, 1)
            channel_axis = 1 if name == "image" else None
            if lazy:
                assert tiff.can_stream_tiff(array.ndim, channel_axis, metadata["axes"])
                tiff.write_tiff_from_dask(path, array, channel_axis, **metadata)
            else:
                _io.write_array(path, array, fmt="tiff", channel_axis=channel_axis, **metadata)
            assert _ome_sizes(path) == OME_SIZES
            with tifffile.TiffFile(path) as tif:
                assert tif.series[0].axes == ("TCZYX" if name == "image" else "TZYX")
                np.testing.assert_array_equal(tif.asarray(), np.asarray(array))


def test_a_2d_ome_tiff_with_pixel_sizes_stays_an_ome_tiff(tmp_path):
    """A plain 2-D image is written as a plain TIFF, unless it has a pixel size to keep."""
    rgb = RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    sizes = {"PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "mm"}
    tifffile.imwrite(tmp_path / "in.ome.tif", rgb, photometric="rgb", metadata=sizes)
    with open_image(tmp_path / "in.ome.tif") as source:
        outputs = _outputs(source, -1)
        for name, array in outputs.items():
            metadata = _io.output_metadata(source, array.shape, -1)
            path, channel_axis = tmp_path / f"{name}.tif", -1 if name == "image" else None
            _io.write_array(path, array, fmt="tiff", channel_axis=channel_axis, **metadata)
            assert _ome_sizes(path) == sizes
            np.testing.assert_array_equal(tifffile.imread(path), array)


@pytest.mark.parametrize("lazy", [False, True], ids=["in-memory", "chunked"])
def test_imagej_outputs_keep_resolution_unit_and_spacing(tmp_path, lazy, monkeypatch):
    """An ImageJ hyperstack's X/Y resolution (pixels per unit) comes out with its unit and Z
    spacing, in the image and the labels; before, the outputs' resolution was 1 pixel per
    unit (ImageJ showed a pixel of 1 micron)."""
    monkeypatch.setattr(tiff, "CHUNK_BYTES", 3 * 40 * 32)  # parts of three pages
    stack = RNG.integers(0, 4, (2, 3, 2, 40, 32), dtype=np.uint8) * 60  # T Z C Y X
    tifffile.imwrite(
        tmp_path / "hyper.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.125),
        metadata={"axes": "TZCYX", "unit": "micron", "spacing": 0.75, "finterval": 2.0},
    )
    with open_image(tmp_path / "hyper.tif", chunked=lazy) as source:
        assert source.lazy is lazy
        outputs = _outputs(source, 2, k=16)
        for name, array in outputs.items():
            path = tmp_path / f"{name}.tif"
            metadata = _io.output_metadata(source, array.shape, 2)
            channel_axis = 2 if name == "image" else None
            if lazy:
                assert tiff.can_stream_tiff(array.ndim, channel_axis, metadata["axes"])
                tiff.write_tiff_from_dask(path, array, channel_axis, **metadata)
            else:
                _io.write_array(path, array, fmt="tiff", channel_axis=channel_axis, **metadata)
            assert _imagej_calibration(path) == (4.0, 8.0, "micron", 0.75)
            with tifffile.TiffFile(path) as tif:
                assert tif.series[0].axes == ("TZCYX" if name == "image" else "TZYX")
                assert tif.imagej_metadata["finterval"] == 2.0
                np.testing.assert_array_equal(tif.asarray(), np.asarray(array))


# ---------------------------------------------------------------------------------------------
# Hyperstacks written chunk by chunk


@pytest.mark.parametrize(
    ("chunk_bytes", "shape", "axes"),
    [
        (10**9, (2, 3, 2, 24, 20), "TZCYX"),  # one part
        (3 * 24 * 20, (2, 3, 2, 24, 20), "TZCYX"),  # parts of 3 pages: C whole, Z in part
        (24 * 20 // 2, (2, 3, 2, 24, 20), "TZCYX"),  # pages larger than a part: one at a time
        (5 * 16 * 12 * 3, (4, 3, 16, 12, 3), "TZYXS"),  # RGB pages, Z whole, T in part
        (10**9, (24, 20), "YX"),
    ],
)
def test_hyperstacks_are_written_chunk_by_chunk(tmp_path, monkeypatch, chunk_bytes, shape, axes):
    """A dask array with ImageJ axes is written as an ImageJ hyperstack in strips (ImageJ
    reads no tiles), in runs of whole pages in ImageJ's order; before, it was a tiled,
    shaped TIFF (axes QQQYX) or, channels not last, an uncompressed memory map."""
    monkeypatch.setattr(tiff, "CHUNK_BYTES", chunk_bytes)
    values = RNG.integers(0, 255, shape, dtype=np.uint8)
    array = da.from_array(values, chunks=tuple(max(1, n // 2) for n in shape))
    channel_axis = -1 if axes.endswith("S") else (2 if "C" in axes else None)
    fractions = []
    assert tiff.can_stream_tiff(len(shape), channel_axis, tuple(axes))
    tiff.write_tiff_from_dask(
        tmp_path / "out.tif",
        array,
        channel_axis,
        progress=fractions.append,
        axes=tuple(axes),
        imagej={"mode": "composite"},
    )
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == axes
        assert not tif.pages.first.is_tiled
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        np.testing.assert_array_equal(tif.asarray(), values)
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    with open_image(tmp_path / "out.tif") as back:
        assert back.axes == tuple(axes)


def test_page_runs_hold_whole_pages_in_file_order():
    array = da.zeros((2, 3, 4, 5, 6), dtype=np.uint16, chunks=1)
    page = 5 * 6 * 2
    # innermost page axes whole while they fit, then one in part, the rest one at a time
    assert tiff._page_runs(array, 3).chunksize == (2, 3, 4, 5, 6)  # all of it fits
    old = tiff.CHUNK_BYTES
    try:
        tiff.CHUNK_BYTES = 10 * page
        assert tiff._page_runs(array, 3).chunks[:3] == ((1, 1), (2, 1), (4,))
        tiff.CHUNK_BYTES = 3 * page
        assert tiff._page_runs(array, 3).chunks[:3] == ((1, 1), (1, 1, 1), (3, 1))
        tiff.CHUNK_BYTES = 1
        assert tiff._page_runs(array, 3).chunksize == (1, 1, 1, 5, 6)
    finally:
        tiff.CHUNK_BYTES = old


def test_named_axes_without_an_imagej_or_ome_layout_stream_as_pages(tmp_path):
    """Axes ImageJ and OME-TIFF cannot hold (int32 samples, a Q axis) with channels
    among the pages: pages of a plain TIFF, streamed, not refused."""
    values = RNG.integers(-5, 5, (3, 2, 16, 16), dtype=np.int32)  # Q C Y X
    assert tiff.can_stream_tiff(4, 1, ("Q", "C", "Y", "X"))
    assert not tiff.can_stream_tiff(4, 1, None)
    tiff.write_tiff_from_dask(
        tmp_path / "q.tif", da.from_array(values, chunks=2), 1, axes=("Q", "C", "Y", "X")
    )
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q.tif"), values)


def test_tiled_writing_reports_every_band_to_the_end(tmp_path, monkeypatch):
    """The last band's report came after its tiles, which tifffile never asks past: the
    writing bar stopped at (n - 1) / n."""
    monkeypatch.setattr(tiff, "CHUNK_BYTES", 20_000)  # bands of 256 rows: three here
    fractions = []
    array = da.zeros((600, 300, 3), dtype=np.uint8, chunks=100)
    tiff.write_tiff_from_dask(tmp_path / "t.tif", array, -1, progress=fractions.append)
    assert fractions == [1 / 3, 2 / 3, 1.0]


# ---------------------------------------------------------------------------------------------
# Through the command line


def _cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_kmeans_filter", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


def test_command_line_keeps_hyperstacks_and_calibration_in_memory_and_chunked(tmp_path):
    """A calibrated TZCYX hyperstack through the command line, whole and with --chunked:
    image TZCYX and labels TZYX hyperstacks with its resolution, unit and spacing, the
    same pixels either way (chunked, the image was an uncompressed memory map with
    tifffile's axes QQQYX and the labels a tiled QQYX TIFF, neither calibrated)."""
    stack = RNG.integers(0, 255, (2, 3, 2, 40, 50), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "hyper.tif",
        stack,
        imagej=True,
        resolution=(4.0, 8.0),
        metadata={"axes": "TZCYX", "unit": "micron", "spacing": 0.75},
    )
    written = {}
    for mode in ("whole", "chunked"):
        options = ["--chunked"] if mode == "chunked" else []
        completed = _cli(
            "hyper.tif", "-k", "4", "--channel-axis", "2", *options,
            "-o", f"{mode}.tif", "--labels", f"{mode}_labels.tif", cwd=tmp_path,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        for name, axes in ((mode, "TZCYX"), (f"{mode}_labels", "TZYX")):
            path = tmp_path / f"{name}.tif"
            assert _imagej_calibration(path) == (4.0, 8.0, "micron", 0.75)
            with tifffile.TiffFile(path) as tif:
                assert tif.series[0].axes == axes
                written[name] = tif.asarray()
    np.testing.assert_array_equal(written["chunked"], written["whole"])
    np.testing.assert_array_equal(written["chunked_labels"], written["whole_labels"])
    assert written["whole_labels"].max() < 4


def test_command_line_keeps_ome_pixel_sizes_in_memory_and_chunked(tmp_path):
    stack = RNG.integers(0, 3, (2, 3, 32, 24), dtype=np.uint16) * 1000  # C Z Y X
    tifffile.imwrite(
        tmp_path / "in.ome.tif", stack, ome=True, metadata={"axes": "CZYX", **OME_SIZES}
    )
    written = {}
    for mode in ("whole", "chunked"):
        options = ["--chunked"] if mode == "chunked" else []
        completed = _cli(
            "in.ome.tif", "-k", "4", "--channel-axis", "0", *options,
            "-o", f"{mode}.tif", "--labels", f"{mode}_labels.tif", cwd=tmp_path,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        for name, axes in ((mode, "CZYX"), (f"{mode}_labels", "ZYX")):
            path = tmp_path / f"{name}.tif"
            assert _ome_sizes(path) == OME_SIZES
            with tifffile.TiffFile(path) as tif:
                assert tif.series[0].axes == axes
                written[name] = tif.asarray()
    np.testing.assert_array_equal(written["chunked"], written["whole"])
    np.testing.assert_array_equal(written["chunked_labels"], written["whole_labels"])
