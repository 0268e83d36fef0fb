"""A picture's resolution survives the command line: DPI (PNG pHYs, JPEG density, TIFF in
inches) and a TIFF's pixels per centimetre reach PNG, JPEG and TIFF outputs, the labels'
too; a resolution without a unit (an aspect ratio), a made-up one (Pillow's 72 dpi for a
JPEG with EXIF) or a broken one (a missing axis, a zero denominator) is not carried over.

Inputs are written by Pillow and tifffile (a broken tag patched in the bytes); every output
is read back by them.
"""

from __future__ import annotations

import struct
import subprocess

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data

PROG = "napari-kmeans-filter"
CAT = data.chelsea()[::2, ::2]
#: A PNG's pHYs holds whole pixels per metre: a resolution read back is within half of one
#: (0.0127 dpi) of the one written.
PHYS = 0.0127


def _run(*args) -> str:
    done = subprocess.run([PROG, *map(str, args), "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _tiff_resolution(path) -> tuple:
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        return (*page.resolution, int(page.resolutionunit))


def _no_resolution(directory) -> bool:
    """Whether the PNG, JPEG and TIFF outputs in ``directory`` state no resolution."""
    return (
        _dpi(directory / "out.png") is None
        and _dpi(directory / "out.jpg") in (None, (1, 1), (0, 0))  # JFIF's aspect ratio
        and _tiff_resolution(directory / "out.tif")[2] == tifffile.RESUNIT.NONE
    )


def _all_formats(source, directory) -> None:
    for name in ("out.png", "out.jpg", "out.tif"):
        _run(source, "-k", "8", "-o", directory / name)


def _dpi(path):
    with Image.open(path) as image:
        return image.info.get("dpi")


def test_dpi_of_a_png_reaches_png_tiff_and_jpeg_outputs_and_the_labels(tmp_path):
    source = tmp_path / "scan.png"
    Image.fromarray(CAT).save(source, dpi=(300, 150))
    _run(source, "-k", "8", "-o", tmp_path / "out.png", "--labels", tmp_path / "labels.tif")
    _run(source, "-k", "8", "-o", tmp_path / "out.tif")
    _run(source, "-k", "8", "-o", tmp_path / "out.jpg")
    assert _dpi(tmp_path / "out.png") == pytest.approx((300, 150), abs=PHYS)
    assert _dpi(tmp_path / "out.jpg") == (300, 150)
    for name in ("out.tif", "labels.tif"):  # the pHYs's whole pixels per metre, per cm
        assert _tiff_resolution(tmp_path / name) == (118.11, 59.06, tifffile.RESUNIT.CENTIMETER)


def test_a_tiff_in_centimetres_stays_in_centimetres_and_gives_png_its_dpi(tmp_path):
    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, CAT, resolution=(100, 50), resolutionunit="CENTIMETER")
    _run(source, "-k", "8", "-o", tmp_path / "out.tif")
    _run(source, "-k", "8", "-o", tmp_path / "out.png")
    x, y, unit = _tiff_resolution(tmp_path / "out.tif")
    assert (x, y, unit) == (pytest.approx(100), pytest.approx(50), tifffile.RESUNIT.CENTIMETER)
    assert _dpi(tmp_path / "out.png") == pytest.approx((254, 127), abs=PHYS)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({296: 3, 282: 100, 283: 50}, (100, 50, tifffile.RESUNIT.CENTIMETER)),
        ({296: 2, 282: 100, 283: 50}, (100, 50, tifffile.RESUNIT.INCH)),
        ({282: 100, 283: 50}, (100, 50, tifffile.RESUNIT.INCH)),  # TIFF's default unit
        ({296: 1, 282: 100, 283: 50}, None),  # an aspect ratio: no size
        ({296: 3, 282: 100}, None),  # no YResolution (Pillow makes up 1)
    ],
)
def test_a_palette_tiff_keeps_its_resolution_and_unit(tmp_path, tags, expected):
    """A palette TIFF is read by Pillow, which turns centimetres into dpi: the unit is kept."""
    from PIL import TiffImagePlugin

    source = tmp_path / "palette.tif"
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    for tag, value in tags.items():
        ifd[tag] = value
    Image.fromarray(CAT).quantize(16).save(source, tiffinfo=ifd)
    with Image.open(source) as image:  # the file states what the case says
        assert image.mode == "P" and {t: image.tag_v2.get(t) for t in tags} == tags
        assert all(image.tag_v2.get(t) is None for t in (282, 283, 296) if t not in tags)
    _run(source, "-k", "8", "-o", tmp_path / "out.tif")
    x, y, written = _tiff_resolution(tmp_path / "out.tif")
    if expected is None:
        assert written == tifffile.RESUNIT.NONE
    else:
        assert (x, y, written) == (
            pytest.approx(expected[0]),
            pytest.approx(expected[1]),
            expected[2],
        )


def test_a_tiff_read_chunk_by_chunk_keeps_its_resolution(tmp_path):
    source = tmp_path / "scan.tif"
    tifffile.imwrite(source, CAT, resolution=(100, 50), resolutionunit="CENTIMETER", tile=(64, 64))
    _run(source, "-k", "8", "--chunked", "-o", tmp_path / "out.tif")
    x, y, unit = _tiff_resolution(tmp_path / "out.tif")
    assert (x, y, unit) == (pytest.approx(100), pytest.approx(50), tifffile.RESUNIT.CENTIMETER)


