"""Files as users have them, each from a public bug report of a comparable tool: one test
per row of issue 17's table that belongs to file input and output (rows 1-6, 11, 12),
with the value a user expects.

What the command line prints or passes on comes from ``_io``: ``InputImage.notes`` (a
preview left out), ``InputImage.icc_profile`` and ``icc_profile_note``.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from napari_kmeans_filter._io import (
    ImageIOError,
    create_lazy_target,
    icc_profile_note,
    open_image,
    write_array,
    write_tiff_from_dask,
)
from napari_kmeans_filter.cli import main

imagecodecs = pytest.importorskip("imagecodecs")

# "[1/1] a.png → b.png  5→5 colours  lossless  0.01 s"
LINE = re.compile(r"(\d+)(?:→|->)(\d+) colours?  (lossless|PSNR (\S+) dB)")


def run(argv, capsys) -> tuple[int, str]:
    status = main([*map(str, argv), "--overwrite"])
    return status, capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Row 1: 16-bit colour PPM, PAM and JPEG 2000


def four_16bit_colours() -> np.ndarray:
    """Four colours that are one colour in 8 bits (their high bytes agree)."""
    colours = np.array(
        [[4096, 8192, 12288], [4097, 8192, 12288], [4096, 8193, 12288], [4096, 8192, 12289]],
        np.uint16,
    )
    return colours[np.arange(24).reshape(4, 6) % 4]


def ppm16(image: np.ndarray) -> bytes:
    height, width = image.shape[:2]
    return f"P6\n{width} {height}\n65535\n".encode() + image.astype(">u2").tobytes()


def pam16(image: np.ndarray) -> bytes:
    height, width = image.shape[:2]
    header = f"P7\nWIDTH {width}\nHEIGHT {height}\nDEPTH 3\nMAXVAL 65535\nTUPLTYPE RGB\nENDHDR\n"
    return header.encode() + image.astype(">u2").tobytes()


@pytest.mark.parametrize("kind", ["ppm", "pam", "jp2"])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_row1_16bit_colour_netpbm_and_jpeg2000_stay_16bit(tmp_path, capsys, kind, suffix):
    image = four_16bit_colours()
    path = tmp_path / f"in.{kind}"
    if kind == "ppm":
        path.write_bytes(ppm16(image))
    elif kind == "pam":
        path.write_bytes(pam16(image))
    else:
        path.write_bytes(imagecodecs.jpeg2k_encode(image, level=0))  # lossless
    source = open_image(path)
    assert source.dtype == np.uint16
    np.testing.assert_array_equal(source.load(), image)
    output = tmp_path / f"out{suffix}"
    status, err = run([path, "-k", 4, "-o", output], capsys)
    assert status == 0, err
    assert LINE.search(err).group(1, 2, 3) == ("4", "4", "lossless"), err
    written = np.asarray(open_image(output).load())
    assert written.dtype == np.uint16
    np.testing.assert_array_equal(written, image)


def test_row1_16bit_grey_pgm_stays_right(tmp_path):
    """The case that was already right stays right (Pillow's scaling of maxval 1023)."""
    path = tmp_path / "grey.pgm"
    values = np.array([[0, 1, 511, 1023]])
    path.write_bytes(b"P5\n4 1\n1023\n" + values.astype(">u2").tobytes())
    np.testing.assert_array_equal(open_image(path).load(), [[0, 64, 32735, 65535]])
    assert np.asarray(Image.open(path)).tolist() == [[0, 64, 32735, 65535]]


# --------------------------------------------------------------------------------------
# Row 2: pages written one at a time


def test_row2_pages_written_singly_are_frames_of_one_stack(tmp_path, capsys):
    path = tmp_path / "pages.tif"
    pages = np.arange(75, dtype=np.uint8).reshape(3, 5, 5) % 7 * 30
    for page in pages:
        tifffile.imwrite(path, page, append=True)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 3  # the case: one series per page
    output = tmp_path / "out.tif"
    status, err = run([path, "-k", 7, "-o", output], capsys)
    assert status == 0, err
    np.testing.assert_array_equal(tifffile.imread(output), pages)


def test_row2_the_message_for_images_of_two_kinds_is_true(tmp_path, capsys):
    """Same shape, different dtypes: not "different shapes (5, 5) (5, 5)"."""
    path = tmp_path / "mixed.tif"
    tifffile.imwrite(path, np.zeros((5, 5), np.uint8), append=True)
    tifffile.imwrite(path, np.zeros((5, 5), np.uint16), append=True)
    status, err = run([path, "-k", 2, "-o", tmp_path / "out.tif"], capsys)
    assert status == 2
    assert "2 images of shape (5, 5) but different kinds (uint8 MINISBLACK, uint16" in err
    assert "different shapes" not in err
    path = tmp_path / "shapes.tif"
    tifffile.imwrite(path, np.zeros((5, 5), np.uint8), append=True)
    tifffile.imwrite(path, np.zeros((4, 6), np.uint8), append=True)
    status, err = run([path, "-k", 2, "-o", tmp_path / "out.tif"], capsys)
    assert status == 2 and "2 images of different shapes (5, 5) (4, 6)" in err


# --------------------------------------------------------------------------------------
# Row 3: a reduced-resolution preview page


def preview_tiff(path: Path, image: np.ndarray) -> Path:
    """The full image and a small preview (NewSubfileType 1), as scanners write them."""
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, photometric="rgb", metadata=None)
        tif.write(image[::4, ::4], photometric="rgb", subfiletype=1, metadata=None)
    return path


