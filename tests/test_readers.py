"""Reader conformance: every file kind a user has, read as a viewer shows it.

Small files are generated in every mode and layout Pillow, tifffile and imagecodecs
write.  For each one:

* the reader returns what a viewer shows, checked against values built independently
  of the reader (the palette looked up by hand, the CMYK formula, the stored pixels
  turned by numpy, ...): shape, frames, dtype, alpha;
* the command line with k at least the number of colours returns the same visible
  pixels, frames, alpha and shape (a lossless round trip), to every output format that
  can hold them;
* with small k it returns at most k visible colours.

The families of issue 17 are cases of the same suite: every PGM/PPM/PAM depth (plain and
raw, 1 to 16 bits, with alpha, several images in one file; PBM; float PFM), JPEG 2000 up
to 16 bits, TIFF ``planarconfig`` x photometric x every dtype the writer tags, pages
written one at a time and as one series, reduced-resolution and thumbnail pages (left
out, with a note), ICC profiles in PNG, JPEG, TIFF and WebP (kept where they describe the
pixels read, and written to PNG and TIFF outputs).

Then one test per row of the table of issue 9, with the value a user expects.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_kmeans_filter._io import check_writable, open_image
from napari_kmeans_filter.cli import main

imagecodecs = pytest.importorskip("imagecodecs")
zarr = pytest.importorskip("zarr")

RNG = np.random.default_rng(9)
HEIGHT, WIDTH = 6, 8
# "[1/1] a.png → b.png  5→5 colours  lossless  0.01 s"
LINE = re.compile(r"(\d+)(?:→|->)(\d+) colours?  (lossless|PSNR (\S+) dB)")


# ---------------------------------------------------------------------------------------------
# Building the files


@dataclass
class Case:
    """A file and what a viewer shows for it."""

    path: Path
    expected: np.ndarray  # (T, ) Y, X (, C), frames first
    alpha: bool = False  # the last channel is alpha
    frames: int = 1
    tolerance: int = 0  # for oracles that round differently from the library (YCbCr, Lab)
    icc: bytes | None = None  # the ICC profile the reader must report
    note: str | None = None  # a word the reader's notes must hold


def pattern(n_colours: int, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    """Indices 0 .. n_colours-1, each one used, in a random layout."""
    index = np.arange(np.prod(shape)) % n_colours
    return RNG.permutation(index).reshape(shape)


def colours(n: int, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    values = RNG.choice(top + 1 if top < 2**16 else 2**16, size=(n, channels), replace=True)
    values[:, 0] = np.linspace(0, top, n).astype(values.dtype)  # distinct rows
    return values.astype(dtype)


def save_pillow(folder: Path, name: str, image: Image.Image, **options) -> Path:
    path = folder / name
    image.save(path, **options)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_trns(png: bytes, key: bytes) -> bytes:
    """A PNG with a tRNS chunk inserted after IHDR (no writer here adds one to 16-bit RGB)."""
    end_of_ihdr = 8 + 8 + 13 + 4
    return png[:end_of_ihdr] + png_chunk(b"tRNS", key) + png[end_of_ihdr:]


def build_cases(folder: Path) -> dict[str, Case]:
    global RNG
    RNG = np.random.default_rng(9)  # the same files every time they are built
    cases: dict[str, Case] = {}
    index = pattern(5)
    rgb_palette = colours(5)
    rgb = rgb_palette[index]
    grey = np.array([0, 40, 90, 200, 255], np.uint8)[index]
    alpha = np.array([255, 255, 0, 128, 255], np.uint8)[pattern(5)]
    rgba = np.dstack([rgb, alpha])

    def add(name, path, expected, **kwargs):
        cases[name] = Case(path, expected, **kwargs)

    # --- Pillow modes, PNG ------------------------------------------------------------
    bits = pattern(2).astype(bool)
    add("png-1", save_pillow(folder, "bilevel.png", Image.fromarray(bits)), bits * np.uint8(255))
    add("png-L", save_pillow(folder, "L.png", Image.fromarray(grey)), grey)
    keyed_grey = np.dstack([grey, np.where(grey == 90, 0, 255).astype(np.uint8)])
    add(
        "png-L-tRNS",
        save_pillow(folder, "L_trns.png", Image.fromarray(grey), transparency=90),
        keyed_grey,
        alpha=True,
    )
    la = np.dstack([grey, alpha])
    add("png-LA", save_pillow(folder, "LA.png", Image.fromarray(la, "LA")), la, alpha=True)
    indexed = Image.fromarray(index.astype(np.uint8), "P")
    indexed.putpalette(rgb_palette.tobytes())
    add("png-P", save_pillow(folder, "P.png", indexed), rgb)
    palette_alpha = np.array([255, 0, 128, 255, 60], np.uint8)
    add(
        "png-P-transparency",
        save_pillow(folder, "P_trns.png", indexed, transparency=palette_alpha.tobytes()),
        np.dstack([rgb, palette_alpha[index]]),
        alpha=True,
    )
    grey_indexed = Image.fromarray(index.astype(np.uint8), "P")
    grey_indexed.putpalette(np.repeat(np.unique(grey)[:, None], 3, axis=1).tobytes())
    add("png-P-grey", save_pillow(folder, "P_grey.png", grey_indexed), np.unique(grey)[index])
    add("png-RGB", save_pillow(folder, "RGB.png", Image.fromarray(rgb)), rgb)
    key = tuple(int(v) for v in rgb_palette[2])
    add(
        "png-RGB-tRNS",
        save_pillow(folder, "RGB_trns.png", Image.fromarray(rgb), transparency=key),
        np.dstack([rgb, np.where(index == 2, 0, 255).astype(np.uint8)]),
        alpha=True,
    )
    add("png-RGBA", save_pillow(folder, "RGBA.png", Image.fromarray(rgba)), rgba, alpha=True)
    grey16 = np.array([0, 1000, 30000, 65000, 65535], np.uint16)[index]
    add("png-I;16", save_pillow(folder, "I16.png", Image.fromarray(grey16)), grey16)
    add(
        "png-I;16-tRNS",
        save_pillow(folder, "I16_trns.png", Image.fromarray(grey16), transparency=1000),
        np.dstack([grey16, np.where(grey16 == 1000, 0, 65535)]).astype(np.uint16),
        alpha=True,
    )
    # --- 16-bit colour PNG and APNG, written by imagecodecs ----------------------------
    rgb16 = colours(5, 3, np.uint16)[index]
    rgba16 = np.dstack([rgb16, (alpha.astype(np.uint16) * 257)])
    la16 = np.dstack([grey16, alpha.astype(np.uint16) * 257])
    for name, array, has_alpha in (("RGB", rgb16, False), ("RGBA", rgba16, True)):
        path = folder / f"{name}16.png"
        path.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(array)))
        add(f"png-{name}16", path, array, alpha=has_alpha)
    path = folder / "LA16.png"
    path.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(la16)))
    add("png-LA16", path, la16, alpha=True)
    key16 = rgb16[index == 3][0]
    path = folder / "RGB16_trns.png"
    png = imagecodecs.png_encode(np.ascontiguousarray(rgb16))
    path.write_bytes(with_trns(png, key16.astype(">u2").tobytes()))
    keyed = np.where(index == 3, 0, 65535).astype(np.uint16)
    add("png-RGB16-tRNS", path, np.dstack([rgb16, keyed]), alpha=True)
    stack16 = np.stack([rgb16, rgb16[::-1], rgb16[:, ::-1]])
    path = folder / "RGB16.apng"
    path.write_bytes(imagecodecs.apng_encode(stack16))
    add("apng-RGB16", path, stack16, frames=3)

    # --- frames: GIF, APNG, WebP -------------------------------------------------------
    frame_colours = np.array([[230, 20, 20], [20, 160, 20], [20, 20, 230], [250, 250, 250]])
    frames = np.stack([frame_colours[pattern(2) + shift] for shift in (0, 1, 2)]).astype(np.uint8)
    images = [Image.fromarray(frame) for frame in frames]
    opaque = np.full((*frames.shape[:-1], 1), 255, np.uint8)
    for name, options, expected in (
        ("anim.gif", {}, frames),
        ("anim.png", {}, frames),
        # libwebp flags the animation as having alpha (its frames are blended), so the
        # file says RGBA; every pixel is opaque.
        ("anim.webp", {"lossless": True}, np.concatenate([frames, opaque], axis=-1)),
    ):
        path = save_pillow(
            folder,
            name,
            images[0],
            save_all=True,
            append_images=images[1:],
            duration=100,
            **options,
        )
        kind = name.split(".")[1]
        add(f"{kind}-3-frames", path, expected, frames=3, alpha=expected.shape[-1] == 4)
    gif = Image.fromarray(index.astype(np.uint8), "P")
    gif.putpalette(rgb_palette.tobytes())
    add(
        "gif-transparency",
        save_pillow(folder, "trns.gif", gif, transparency=4),
        np.dstack([rgb, np.where(index == 4, 0, 255).astype(np.uint8)]),
        alpha=True,
    )
    add(
        "webp-RGBA",
        save_pillow(folder, "RGBA.webp", Image.fromarray(rgba), lossless=True, exact=True),
        rgba,
        alpha=True,
    )
    add("bmp-RGB", save_pillow(folder, "RGB.bmp", Image.fromarray(rgb)), rgb)
    add("bmp-P", save_pillow(folder, "P.bmp", indexed), rgb)
    add("ppm-RGB", save_pillow(folder, "RGB.ppm", Image.fromarray(rgb)), rgb)
    add("pgm-16", save_pillow(folder, "I16.pgm", Image.fromarray(grey16)), grey16)

    # --- JPEG with EXIF orientation: the stored pixels turned as viewers turn them -----
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    path = save_pillow(folder, "rotated.jpg", Image.fromarray(rgb), exif=exif, quality=95)
    with Image.open(path) as stored:
        decoded = np.asarray(stored.convert("RGB"))
    add("jpeg-exif-rotated", path, np.rot90(decoded, -1))

    # --- Pillow modes, TIFF ------------------------------------------------------------
    cmyk_colours = np.array(
        [[255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 255], [0, 0, 255, 0], [0, 0, 0, 0]], np.uint8
    )
    cmyk_as_rgb = np.array(
        [[0, 255, 255], [255, 0, 255], [0, 0, 0], [255, 255, 0], [255, 255, 255]], np.uint8
    )
    ycbcr = np.dstack([grey, 128 + (index * 9 - 18), 128 - (index * 7 - 14)]).astype(np.uint8)
    pillow_tiffs = {
        "1": (Image.fromarray(bits), bits * np.uint8(255), False),
        "L": (Image.fromarray(grey), grey, False),
        "LA": (Image.fromarray(la, "LA"), la, True),
        "P": (indexed, rgb, False),
        "PA": (Image.fromarray(rgba).convert("PA"), None, True),
        "RGB": (Image.fromarray(rgb), rgb, False),
        "RGBA": (Image.fromarray(rgba), rgba, True),
        "CMYK": (Image.fromarray(cmyk_colours[index], "CMYK"), cmyk_as_rgb[index], False),
        "YCbCr": (Image.fromarray(ycbcr, "YCbCr"), jfif_to_rgb(ycbcr), False),
        "I;16": (Image.fromarray(grey16), grey16, False),
        "I;16B": (
            Image.frombytes("I;16B", (WIDTH, HEIGHT), grey16.astype(">u2").tobytes()),
            grey16,
            False,
        ),
        "I": (
            Image.fromarray(grey16.astype(np.int32) - 30000),
            grey16.astype(np.int32) - 30000,
            False,
        ),
        "F": (Image.fromarray(grey16.astype(np.float32) / 7), grey16.astype(np.float32) / 7, False),
    }
    for mode, (image, expected, has_alpha) in pillow_tiffs.items():
        if expected is None:  # PA: the palette Pillow chose, looked up by hand
            pa = np.asarray(image)
            lookup = np.asarray(image.getpalette("RGB")).reshape(-1, 3)[pa[..., 0]]
            expected = np.dstack([lookup, pa[..., 1]]).astype(np.uint8)
        name = mode.replace(";", "")
        tolerance = 1 if mode == "YCbCr" else 0
        path = save_pillow(folder, f"pillow_{name}.tif", image)
        add(f"tiff-pillow-{mode}", path, expected, alpha=has_alpha, tolerance=tolerance)
    for compression in ("tiff_lzw", "tiff_adobe_deflate", "packbits"):
        path = save_pillow(
            folder, f"RGB_{compression}.tif", Image.fromarray(rgb), compression=compression
        )
        add(f"tiff-pillow-RGB-{compression}", path, rgb)
    path = save_pillow(folder, "bilevel_g4.tif", Image.fromarray(bits), compression="group4")
    add("tiff-pillow-1-group4", path, bits * np.uint8(255))
    pages = [Image.fromarray(frame) for frame in frames]
    path = save_pillow(folder, "pages.tif", pages[0], save_all=True, append_images=pages[1:])
    add("tiff-pillow-3-pages", path, frames, frames=3)

    # --- tifffile: dtypes, byte orders, layouts, compressions, photometrics -------------
    def tiff(name, data, expected=None, *, alpha_=False, frames_=1, **options):
        path = folder / f"{name}.tif"
        tifffile.imwrite(path, data, **options)
        add(
            f"tiff-{name}",
            path,
            data if expected is None else expected,
            alpha=alpha_,
            frames=frames_,
        )

    for dtype in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"):
        values = np.array([-3.5, 0, 1, 7, 100], dtype=np.float64)
        if np.dtype(dtype).kind in "ui":
            info = np.iinfo(dtype)
            values = np.array(
                [info.min, info.min + 1, 0 if info.min < 0 else 2, info.max - 1, info.max]
            )
        data = values.astype(dtype)[index]
        for order in ("<", ">"):
            tiff(f"grey-{dtype}-{'le' if order == '<' else 'be'}", data, byteorder=order)
    tiff("float16", np.array([0, 0.5, 1, 2, 3], np.float16)[index])
    tiff("rgb-u16-be", rgb16, byteorder=">", photometric="rgb")
    tiff("rgb-tiled", np.tile(rgb, (6, 4, 1)), tile=(16, 16), photometric="rgb")
    tiff("rgb-striped", np.tile(rgb, (6, 1, 1)), rowsperstrip=2, photometric="rgb")
    for compression in ("zlib", "lzw", "zstd", "packbits", "lzma", "deflate"):
        tiff(f"rgb-{compression}", rgb, photometric="rgb", compression=compression)
    # Planar RGB is an RGB picture (as Pillow and viewers show it): samples come last.
    tiff("rgb-planar", np.moveaxis(rgb, -1, 0), rgb, photometric="rgb", planarconfig="separate")
    tiff("rgba-u8", rgba, alpha_=True, photometric="rgb", extrasamples=["unassalpha"])
    tiff("rgba-u16", rgba16, alpha_=True, photometric="rgb", extrasamples=["unassalpha"])
    tiff("grey-alpha", la, alpha_=True, photometric="minisblack", extrasamples=["unassalpha"])
    tiff("rgbx", rgba, photometric="rgb", extrasamples=["unspecified"])
    five = RNG.integers(0, 4, (HEIGHT, WIDTH, 5)).astype(np.uint16) * 1000
    tiff("five-samples", five, photometric="minisblack", planarconfig="contig")
    stack = np.stack([grey16, grey16[::-1], grey16 // 2]).astype(np.uint16)
    tiff("stack-u16", stack, frames_=3, photometric="minisblack")
    tiff("cmyk", cmyk_colours[index], cmyk_as_rgb[index], photometric="separated")
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, :5] = rgb_palette.T.astype(np.uint16) * 257
    tiff("palette", index.astype(np.uint8), rgb, photometric="palette", colormap=colormap)
    # tifffile writes booleans as bilevel MinIsWhite: a stored 1 shows black.
    tiff("bilevel", bits, np.where(bits, 0, 255).astype(np.uint8))
    tiff("miniswhite-u8", grey, 255 - grey, photometric="miniswhite")
    tiff(
        "orientation-6",
        np.tile(grey, (1, 1)),
        np.rot90(grey, -1),
        extratags=[(274, "H", 1, 6, True)],
    )
    tiff(
        "orientation-8-rgb",
        rgb,
        np.rot90(rgb, 1),
        photometric="rgb",
        extratags=[(274, "H", 1, 8, True)],
    )
    path = folder / "ycbcr_jpeg.tif"
    tifffile.imwrite(path, np.tile(rgb, (2, 2, 1)), photometric="rgb", compression="jpeg")
    add("tiff-ycbcr-jpeg", path, tifffile.imread(path))

    add_netpbm_cases(folder, add, index)
    add_jpeg2000_cases(folder, add, index)
    add_tiff_layout_cases(folder, add, index)
    add_tiff_page_cases(folder, add, index)
    add_icc_cases(folder, add, index)
    return cases


# --- issue 17's families ---------------------------------------------------------------


def netpbm_bytes(magic: str, samples: np.ndarray, maxval: int, tupltype: str = "") -> bytes:
    """A netpbm image written by hand from the spec (netpbm.sourceforge.net/doc)."""
    height, width = samples.shape[:2]
    depth = 1 if samples.ndim == 2 else samples.shape[2]
    if magic == "P7":
        header = (
            f"P7\nWIDTH {width}\nHEIGHT {height}\nDEPTH {depth}\nMAXVAL {maxval}\n"
            f"# a comment\nTUPLTYPE {tupltype}\nENDHDR\n"
        )
    else:
        header = f"{magic}\n# a comment\n{width} {height}\n{maxval}\n"
    if magic in ("P2", "P3"):
        rows = [" ".join(map(str, row.ravel())) for row in samples]
        return header.encode() + "\n".join(rows).encode() + b"\n"
    dtype = ">u1" if maxval < 256 else ">u2"
    return header.encode() + samples.astype(dtype).tobytes()


def scaled(samples: np.ndarray, maxval: int) -> np.ndarray:
    """What a netpbm sample shows as: the full range of uint8 or uint16 (Pillow's rule)."""
    top = 255 if maxval < 256 else 65535
    values = samples.astype(np.int64) * top // maxval
    return values.astype(np.uint8 if top == 255 else np.uint16)


def add_netpbm_cases(folder: Path, add, index: np.ndarray) -> None:
    """Every PGM/PPM/PAM depth: maxval 1, 15, 255 (one byte), 1023, 65535 (two), plain
    and raw, grey, RGB, with alpha; several images in one file are frames."""
    for maxval in (1, 15, 255, 1023, 65535):
        levels = np.linspace(0, maxval, 5).round().astype(np.int64)
        grey = levels[index]
        rgb = np.dstack([grey, levels[::-1][index], levels[(index + 2) % 5]])
        for magic, samples in (("P2", grey), ("P5", grey), ("P3", rgb), ("P6", rgb)):
            path = folder / f"maxval{maxval}.{magic}.{'pgm' if samples.ndim == 2 else 'ppm'}"
            path.write_bytes(netpbm_bytes(magic, samples, maxval))
            add(f"netpbm-{magic}-maxval{maxval}", path, scaled(samples, maxval))
        alpha = np.where(index == 1, 0, maxval)
        for tupltype, samples in (
            ("GRAYSCALE", grey),
            ("GRAYSCALE_ALPHA", np.dstack([grey, alpha])),
            ("RGB", rgb),
            ("RGB_ALPHA", np.dstack([rgb, alpha])),
        ):
            path = folder / f"maxval{maxval}_{tupltype}.pam"
            path.write_bytes(netpbm_bytes("P7", samples, maxval, tupltype))
            has_alpha = tupltype.endswith("ALPHA")
            add(f"pam-{tupltype}-maxval{maxval}", path, scaled(samples, maxval), alpha=has_alpha)
    bits = (index % 2).astype(np.int64)
    path = folder / "blackandwhite.pam"
    path.write_bytes(netpbm_bytes("P7", bits, 1, "BLACKANDWHITE"))
    add("pam-BLACKANDWHITE", path, (bits * 255).astype(np.uint8))
    # PBM (1 = black), read by Pillow.
    path = folder / "bits.pbm"
    Image.fromarray(bits.astype(bool)).save(path)
    add("pbm-P4", path, (bits * 255).astype(np.uint8))
    # PFM: float32, rows bottom to top, a negative scale for little-endian samples.
    floats = np.array([-1.5, 0, 0.25, 1, 300], np.float32)
    float_rgb = np.dstack([floats[index], floats[::-1][index], floats[(index + 1) % 5]])
    for order, scale in (("<", b"-1.0"), (">", b"1.0")):
        name = "le" if order == "<" else "be"
        path = folder / f"rgb_{name}.pfm"
        rows = float_rgb[::-1].astype(f"{order}f4").tobytes()
        path.write_bytes(b"PF\n%d %d\n%s\n" % (WIDTH, HEIGHT, scale) + rows)
        add(f"pfm-PF-{name}", path, float_rgb)
    path = folder / "grey.pfm"
    grey_rows = float_rgb[::-1, :, 0].astype("<f4").tobytes()
    path.write_bytes(b"Pf\n%d %d\n-1.0\n" % (WIDTH, HEIGHT) + grey_rows)
    add("pfm-Pf", path, float_rgb[..., 0])
    # Several images one after another (netpbm's streams): frames.
    rgb16 = np.dstack([index * 13107, (4 - index) * 13107, index * 1000]).astype(np.int64)
    for magic, suffix in (("P6", "ppm"), ("P7", "pam")):
        images = [rgb16, rgb16[::-1], rgb16[:, ::-1]]
        path = folder / f"three.{suffix}"
        path.write_bytes(b"".join(netpbm_bytes(magic, one, 65535, "RGB") for one in images))
        add(f"netpbm-{magic}-3-images", path, np.stack(images).astype(np.uint16), frames=3)


def add_jpeg2000_cases(folder: Path, add, index: np.ndarray) -> None:
    """Lossless JPEG 2000 (JP2 box file and bare J2K codestream) of 8, 12 and 16 bits."""
    values16 = np.array([0, 1, 256, 40000, 65535], np.uint16)
    rgb16 = np.dstack([values16[index], values16[::-1][index], values16[(index + 1) % 5]])
    alpha16 = np.where(index == 2, 0, 65535).astype(np.uint16)
    rgb8 = (rgb16 >> 8).astype(np.uint8)
    rgb12 = rgb16 >> 4
    for name, data, expected, options in (
        ("RGB8", rgb8, rgb8, {}),
        ("RGB16", rgb16, rgb16, {}),
        ("RGBA16", np.dstack([rgb16, alpha16]), np.dstack([rgb16, alpha16]), {}),
        ("LA16", np.dstack([rgb16[..., 0], alpha16]), np.dstack([rgb16[..., 0], alpha16]), {}),
        ("L16", rgb16[..., 0], rgb16[..., 0], {}),
        # 12 bits read shifted to the full 16-bit range, as Pillow reads 12-bit grey.
        ("RGB12", rgb12, rgb12 << 4, {"bitspersample": 12}),
        ("RGB16-j2k", rgb16, rgb16, {"codecformat": "j2k"}),
    ):
        suffix = ".j2k" if name.endswith("j2k") else ".jp2"
        path = folder / f"{name}{suffix}"
        path.write_bytes(imagecodecs.jpeg2k_encode(np.ascontiguousarray(data), level=0, **options))
        has_alpha = expected.ndim == 3 and expected.shape[-1] in (2, 4)
        add(f"jpeg2000-{name}", path, expected, alpha=has_alpha)


#: Every dtype the TIFF writer tags as RGB (``_io.tiff._tiff_layout``).
TIFF_DTYPES = "uint8 int8 uint16 int16 uint32 int32 uint64 int64 float16 float32 float64".split()


def add_tiff_layout_cases(folder: Path, add, index: np.ndarray) -> None:
    """planarconfig x photometric x dtype: grey+alpha, RGB and RGBA, contiguous and
    planar, read with samples last."""
    for dtype in TIFF_DTYPES:
        if np.dtype(dtype).kind == "f":
            levels = np.array([-2.5, 0, 0.25, 1, 3e3]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            levels = np.array(
                [info.min, 0 if info.min else 1, 7, info.max - 1, info.max], dtype=dtype
            )
        rgb = np.dstack([levels[index], levels[::-1][index], levels[(index + 3) % 5]])
        top = levels[-1]
        alpha = np.where(index == 4, 0, top).astype(dtype)
        layouts = [("rgb", rgb, "rgb", False)]
        if dtype in ("uint8", "uint16", "float32"):
            layouts += [
                ("rgba", np.dstack([rgb, alpha]), "rgb", True),
                ("grey-alpha", np.dstack([rgb[..., 0], alpha]), "minisblack", True),
            ]
        for name, data, photometric, has_alpha in layouts:
            for planar in ("contig", "separate"):
                stored = data if planar == "contig" else np.moveaxis(data, -1, 0)
                path = folder / f"layout-{name}-{dtype}-{planar}.tif"
                extra = ["unassalpha"] if has_alpha else None
                tifffile.imwrite(
                    path,
                    stored,
                    photometric=photometric,
                    planarconfig=planar,
                    extrasamples=extra,
                )
                add(f"tiff-{name}-{dtype}-{planar}", path, data, alpha=has_alpha)


def add_tiff_page_cases(folder: Path, add, index: np.ndarray) -> None:
    """Pages written one at a time, and reduced-resolution pages (previews, thumbnails,
    pyramid levels) beside the full image."""
    grey = (index * 60).astype(np.uint8)
    frames = np.stack([grey, grey[::-1], grey[:, ::-1]])
    rgb16 = (np.dstack([index, 4 - index, index % 2]) * 16000).astype(np.uint16)

    path = folder / "pages_singly.tif"
    for frame in frames:
        tifffile.imwrite(path, frame, append=True)
    add("tiff-pages-singly", path, frames, frames=3)
    path = folder / "pages_singly_rgb.tif"
    for frame in (rgb16, rgb16[::-1]):
        tifffile.imwrite(path, frame, append=True, photometric="rgb")
    add("tiff-pages-singly-rgb16", path, np.stack([rgb16, rgb16[::-1]]), frames=2)
    path = folder / "pages_one_series.tif"
    tifffile.imwrite(path, frames, photometric="minisblack")
    add("tiff-pages-one-series", path, frames, frames=3)

    preview = np.zeros((2, 3, 3), np.uint8)
    for name, pages in (
        ("preview-after", [(rgb16, 0), (preview, 1)]),
        ("thumbnail-first", [(preview, 1), (rgb16, 0)]),
        ("preview-between-pages", [(rgb16, 0), (preview, 1), (rgb16[::-1], 0)]),
    ):
        path = folder / f"{name}.tif"
        with tifffile.TiffWriter(path) as tif:
            for data, subfiletype in pages:
                tif.write(data, photometric="rgb", subfiletype=subfiletype, metadata=None)
        full = [data for data, subfiletype in pages if not subfiletype]
        expected = full[0] if len(full) == 1 else np.stack(full)
        add(f"tiff-{name}", path, expected, frames=len(full), note="reduced-resolution")
    path = folder / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(rgb16, photometric="rgb", subifds=1)
        tif.write(rgb16[::2, ::2], photometric="rgb", subfiletype=1)
    add("tiff-pyramid-subifd", path, rgb16, note="reduced-resolution")
    # A CMYK page (read by Pillow) with an RGB thumbnail.
    cmyk_colours = np.array(
        [[255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 255], [0, 0, 255, 0], [0, 0, 0, 0]], np.uint8
    )
    cmyk_as_rgb = np.array(
        [[0, 255, 255], [255, 0, 255], [0, 0, 0], [255, 255, 0], [255, 255, 255]], np.uint8
    )
    cmyk = cmyk_colours[index]
    path = folder / "cmyk_thumbnail.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(cmyk, photometric="separated", metadata=None)
        tif.write(preview, photometric="rgb", subfiletype=1, metadata=None)
    add("tiff-pillow-cmyk-thumbnail", path, cmyk_as_rgb[index], note="reduced-resolution")


def icc_profile(space: str) -> bytes:
    from PIL import ImageCms

    profile = ImageCms.createProfile("sRGB") if space == "RGB" else ImageCms.createProfile("LAB")
    if space == "GRAY":  # Pillow builds no grey profile: the sRGB one, relabelled
        data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
        data[16:20] = b"GRAY"
        return bytes(data)
    return ImageCms.ImageCmsProfile(profile).tobytes()


def add_icc_cases(folder: Path, add, index: np.ndarray) -> None:
    """ICC profiles in PNG (plain, indexed, 16-bit), JPEG, WebP and TIFF."""
    rgb_profile, grey_profile = icc_profile("RGB"), icc_profile("GRAY")
    rgb = (np.dstack([index * 60, (4 - index) * 50, index % 3 * 100])).astype(np.uint8)
    grey = (index * 60).astype(np.uint8)
    image = Image.fromarray(rgb)
    for name, saved, options in (
        ("png-RGB", image, {}),
        ("png-P", image.quantize(5), {}),
        ("png-L", Image.fromarray(grey), {"grey": True}),
        ("webp-RGB", image, {"lossless": True, "exact": True}),
        ("tiff-pillow-RGB", image, {}),
    ):
        is_grey = options.pop("grey", False)
        profile = grey_profile if is_grey else rgb_profile
        suffix = {"png": ".png", "webp": ".webp", "tiff": ".tif"}[name.split("-")[0]]
        path = save_pillow(folder, f"icc_{name}{suffix}", saved, icc_profile=profile, **options)
        expected = grey if is_grey else np.asarray(saved.convert("RGB"))
        add(f"icc-{name}", path, expected, icc=profile)
    path = save_pillow(folder, "icc.jpg", image, icc_profile=rgb_profile, quality=95)
    with Image.open(path) as stored:
        decoded = np.asarray(stored.convert("RGB"))
    add("icc-jpeg", path, decoded, icc=rgb_profile)
    path = folder / "icc_tifffile.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", iccprofile=rgb_profile)
    add("icc-tiff-rgb", path, rgb, icc=rgb_profile)
    rgb16 = rgb.astype(np.uint16) * 257
    path = folder / "icc_rgb16.png"
    png = imagecodecs.png_encode(rgb16)
    data = b"ICC\x00\x00" + zlib.compress(rgb_profile)
    end_of_ihdr = 8 + 8 + 13 + 4
    path.write_bytes(png[:end_of_ihdr] + png_chunk(b"iCCP", data) + png[end_of_ihdr:])
    add("icc-png-RGB16", path, rgb16, icc=rgb_profile)
    # A CMYK JPEG's CMYK profile does not describe the RGB read: not kept, with a note.
    cmyk_profile = bytearray(rgb_profile)
    cmyk_profile[16:20] = b"CMYK"
    cmyk = Image.fromarray(np.dstack([rgb, grey]), "CMYK")
    path = save_pillow(folder, "icc_cmyk.jpg", cmyk, icc_profile=bytes(cmyk_profile), quality=95)
    with Image.open(path) as stored:
        decoded = np.asarray(stored.convert("RGB"))
    add("icc-jpeg-cmyk-not-kept", path, decoded, note="not kept")


def jfif_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """YCbCr -> RGB by the JFIF equations (ITU-R BT.601, full range)."""
    y, cb, cr = (ycbcr[..., i].astype(np.float64) for i in range(3))
    rgb = np.stack(
        [
            y + 1.402 * (cr - 128),
            y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
            y + 1.772 * (cb - 128),
        ],
        axis=-1,
    )
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    return build_cases(tmp_path_factory.mktemp("kinds"))


def _case_names() -> list[str]:
    """The ids, known before the fixture runs: the suite is parametrised by them."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return list(build_cases(Path(folder)))


CASE_NAMES = _case_names()


# ---------------------------------------------------------------------------------------------
# Helpers


def visible(image: np.ndarray, alpha: bool) -> np.ndarray:
    """The image with the colour of every fully transparent pixel zeroed: what shows."""
    if not alpha:
        return image
    shown = image.copy()
    shown[image[..., -1] == 0, :-1] = 0
    return shown


def n_visible_colours(image: np.ndarray, alpha: bool, channel_axis: int | None) -> int:
    if channel_axis is None:
        return len(np.unique(image))
    pixels = np.moveaxis(image, channel_axis, -1).reshape(-1, image.shape[channel_axis])
    if alpha:
        pixels = pixels[pixels[:, -1] > 0][:, :-1]
    return len(np.unique(pixels, axis=0))


def n_colours(image: np.ndarray, has_channels: bool) -> int:
    if not has_channels:
        return len(np.unique(image))
    return len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))


def run(argv, capsys) -> tuple[int, str]:
    status = main([*map(str, argv), "--overwrite"])
    return status, capsys.readouterr().err


def outputs_for(case: Case) -> list[str]:
    """Output formats that can hold this image (TIFF and .npy always can)."""
    suffixes = [".tif", ".npy"]
    channel_axis = -1 if case.expected.ndim == 2 + (case.frames > 1) + 1 else None
    try:
        check_writable("x.png", case.expected.shape, case.expected.dtype, channel_axis, case.alpha)
        suffixes.append(".png")
    except Exception:
        pass
    return suffixes


def read_output(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    return np.asarray(open_image(path).load())


# ---------------------------------------------------------------------------------------------
# The suite


@pytest.mark.parametrize("name", CASE_NAMES)
def test_reads_what_a_viewer_shows(cases, name):
    case = cases[name]
    source = open_image(case.path)
    image = source.load()
    assert image.shape == case.expected.shape == source.shape
    assert image.dtype == case.expected.dtype.newbyteorder("=") == source.dtype
    assert image.dtype.isnative
    assert bool(source.alpha) == case.alpha
    has_channels = case.expected.ndim == 2 + (case.frames > 1) + 1
    assert (source.channel_axis is not None) == has_channels
    assert source.icc_profile == case.icc
    if case.note is None:
        assert source.notes == []
    else:
        assert len(source.notes) == 1 and case.note in source.notes[0], source.notes
    if case.tolerance:
        difference = np.abs(image.astype(np.int64) - case.expected.astype(np.int64))
        assert difference.max() <= case.tolerance
    else:
        np.testing.assert_array_equal(
            visible(image, case.alpha), visible(case.expected, case.alpha)
        )


ROUND_TRIPS = [(name, suffix) for name in CASE_NAMES for suffix in (".tif", ".npy", ".png")]


@pytest.mark.parametrize(("name", "suffix"), ROUND_TRIPS)
def test_lossless_round_trip(cases, name, suffix, tmp_path, capsys):
    case = cases[name]
    if suffix not in outputs_for(case):
        # The format cannot hold it: refused before any work, naming the reason.
        status, err = run([case.path, "-k", 4096, "-o", tmp_path / f"out{suffix}"], capsys)
        assert status == 2 and "cannot write" in err and "Traceback" not in err
        assert not list(tmp_path.iterdir())
        if case.frames > 1:
            assert f"{case.frames} frames" in err
        return
    source = open_image(case.path).load()
    k = max(2, n_colours(source, source.ndim == 2 + (case.frames > 1) + 1))
    output = tmp_path / f"out{suffix}"
    status, err = run([case.path, "-k", k, "-o", output], capsys)
    assert status == 0, err
    if not case.alpha:  # (with alpha the core still counts hidden pixels: row 9 below)
        assert LINE.search(err).group(3) == "lossless", err
    written = read_output(output)
    assert written.shape == source.shape
    assert written.dtype == source.dtype
    np.testing.assert_array_equal(visible(written, case.alpha), visible(source, case.alpha))
    if suffix != ".npy":  # the ICC profile goes where the format holds one (issue 17, row 6)
        assert open_image(output).icc_profile == case.icc
    if suffix == ".tif":  # alpha is tagged, so a viewer shows it as alpha
        assert bool(open_image(output).alpha) == case.alpha
        # Three colour channels are tagged RGB whatever the dtype (issue 17, row 5).
        n_colour = source.shape[-1] - case.alpha if source.ndim == 3 + (case.frames > 1) else 1
        with tifffile.TiffFile(output) as tif:
            photometric = tif.pages[0].photometric.name
        assert photometric == ("RGB" if n_colour == 3 else "MINISBLACK")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_small_k_gives_at_most_k_colours(cases, name, tmp_path, capsys):
    case = cases[name]
    output = tmp_path / "out.tif"
    status, err = run([case.path, "-k", 2, "-o", output], capsys)
    assert status == 0, err
    written = tifffile.imread(output)
    source = open_image(case.path)
    assert written.shape == source.shape
    assert n_visible_colours(written, case.alpha, source.channel_axis) <= 2
    if case.alpha:  # alpha is carried through unchanged
        np.testing.assert_array_equal(written[..., -1], source.load()[..., -1])


LAZY_CASES = [
    "tiff-orientation-6",
    "tiff-orientation-8-rgb",
    "tiff-rgb-planar",
    "tiff-rgba-u16",
    "tiff-stack-u16",
    "tiff-grey-float32-be",
    "tiff-rgb-tiled",
    "tiff-pillow-3-pages",
    "tiff-pages-singly",
    "tiff-pages-singly-rgb16",
    "tiff-preview-between-pages",
    "tiff-rgba-uint16-separate",
    "tiff-rgb-float64-separate",
]


@pytest.mark.parametrize("name", LAZY_CASES)
def test_chunk_by_chunk_reads_the_same(cases, name):
    eager = open_image(cases[name].path)
    with open_image(cases[name].path, chunked=True) as lazy:  # closes its file handles
        assert lazy.lazy and (lazy.shape, lazy.dtype, lazy.alpha) == (
            eager.shape,
            eager.dtype,
            eager.alpha,
        )
        np.testing.assert_array_equal(lazy.load().compute(), eager.load())


# ---------------------------------------------------------------------------------------------
# The rows of issue 9's table


def psnr_of(err: str) -> float:
    match = LINE.search(err)
    assert match, err
    return float("inf") if match.group(3) == "lossless" else float(match.group(4))


def test_row1_cmyk_tiff_shows_its_rgb(tmp_path, capsys):
    stripes = np.zeros((6, 9, 4), np.uint8)
    stripes[:, 0:3, 0] = 255  # cyan
    stripes[:, 3:6, 1] = 255  # magenta
    stripes[:, 6:9, 3] = 255  # black
    tifffile.imwrite(tmp_path / "cmyk.tif", stripes, photometric="separated")
    status, err = run([tmp_path / "cmyk.tif", "-k", 3, "-o", tmp_path / "out.png"], capsys)
    assert status == 0, err
    assert LINE.search(err).group(1, 2, 3) == ("3", "3", "lossless")
    with Image.open(tmp_path / "out.png") as written:
        shown = np.asarray(written.convert("RGB"))
    assert shown[0, [0, 3, 6]].tolist() == [[0, 255, 255], [255, 0, 255], [0, 0, 0]]


def test_row2_grey_alpha_tiff_keeps_alpha(tmp_path, capsys):
    grey = np.tile(np.array([10, 10, 200, 200, 90, 90], np.uint8), (4, 1))
    alpha = np.full_like(grey, 255)
    alpha[:, 4:] = 0  # a grey hidden under alpha 0: it must not take a colour
    tifffile.imwrite(
        tmp_path / "la.tif",
        np.dstack([grey, alpha]),
        photometric="minisblack",
        extrasamples=["unassalpha"],
    )
    status, err = run([tmp_path / "la.tif", "-k", 2, "-o", tmp_path / "out.tif"], capsys)
    assert status == 0, err
    written = open_image(tmp_path / "out.tif")
    assert written.alpha and written.shape == (4, 6, 2)
    out = written.load()
    np.testing.assert_array_equal(out[..., 1], alpha)
    assert sorted(np.unique(out[..., 0][alpha > 0]).tolist()) == [10, 200]
    status, err = run([tmp_path / "la.tif", "-k", 2, "-o", tmp_path / "out.png"], capsys)
    with Image.open(tmp_path / "out.png") as png:
        assert np.asarray(png.convert("LA"))[..., 1].tolist() == alpha.tolist()


def test_row3_bilevel_tiff_reads_black_and_white(tmp_path, capsys):
    bits = np.zeros((4, 8), bool)
    bits[:, ::2] = True
    Image.fromarray(bits).save(tmp_path / "bw.tif")  # MinIsBlack: 1 is white
    status, err = run([tmp_path / "bw.tif", "-k", 2, "-o", tmp_path / "out.png"], capsys)
    assert status == 0, err
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out.png").convert("L")), bits * 255
    )


def test_row4_palette_tiff_shows_its_colormap(tmp_path, capsys):
    colormap = np.zeros((3, 256), np.uint16)
    colormap[0, 0] = colormap[1, 1] = colormap[2, 2] = 65535
    index = np.tile(np.array([0, 1, 2], np.uint8), (3, 2))
    tifffile.imwrite(tmp_path / "pal.tif", index, photometric="palette", colormap=colormap)
    status, err = run([tmp_path / "pal.tif", "-k", 3, "-o", tmp_path / "out.png"], capsys)
    assert status == 0, err
    shown = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    assert shown[0, :3].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]


@pytest.mark.parametrize("store", ["tiff", "zarr"])
def test_row5_big_endian_float_reads_like_native(tmp_path, capsys, store):
    ramp = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48) ** 2
    results = {}
    for order in ("<", ">"):
        data = ramp.astype(f"{order}f4")
        path = (
            tmp_path
            / f"ramp{'be' if order == '>' else 'le'}.{'tif' if store == 'tiff' else 'zarr'}"
        )
        if store == "tiff":
            tifffile.imwrite(path, data, byteorder=order)
        else:
            array = zarr.open_array(
                str(path), mode="w", shape=data.shape, chunks=(16, 48), dtype=data.dtype
            )
            array[...] = data
            assert array.dtype == np.dtype(f"{order}f4")
        output = tmp_path / f"out{'be' if order == '>' else 'le'}.npy"
        status, err = run([path, "-k", 4, "-o", output], capsys)
        assert status == 0, err
        results[order] = (np.load(output), psnr_of(err))
    np.testing.assert_array_equal(results["<"][0], results[">"][0])
    assert results["<"][1] == results[">"][1]
    assert 0 <= results[">"][0].min() and results[">"][0].max() <= 1


def test_row6_animated_gif_keeps_every_frame(tmp_path, capsys):
    frames = [Image.new("RGB", (5, 4), colour) for colour in ("red", "green", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    status, err = run([tmp_path / "anim.gif", "-k", 3], capsys)  # default output keeps frames
    assert status == 0, err
    assert LINE.search(err).group(1, 2, 3) == ("3", "3", "lossless")
    written = tifffile.imread(tmp_path / "anim_k3.tif")
    assert written.shape == (3, 4, 5, 3)
    assert written[:, 0, 0].tolist() == [[255, 0, 0], [0, 128, 0], [0, 0, 255]]
    status, err = run([tmp_path / "anim.gif", "-k", 3, "-o", tmp_path / "one.png"], capsys)
    assert status == 2 and "3 frames" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "one.png").exists()


def test_row7_trns_colour_key_stays_transparent(tmp_path, capsys):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :2] = [10, 20, 30]  # the key
    rgb[:, 2:4] = [200, 100, 50]
    rgb[:, 4:] = [90, 200, 90]
    Image.fromarray(rgb).save(tmp_path / "key.png", transparency=(10, 20, 30))
    status, err = run([tmp_path / "key.png", "-k", 2, "-o", tmp_path / "out.png"], capsys)
    assert status == 0, err
    shown = np.asarray(Image.open(tmp_path / "out.png").convert("RGBA"))
    assert (shown[:, :2, 3] == 0).all() and (shown[:, 2:, 3] == 255).all()
    np.testing.assert_array_equal(shown[:, 2:, :3], rgb[:, 2:])  # two visible colours, k = 2


@pytest.mark.parametrize("dtype", ["uint64", "int64"])
def test_row8_extreme_integers_stay_exact(tmp_path, capsys, dtype):
    info = np.iinfo(dtype)
    values = [info.max, info.max - 1, info.max - 2, info.min, info.min + 1, info.min + 2]
    image = np.array(values, dtype=dtype)[np.arange(24).reshape(4, 6) % 6]
    tifffile.imwrite(tmp_path / "extreme.tif", image)
    status, err = run([tmp_path / "extreme.tif", "-k", 2, "-o", tmp_path / "out.tif"], capsys)
    assert status == 0, err
    written = tifffile.imread(tmp_path / "out.tif")
    # Each half is painted with a value inside its own cluster's range.
    top, bottom = image >= info.max - 2, image <= info.min + 2
    assert (written[top] >= info.max - 2).all() and (written[bottom] <= info.min + 2).all()


def hidden_colour_image(hidden) -> np.ndarray:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:4, :, :3] = [200, 50, 50]
    rgba[4:, :, :3] = [50, 50, 200]
    rgba[4:6, :, :3] = [60, 60, 210]
    rgba[:2, :, 3] = 0
    rgba[:2, :, :3] = hidden
    return rgba


def test_row9_hidden_colours_take_no_palette_entry(tmp_path, capsys):
    Image.fromarray(hidden_colour_image([0, 255, 0])).save(tmp_path / "hidden.png")
    status, err = run([tmp_path / "hidden.png", "-k", 3, "-o", tmp_path / "out.png"], capsys)
    assert status == 0, err
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode == "P"
        n_entries = len(written.getpalette()) // 3
        transparency = written.info["transparency"]
        if isinstance(transparency, int):  # Pillow's form for one transparent entry
            transparency = np.where(np.arange(n_entries) == transparency, 0, 255)
        else:
            transparency = np.frombuffer(transparency, np.uint8)
        shown = np.asarray(written.convert("RGBA"))
    assert (transparency == 0).sum() == 1  # one transparent entry for all of them
    assert n_entries == 4  # three visible colours and the transparent one
    assert (shown[:2, ..., 3] == 0).all()
    assert not ((shown[..., :3] == [0, 255, 0]).all(axis=-1) & (shown[..., 3] > 0)).any()


def test_row9_error_is_measured_on_visible_pixels(tmp_path, capsys):
    psnrs = []
    for number, hidden in enumerate(([0, 255, 0], [255, 0, 255])):
        Image.fromarray(hidden_colour_image(hidden)).save(tmp_path / f"h{number}.png")
        status, err = run(
            [tmp_path / f"h{number}.png", "-k", 2, "-o", tmp_path / f"o{number}.png"], capsys
        )
        assert status == 0, err
        psnrs.append(psnr_of(err))
    visible_only = hidden_colour_image([0, 0, 0])[2:, :, :3]
    Image.fromarray(np.ascontiguousarray(visible_only)).save(tmp_path / "visible.png")
    status, err = run([tmp_path / "visible.png", "-k", 2, "-o", tmp_path / "v.png"], capsys)
    assert psnrs[0] == psnrs[1] == psnr_of(err)


def test_row10_same_picture_same_psnr_in_every_dtype(tmp_path, capsys):
    # Spanning the full 8-bit range, so that the data's range equals uint8's.
    picture = np.array([0, 60, 120, 180, 255], np.uint8)[np.arange(40).reshape(5, 8) % 5]
    variants = {
        "uint8": picture,
        "float32": picture.astype(np.float32) / 255,
        "uint16-12bit": picture.astype(np.uint16) * 16,
        "int32": picture.astype(np.int32),
    }
    psnrs = {}
    for name, data in variants.items():
        tifffile.imwrite(tmp_path / f"{name}.tif", data)
        status, err = run(
            [tmp_path / f"{name}.tif", "-k", 3, "-o", tmp_path / f"{name}_out.tif"], capsys
        )
        assert status == 0, err
        psnrs[name] = psnr_of(err)
    assert max(psnrs.values()) - min(psnrs.values()) < 0.2, psnrs


def test_row11_palette_of_another_dtype_is_refused(tmp_path, capsys):
    photo = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    status, err = run(
        [
            tmp_path / "photo.png",
            "-k",
            4,
            "--palette",
            tmp_path / "p.json",
            "-o",
            tmp_path / "p.png",
        ],
        capsys,
    )
    assert status == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["dtype"] == "uint8"
    tifffile.imwrite(tmp_path / "deep.tif", photo.astype(np.uint16) * 257, photometric="rgb")
    status, err = run(
        [tmp_path / "deep.tif", "--apply-palette", tmp_path / "p.json", "-o", tmp_path / "d.tif"],
        capsys,
    )
    assert status == 2, err
    assert "dtype" in err and "uint8" in err and "uint16" in err
    assert not (tmp_path / "d.tif").exists()


def test_row12_zarr_output_is_chunked_like_the_input(tmp_path, capsys):
    store = zarr.open_array(
        str(tmp_path / "big.zarr"),
        mode="w",
        shape=(4, 40, 30, 3),
        chunks=(1, 20, 15, 3),
        dtype="uint8",
    )
    store[...] = RNG.integers(0, 256, store.shape, dtype=np.uint8)
    status, err = run(
        [
            tmp_path / "big.zarr",
            "-k",
            4,
            "-o",
            tmp_path / "out.zarr",
            "--labels",
            tmp_path / "labels.zarr",
        ],
        capsys,
    )
    assert status == 0, err
    image = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    labels = zarr.open_array(str(tmp_path / "labels.zarr"), mode="r")
    assert image.chunks == (1, 20, 15, 3)
    assert labels.chunks == (1, 20, 15)
    assert len(np.unique(image[...].reshape(-1, 3), axis=0)) <= 4


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_input_tasks_read_several_storage_chunks(tmp_path, zarr_format):
    """A .zarr input is read in tasks of whole storage chunks (several per task), and
    records its storage chunks and zarr format for the outputs (issue 19)."""
    values = RNG.integers(0, 256, (3, 200, 150, 3), dtype=np.uint8)
    store = zarr.create_array(
        str(tmp_path / "in.zarr"),
        shape=values.shape,
        chunks=(1, 32, 32, 3),
        dtype="uint8",
        zarr_format=zarr_format,
    )
    store[...] = values
    with open_image(tmp_path / "in.zarr") as source:
        assert source.storage_chunks == (1, 32, 32, 3)
        assert source.zarr_format == zarr_format
        lazy = source.load()
        # every task boundary a storage chunk boundary, and fewer tasks than chunks
        for sizes, chunk in zip(lazy.chunks, source.storage_chunks, strict=True):
            assert all(size % chunk == 0 for size in sizes[:-1])
        assert lazy.npartitions < store.nchunks
        np.testing.assert_array_equal(lazy.compute(), values)


def test_zarr_outputs_can_keep_the_input_chunks_and_format(tmp_path):
    """What the command line needs to write zarr outputs like a zarr input: the input's
    storage chunks (less the channel axis for labels) and its zarr format (v2 in, v2 out)."""
    from napari_kmeans_filter import _io, _tasks

    store = zarr.create_array(
        str(tmp_path / "in.zarr"),
        shape=(2, 64, 48, 3),
        chunks=(1, 16, 16, 3),
        dtype="uint8",
        zarr_format=2,
    )
    store[...] = RNG.integers(0, 256, store.shape, dtype=np.uint8)
    with open_image(tmp_path / "in.zarr") as source:
        lazy = source.load()
        assert _io.zarr_output_chunks(source, lazy.shape, 3) == (1, 16, 16, 3)
        labels = lazy[..., 0]
        chunks = _io.zarr_output_chunks(source, labels.shape, 3)
        assert chunks == (1, 16, 16)
        assert _io.zarr_output_chunks(source, (5, 5), 3) is None
        target = _io.create_lazy_target(
            tmp_path / "labels.zarr",
            "zarr",
            labels.shape,
            labels.dtype,
            chunks,
            None,
            zarr_format=source.zarr_format,
        )
        import dask.array as da

        da.store(_tasks.align(labels, chunks), target, lock=False)
    written = zarr.open_array(str(tmp_path / "labels.zarr"), mode="r")
    assert written.metadata.zarr_format == 2
    assert written.chunks == (1, 16, 16)
    assert (tmp_path / "labels.zarr" / "0" / "0" / "0").exists()  # "/" separated keys
    np.testing.assert_array_equal(written[...], store[..., 0])


def test_row12_lazy_tiff_input_written_band_by_band(tmp_path, capsys, monkeypatch):
    """A TIFF read chunk by chunk and written as tiles, in bands smaller than the image."""
    from napari_kmeans_filter._io import tiff

    monkeypatch.setattr(tiff, "CHUNK_BYTES", 300 * 256 * 3)  # bands of 256 rows
    image = RNG.integers(0, 4, (600, 300, 3), dtype=np.uint8) * 60
    tifffile.imwrite(tmp_path / "big.tif", image, photometric="rgb", rowsperstrip=7)
    status, err = run(
        [tmp_path / "big.tif", "-k", 64, "--chunked", "-o", tmp_path / "out.tif"], capsys
    )
    assert status == 0, err
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages[0].is_tiled
        np.testing.assert_array_equal(tif.asarray(), image)


def test_kinds_in_one_batch_as_a_subprocess(cases, tmp_path):
    """The console program itself, on a batch mixing kinds: frames, CMYK, alpha, 16 bits."""
    import os
    import subprocess
    import sys

    names = ["gif-3-frames", "tiff-cmyk", "png-RGB-tRNS", "png-RGB16", "tiff-palette"]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("NAPARI_KMEANS_FILTER_DEBUG", None)
    inputs = [str(cases[name].path) for name in names]
    completed = subprocess.run(
        [sys.executable, "-m", "napari_kmeans_filter", *inputs, "-k", "256", "--out-dir", tmp_path],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    written = {path.name for path in tmp_path.iterdir()}
    assert written == {
        "anim_k256.tif",
        "cmyk_k256.tif",
        "RGB_trns_k256.png",
        "RGB16_k256.png",
        "palette_k256.tif",
    }
    for name in names:
        case = cases[name]
        (output,) = [tmp_path / w for w in written if w.startswith(case.path.stem + "_k")]
        image = np.asarray(open_image(output).load())
        np.testing.assert_array_equal(
            visible(image, case.alpha), visible(case.expected, case.alpha)
        )


# ---------------------------------------------------------------------------------------------
# ImageJ hyperstacks (issue 19 item 3)


def test_imagej_hyperstack_keeps_its_axes_through_a_round_trip(tmp_path):
    """A TZCYX ImageJ hyperstack is read with its axes and ImageJ metadata; clustered
    jointly over C, the image is written back as a TZCYX hyperstack and the labels as a
    TZYX one, with the calibration (tifffile gave axes QQQYX, 18 flat pages, before)."""
    from napari_kmeans_filter import _io, quantize

    stack = RNG.integers(0, 4, (2, 3, 2, 24, 20), dtype=np.uint8) * 80  # T Z C Y X
    tifffile.imwrite(
        tmp_path / "hyper.tif",
        stack,
        imagej=True,
        metadata={"axes": "TZCYX", "spacing": 0.5, "unit": "um", "finterval": 2.0},
    )
    with open_image(tmp_path / "hyper.tif") as source:
        assert source.axes == ("T", "Z", "C", "Y", "X")
        assert source.imagej["channels"] == 2 and source.imagej["frames"] == 2
        assert source.shape == stack.shape and source.channel_axis is None
        values = source.load()
    result = quantize(values, 16, channel_axis=2, random_state=0)
    image, labels = np.asarray(result.image), np.asarray(result.labels).astype(np.uint8)
    for name, array in (("image", image), ("labels", labels)):
        axes = _io.output_axes(source, array.shape, 2)
        _io.write_array(
            tmp_path / f"{name}.tif",
            array,
            fmt="tiff",
            channel_axis=2 if name == "image" else None,
            axes=axes,
            imagej=source.imagej,
        )
        with tifffile.TiffFile(tmp_path / f"{name}.tif") as tif:
            assert tif.is_imagej
            assert tif.series[0].axes == ("TZCYX" if name == "image" else "TZYX")
            assert tif.imagej_metadata["spacing"] == 0.5
            assert tif.imagej_metadata["unit"] == "um"
            assert tif.imagej_metadata["finterval"] == 2.0
            np.testing.assert_array_equal(tif.asarray(), array)
    np.testing.assert_array_equal(image, stack)  # 16 colours hold the 16 pairs exactly
    with open_image(tmp_path / "labels.tif") as back:
        assert back.axes == ("T", "Z", "Y", "X")


def test_outputs_imagej_cannot_hold_are_plain_tiffs(tmp_path):
    from napari_kmeans_filter import _io

    assert _io.tiff.imagej_axes(("T", "Z", "C", "Y", "X"), (1, 1, 2, 4, 4), np.uint16) == "TZCYX"
    assert _io.tiff.imagej_axes(("Z", "T", "Y", "X"), (2, 2, 4, 4), np.uint8) is None  # order
    assert _io.tiff.imagej_axes(("T", "Y", "X"), (2, 4, 4), np.int32) is None  # dtype
    assert _io.tiff.imagej_axes(("Y", "X", "S"), (4, 4, 4), np.uint8) is None  # RGBA
    assert _io.tiff.imagej_axes(None, (4, 4), np.uint8) is None
    array = np.arange(2 * 4 * 4, dtype=np.int32).reshape(2, 4, 4)
    _io.write_array(
        tmp_path / "plain.tif", array, fmt="tiff", channel_axis=None, axes=("T", "Y", "X")
    )
    with tifffile.TiffFile(tmp_path / "plain.tif") as tif:
        assert not tif.is_imagej
        np.testing.assert_array_equal(tif.asarray(), array)


def test_ome_tiff_keeps_its_axes_through_a_round_trip(tmp_path):
    """A TCZYX OME-TIFF is read with its axes; the image comes back as a TCZYX OME-TIFF
    and the labels (C clustered jointly) as TZYX."""
    from napari_kmeans_filter import _io, quantize

    stack = RNG.integers(0, 3, (2, 2, 3, 16, 12), dtype=np.uint16) * 1000  # T C Z Y X
    tifffile.imwrite(tmp_path / "in.ome.tif", stack, ome=True, metadata={"axes": "TCZYX"})
    with open_image(tmp_path / "in.ome.tif") as source:
        assert source.axes == ("T", "C", "Z", "Y", "X") and source.imagej is None
        values = source.load()
    result = quantize(values, 9, channel_axis=1, random_state=0)
    for name, array, axes in (
        ("image", np.asarray(result.image), "TCZYX"),
        ("labels", np.asarray(result.labels).astype(np.uint8), "TZYX"),
    ):
        _io.write_array(
            tmp_path / f"{name}.tif",
            array,
            fmt="tiff",
            channel_axis=1 if name == "image" else None,
            axes=_io.output_axes(source, array.shape, 1),
        )
        with tifffile.TiffFile(tmp_path / f"{name}.tif") as tif:
            assert tif.is_ome and tif.series[0].axes == axes
            np.testing.assert_array_equal(tif.asarray(), array)
    np.testing.assert_array_equal(np.asarray(result.image), stack)


# ------------------------------------------------------------------ a picture is decoded once


def test_a_picture_is_decoded_once_per_run(tmp_path, monkeypatch, capsys):
    """Opening a PNG decodes it (its shape as viewers show it needs the pixels); the command
    line's read then takes those pixels instead of decoding the file again."""
    from napari_kmeans_filter._io import pillow

    Image.fromarray(np.arange(120 * 90 * 3, dtype=np.uint8).reshape(120, 90, 3)).save(
        tmp_path / "in.png"
    )
    decoded = []
    real = pillow._read_pictures
    monkeypatch.setattr(pillow, "_read_pictures", lambda path: decoded.append(path) or real(path))
    assert main([str(tmp_path / "in.png"), "-k", "4", "-o", str(tmp_path / "out.png")]) == 0
    assert len(decoded) == 1
    capsys.readouterr()


def test_a_picture_changed_after_opening_is_read_again(tmp_path):
    """The pixels kept from opening are used only for the same, unchanged file."""
    path = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    source = open_image(path)
    # Another size, so that the change shows even within one tick of the file clock.
    Image.fromarray(np.full((8, 9, 3), 200, np.uint8)).save(path)
    with source:
        assert int(source.load().min()) == 200
    other = open_image(path)
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(tmp_path / "b.png")
    open_image(tmp_path / "b.png")  # the slot now holds b.png's pixels
    with other:
        assert int(other.load().min()) == 200


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _adam7_png(rgb: np.ndarray) -> bytes:
    """An interlaced (Adam7) 8-bit RGB PNG of ``rgb``: its seven passes, rows unfiltered."""
    height, width = rgb.shape[:2]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4)]
    passes += [(1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        part = rgb[y0::dy, x0::dx]
        if part.size:
            raw += b"".join(b"\0" + row.tobytes() for row in part)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, data) for kind, data in chunks)