def test_a_resolution_without_a_unit_is_not_a_size(tmp_path):
    source = tmp_path / "aspect.tif"
    tifffile.imwrite(source, CAT, resolution=(2, 1), resolutionunit="NONE")
    _run(source, "-k", "8", "-o", tmp_path / "out.png")
    _run(source, "-k", "8", "-o", tmp_path / "out.tif")
    assert _dpi(tmp_path / "out.png") is None
    assert _tiff_resolution(tmp_path / "out.tif")[2] == tifffile.RESUNIT.NONE


def test_a_turned_jpeg_turns_its_resolution_with_its_pixels(tmp_path):
    source = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: rows become columns
    Image.fromarray(CAT).save(source, dpi=(72, 144), exif=exif, quality=95)
    _run(source, "-k", "8", "-o", tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (CAT.shape[0], CAT.shape[1])
        assert out.info["dpi"] == pytest.approx((144, 72), abs=PHYS)


def test_sixteen_bit_colour_png_keeps_its_dpi(tmp_path):
    source = tmp_path / "deep.tif"
    deep = CAT.astype(np.uint16) * 257
    tifffile.imwrite(source, deep, resolution=(600, 600), resolutionunit="INCH")
    _run(source, "-k", "8", "-o", tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as out:
        assert out.info["dpi"] == pytest.approx((600, 600), abs=PHYS)
    import imagecodecs

    assert imagecodecs.png_decode((tmp_path / "out.png").read_bytes()).dtype == np.uint16


def test_a_resolution_a_format_cannot_hold_is_left_out(tmp_path):
    source = tmp_path / "fine.tif"
    # 10^9 pixels a centimetre: 10^11 a metre, past the 32 bits of a PNG's pHYs and the
    # 16 bits of a JPEG's density; a TIFF holds it.
    tifffile.imwrite(source, CAT, resolution=(1e9, 1e9), resolutionunit="CENTIMETER")
    for name in ("out.png", "out.jpg", "out.tif"):
        _run(source, "-k", "8", "-o", tmp_path / name)
    assert _dpi(tmp_path / "out.png") is None
    assert _dpi(tmp_path / "out.jpg") in (None, (1, 1), (0, 0))
    assert _tiff_resolution(tmp_path / "out.tif")[:2] == (pytest.approx(1e9), pytest.approx(1e9))


def test_a_jpeg_with_exif_but_no_resolution_gets_none(tmp_path):
    """Pillow makes up 72 dpi for such a JPEG (an EXIF orientation is enough)."""
    source = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 1
    Image.fromarray(CAT).save(source, exif=exif)
    with Image.open(source) as image:
        assert image.info.get("dpi") == (72, 72)  # Pillow's, not the file's
    _all_formats(source, tmp_path)
    assert _no_resolution(tmp_path)


def test_a_jpeg_s_exif_resolution_keeps_both_axes(tmp_path):
    source = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x011A], exif[0x011B], exif[0x0128] = 200.0, 100.0, 2
    Image.fromarray(CAT).save(source, exif=exif)
    _run(source, "-k", "8", "-o", tmp_path / "out.tif")
    assert _tiff_resolution(tmp_path / "out.tif") == (200, 100, tifffile.RESUNIT.INCH)


def test_a_png_in_pixels_per_metre_gives_a_tiff_pixels_per_centimetre(tmp_path):
    source = tmp_path / "scan.png"
    Image.fromarray(CAT).save(source, dpi=(300, 300))  # 11811 pixels a metre
    _run(source, "-k", "8", "-o", tmp_path / "out.tif")
    x, y, unit = _tiff_resolution(tmp_path / "out.tif")
    assert (x, y, unit) == (118.11, 118.11, tifffile.RESUNIT.CENTIMETER)


def test_a_tiff_with_one_resolution_tag_or_a_zero_denominator_states_none(tmp_path):
    from PIL import TiffImagePlugin

    one_tag = tmp_path / "one.tif"
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[282], tags[296] = 300.0, 2  # XResolution, inches; no YResolution
    Image.fromarray(CAT).save(one_tag, tiffinfo=tags)
    zero = tmp_path / "zero.tif"
    tifffile.imwrite(zero, CAT, resolution=(300, 150), resolutionunit="INCH")
    with tifffile.TiffFile(zero) as tif:
        at = tif.pages.first.tags[282].valueoffset
    patched = bytearray(zero.read_bytes())
    patched[at + 4 : at + 8] = struct.pack("<I", 0)  # 300/0
    zero.write_bytes(bytes(patched))
    for source in (one_tag, zero):
        directory = tmp_path / source.stem
        directory.mkdir()
        _all_formats(source, directory)
        assert _no_resolution(directory), source.name


def test_zarr_and_npy_outputs_say_they_lose_the_pixel_size(tmp_path):
    source = tmp_path / "scan.png"
    Image.fromarray(CAT).save(source, dpi=(300, 300))
    said = _run(source, "-k", "8", "-o", tmp_path / "out.npy", "--labels", tmp_path / "l.zarr")
    assert said.count("not the input's pixel size") == 2, said
    quiet = tmp_path / "plain.png"
    Image.fromarray(CAT).save(quiet)
    assert "pixel size" not in _run(quiet, "-k", "8", "-o", tmp_path / "plain.npy")