@pytest.mark.parametrize("layout", ["16-bit image, 8-bit preview", "thumbnail first"])
def test_row3_preview_page_is_left_out_and_the_image_quantised(tmp_path, capsys, layout):
    image = (np.arange(8 * 12 * 3).reshape(8, 12, 3) % 5 * 60).astype(np.uint16) * 257
    preview = (image[::4, ::4] >> 8).astype(np.uint8)
    pages = [(image, 0), (preview, 1)]
    path = tmp_path / "scan.tif"
    with tifffile.TiffWriter(path) as tif:
        for data, subfiletype in pages if layout[0] == "1" else pages[::-1]:
            tif.write(data, photometric="rgb", subfiletype=subfiletype)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 2  # the case: refused as two images of different shapes
    source = open_image(path)
    assert source.shape == image.shape
    assert source.notes == [
        "left out 1 reduced-resolution page (a preview or pyramid level); "
        "the full-size image is read"
    ]
    output = tmp_path / "out.png"
    status, err = run([path, "-k", 5, "-o", output], capsys)
    assert status == 0, err
    np.testing.assert_array_equal(open_image(output).load(), image)


def test_row3_a_smaller_page_not_flagged_reduced_is_not_dropped(tmp_path, capsys):
    """tifffile makes a smaller page that follows a larger one a pyramid level; without
    NewSubfileType saying so it is a picture of its own, not a preview: refused, never
    silently left out."""
    path = tmp_path / "two.tif"
    image = np.zeros((8, 12, 3), np.uint8)
    Image.fromarray(image).save(path, save_all=True, append_images=[Image.new("RGB", (3, 2))])
    status, err = run([path, "-k", 2, "-o", tmp_path / "out.tif"], capsys)
    assert status == 2
    assert "2 images of different shapes (8, 12, 3) (2, 3, 3)" in err
    assert not (tmp_path / "out.tif").exists()


def test_row3_the_command_line_says_the_preview_was_left_out(tmp_path, capsys):
    image = np.zeros((8, 12, 3), np.uint8)
    path = preview_tiff(tmp_path / "scan.tif", image)
    status, err = run([path, "-k", 2, "-o", tmp_path / "out.png"], capsys)
    assert status == 0, err
    assert "reduced-resolution" in err


# --------------------------------------------------------------------------------------
# Row 4: planar RGB TIFF


def test_row4_planar_rgb_tiff_is_an_rgb_picture(tmp_path, capsys):
    image = (np.arange(6 * 8 * 3).reshape(6, 8, 3) % 4 * 80).astype(np.uint8)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(image, -1, 0), photometric="rgb", planarconfig="separate")
    source = open_image(path)
    assert (source.shape, source.channel_axis) == (image.shape, -1)
    output = tmp_path / "out.png"
    status, err = run([path, "-k", 4, "-o", output], capsys)
    assert status == 0, err
    np.testing.assert_array_equal(np.asarray(Image.open(output).convert("RGB")), image)