def test_large_plain_pngs_read_by_imagecodecs_give_pillows_pixels(tmp_path, monkeypatch):
    """Plain 8-bit PNGs of many pixels are decoded by imagecodecs (faster): the arrays are
    those Pillow gives, for every kind of samples; a colour key, EXIF (chunk or text),
    a palette, 16 bits or animation take Pillow's own path, which applies them."""
    from PIL import PngImagePlugin

    from napari_kmeans_filter._io import pillow

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    files = {
        "rgb": Image.fromarray(rgb),
        "rgba": Image.fromarray(np.dstack([rgb, rgb[..., :1]])),
        "grey": Image.fromarray(rgb[..., 0]),
        "grey-alpha": Image.fromarray(rgb[..., :2].copy(), "LA"),
    }
    paths = {name: save_pillow(tmp_path, f"{name}.png", image) for name, image in files.items()}
    text = PngImagePlugin.PngInfo()
    text.add_text("comment", "no exif here")
    paths["text"] = save_pillow(tmp_path, "text.png", files["rgb"], pnginfo=text)
    # Pillow applies these; the plain path must leave them to it.
    paths["colour-key"] = tmp_path / "key.png"
    paths["colour-key"].write_bytes(
        with_trns((tmp_path / "rgb.png").read_bytes(), struct.pack(">HHH", *rgb[0, 0]))
    )
    paths["exif-chunk"] = save_pillow(tmp_path, "exif.png", files["rgb"], exif=_exif_orientation(6))
    raw = PngImagePlugin.PngInfo()
    raw.add_text("Raw profile type exif", "\nexif\n" + _exif_orientation(8).hex())
    paths["exif-text"] = save_pillow(tmp_path, "exif-text.png", files["rgb"], pnginfo=raw)
    paths["palette"] = save_pillow(tmp_path, "palette.png", files["rgb"].quantize(16))
    # libpng checks colour chunks and warns on stderr: left to Pillow.
    paths["icc"] = save_pillow(tmp_path, "icc.png", files["rgb"], icc_profile=b"not a profile")
    # Adam7: libpng decodes it, but warns on stderr ("Interlace handling should be turned
    # on"): left to Pillow, which reads it whole.
    paths["interlaced"] = tmp_path / "interlaced.png"
    paths["interlaced"].write_bytes(_adam7_png(rgb))
    fast = []
    real = pillow._read_png_plain
    monkeypatch.setattr(pillow, "_read_png_plain", lambda p: fast.append(p.stem) or real(p))
    for name, path in paths.items():
        monkeypatch.setattr(pillow, "_FAST_PNG_PIXELS", 10**12)  # Pillow alone
        expected = pillow._read_pictures(path).array
        monkeypatch.setattr(pillow, "_FAST_PNG_PIXELS", 1)
        got = pillow._read_pictures(path).array
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
    plain = {"rgb", "rgba", "grey", "grey-alpha", "text"}
    assert set(fast) == {paths[name].stem for name in plain}
    assert pillow._read_pictures(paths["exif-chunk"]).array.shape[:2] == (30, 40)  # turned