# --------------------------------------------------------------------------------------
# Row 5: float RGB TIFF output


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "uint32"])
def test_row5_rgb_tiff_output_is_tagged_rgb_in_every_dtype(tmp_path, capsys, dtype):
    image = (np.arange(6 * 8 * 3).reshape(6, 8, 3) % 4 * 7).astype(dtype)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    output = tmp_path / "out.tif"
    status, err = run([path, "-k", 4, "-o", output], capsys)
    assert status == 0, err
    with tifffile.TiffFile(output) as tif:
        page = tif.pages[0]
        assert page.photometric.name == "RGB"
        assert page.extrasamples == ()
        np.testing.assert_array_equal(page.asarray(), image)


# --------------------------------------------------------------------------------------
# Row 6: ICC profiles


def adobe_like_profile() -> bytes:
    """An RGB profile told apart from Pillow's sRGB by its manufacturer field (the test
    needs a profile the writer cannot have made up, not an Adobe RGB one)."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    data[44:48] = b"TEST"  # device manufacturer: tells this profile from Pillow's default
    return bytes(data)


@pytest.mark.parametrize(
    ("suffix", "dtype", "indexed"),
    [
        (".png", "uint8", True),
        (".png", "uint8", False),
        (".png", "uint16", False),
        (".jpg", "uint8", False),
        (".tif", "uint8", False),
        (".tif", "float32", False),
    ],
)
def test_row6_icc_profile_is_written_where_the_format_holds_one(tmp_path, suffix, dtype, indexed):
    profile = adobe_like_profile()
    image = (np.arange(6 * 8 * 3).reshape(6, 8, 3) % 4 * 60).astype(dtype)
    labels = (np.arange(6 * 8 * 3).reshape(6, 8, 3) % 4)[..., 0]
    output = tmp_path / f"out{suffix}"
    write_array(
        output,
        image,
        fmt={".png": "png", ".jpg": "jpeg", ".tif": "tiff"}[suffix],
        channel_axis=-1,
        labels=labels if indexed else None,
        colors=np.unique(image.reshape(-1, 3), axis=0) if indexed else None,
        indexed=indexed,
        icc_profile=profile,
    )
    assert open_image(output).icc_profile == profile
    if suffix == ".png":
        with Image.open(output) as written:
            assert written.info["icc_profile"] == profile
            assert (written.mode == "P") == indexed


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_row6_icc_profile_is_read(tmp_path, suffix):
    profile = adobe_like_profile()
    path = tmp_path / f"in{suffix}"
    options = {"lossless": True} if suffix == ".webp" else {}
    Image.new("RGB", (4, 3), (200, 30, 10)).save(path, icc_profile=profile, **options)
    source = open_image(path)
    assert source.icc_profile == profile and source.notes == []


@pytest.mark.parametrize("how", ["streamed", "memory-mapped"])
def test_row6_icc_profile_in_tiffs_written_chunk_by_chunk(tmp_path, how):
    da = pytest.importorskip("dask.array")
    profile = adobe_like_profile()
    image = (np.arange(6 * 8 * 3).reshape(6, 8, 3) % 4 * 60).astype(np.uint8)
    output = tmp_path / "out.tif"
    if how == "streamed":
        write_tiff_from_dask(output, da.from_array(image, chunks=3), -1, icc_profile=profile)
    else:
        target = create_lazy_target(
            output, "tiff", image.shape, image.dtype, None, -1, icc_profile=profile
        )
        target[...] = image
        target.flush()
        del target
    source = open_image(output)
    assert source.icc_profile == profile
    np.testing.assert_array_equal(source.load(), image)


def test_row6_a_note_where_the_output_cannot_hold_the_profile(tmp_path):
    profile = adobe_like_profile()
    for name in ("out.npy", "out.zarr"):
        note = icc_profile_note(tmp_path / name, profile)
        assert "ICC colour profile" in note and name in note
    for name in ("out.png", "out.jpg", "out.tif"):
        assert icc_profile_note(tmp_path / name, profile) is None
    assert icc_profile_note(tmp_path / "out.npy", None) is None


def test_row6_grey_profile_keeps_a_grey_png_plain(tmp_path):
    """PNG allows an RGB profile only with a palette: grey pixels with a grey profile are
    written as plain grey, not indexed (whose palette is RGB)."""
    profile = bytearray(adobe_like_profile())
    profile[16:20] = b"GRAY"
    output = tmp_path / "out.png"
    image = np.array([[0, 90], [200, 255]], np.uint8)
    write_array(output, image, fmt="png", channel_axis=None, icc_profile=bytes(profile))
    with Image.open(output) as written:
        assert written.mode == "L" and written.info["icc_profile"] == bytes(profile)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_row6_the_command_line_keeps_the_profile(tmp_path, capsys, suffix):
    profile = adobe_like_profile()
    path = tmp_path / "in.png"
    image = (np.arange(6 * 8 * 3).reshape(6, 8, 3) % 4 * 60).astype(np.uint8)
    Image.fromarray(image).save(path, icc_profile=profile)
    output = tmp_path / f"out{suffix}"
    status, err = run([path, "-k", 4, "-o", output], capsys)
    assert status == 0, err
    assert open_image(output).icc_profile == profile


def test_row6_the_command_line_notes_a_profile_it_cannot_keep(tmp_path, capsys):
    path = tmp_path / "in.png"
    Image.new("RGB", (4, 3), (200, 30, 10)).save(path, icc_profile=adobe_like_profile())
    status, err = run([path, "-k", 2, "-o", tmp_path / "out.npy"], capsys)
    assert status == 0, err
    assert "ICC colour profile" in err


# --------------------------------------------------------------------------------------
# Row 11: --optimize


def dithered_gradient() -> np.ndarray:
    """Eight levels dithered over a gradient: Pillow's optimize=True (zlib level 9)
    encodes this larger than its default (measured: 1,415 -> 1,583 bytes indexed)."""
    y, x = np.mgrid[:64, :96]
    noise = np.random.default_rng(0).random((64, 96)) * 1.5
    return np.clip((x + y * 0.7) / 160 * 8 + noise, 0, 7).astype(np.uint8)


@pytest.mark.parametrize("layout", ["indexed", "grey", "rgb", "rgb16"])
def test_row11_optimize_never_makes_a_png_larger(tmp_path, layout):
    index = dithered_gradient()
    colours = np.stack([index * 30, index * 20, 255 - index * 30], axis=-1).astype(np.uint8)
    image = {
        "indexed": colours,
        "grey": (index * 30).astype(np.uint8),
        "rgb": colours,
        "rgb16": colours.astype(np.uint16) * 257,
    }[layout]
    sizes = []
    for optimize in (False, True):
        output = tmp_path / f"out{optimize}.png"
        write_array(
            output,
            image,
            fmt="png",
            channel_axis=None if image.ndim == 2 else -1,
            indexed=layout == "indexed",
            optimize=optimize,
        )
        np.testing.assert_array_equal(open_image(output).load(), image)
        sizes.append(output.stat().st_size)
    assert sizes[1] <= sizes[0]
    if layout == "indexed":  # the case that grew: Pillow's optimize alone is larger here
        buffers = []
        for optimize in (False, True):
            buffer = io.BytesIO()
            with Image.open(tmp_path / "outFalse.png") as plain:
                plain.save(buffer, format="PNG", optimize=optimize)
            buffers.append(len(buffer.getvalue()))
        assert buffers[1] > buffers[0]


# --------------------------------------------------------------------------------------
# Row 12: symbolic links


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX links")
def test_row12_a_symlink_loop_is_named_as_such(tmp_path, capsys):
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    status, err = run([tmp_path / "a.png", "-k", 2, "-o", tmp_path / "out.png"], capsys)
    assert status == 2
    assert "loop of symbolic links" in err and "a.png" in err and "no such file" not in err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(ImageIOError, match=r"a symbolic link to .*missing\.png, which does not"):
        open_image(tmp_path / "gone.png")
    with pytest.raises(ImageIOError, match="no such file"):
        open_image(tmp_path / "nothing.png")
