"""PNG outputs: indexed when the colours fit, 16-bit colour, an iCCP profile, the smaller
encoding on request."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import ImageIOError
from .icc import _ICC_SPACES
from .source import METRES

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_png(
    path: Path,
    array: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    indexed: bool = True,
    optimize: bool = False,
    icc_profile: bytes | None = None,
    dpi: tuple[float, float] | None = None,
) -> None:
    """Write ``array`` as a PNG (the arguments as in :func:`.write.write_array`; ``dpi``:
    pixels per inch along X and Y, a pHYs chunk)."""
    from PIL import Image

    profile = {"icc_profile": icc_profile} if icc_profile else {}
    if dpi:
        profile["dpi"] = dpi
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    # An indexed PNG's palette is RGB, and PNG allows only an RGB profile with it:
    # grey pixels with a grey profile are written as plain grey instead.
    grey_profile = bool(icc_profile) and bytes(icc_profile[16:20]) == _ICC_SPACES[1]
    paletted = (
        _to_paletted(array, labels, colors)
        if indexed and array.dtype == np.uint8 and not grey_profile
        else None
    )
    if paletted is not None:
        index, palette, transparency = paletted
        image = Image.frombytes("P", index.shape[::-1], index.tobytes())
        image.putpalette(palette.tobytes())
        extra = {} if transparency is None else {"transparency": transparency.tobytes()}
        _save_png(image, path, optimize, **extra, **profile)
    elif array.dtype == np.uint16 and array.ndim == 3:
        # Pillow has no 16-bit colour or grey+alpha modes.
        codecs = _imagecodecs(path)
        pixels = np.ascontiguousarray(array)
        levels = (None, 9) if optimize else (None,)
        encoded = min((codecs.png_encode(pixels, level=level) for level in levels), key=len)
        path.write_bytes(_with_chunks(encoded, icc_profile, dpi))
    else:
        _save_png(Image.fromarray(np.ascontiguousarray(array)), path, optimize, **profile)


def _save_png(image, path: Path, optimize: bool, **options) -> None:
    """Save a Pillow image as PNG; with ``optimize`` keep the smaller of the plain and
    the optimised encoding.

    Pillow's ``optimize=True`` (zlib level 9, a shortened palette) is not always
    smaller.  Measured with Pillow 13.0 on scikit-image's chelsea quantised with
    dithering: 8 colours indexed 31,714 -> 33,965 bytes, 16 colours as plain RGB
    93,873 -> 116,125 bytes; without dithering, 8 colours indexed 23,179 -> 23,637.
    """
    if not optimize:
        image.save(path, format="PNG", **options)
        return
    encodings = []
    for setting in (False, True):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=setting, **options)
        encodings.append(buffer.getvalue())
    path.write_bytes(min(encodings, key=len))


def _with_chunks(png: bytes, icc_profile: bytes | None, dpi) -> bytes:
    """``png`` with an iCCP and a pHYs chunk after IHDR, as given (imagecodecs writes
    neither). PNG 1.2 11.3.3.3: iCCP is a name, a zero byte, compression method 0 and the
    zlib-compressed profile; 11.3.5.3: pHYs is pixels per metre along X and Y, unit 1."""
    chunks = []
    if icc_profile:
        chunks.append((b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    if dpi:
        per_metre = (round(value / METRES["in"]) for value in dpi)
        chunks.append((b"pHYs", struct.pack(">IIB", *per_metre, 1)))
    encoded = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )
    end_of_ihdr = len(_PNG_SIGNATURE) + 8 + 13 + 4
    return png[:end_of_ihdr] + encoded + png[end_of_ihdr:]


def _to_paletted(array, labels, colors):
    """``(index, palette, transparency)`` of an indexed PNG, or None above 256 entries.

    ``index`` is 2-D uint8, ``palette`` (n, 3) uint8 and ``transparency`` None or (n,)
    uint8 (the tRNS chunk).  The labels give the colours without a search; without them
    the distinct colours are found here.  Every visible (colour, alpha) pair gets an
    entry (alpha is copied from the input) and every fully transparent pixel one shared
    entry, whatever colour it hides.
    """
    array = array.reshape(*array.shape[:2], -1)
    channels = array.shape[-1]
    n_colour = 3 if channels >= 3 else 1
    if channels > 4:
        return None
    if labels is not None and colors is not None and labels.shape == array.shape[:2]:
        codes, palette = np.asarray(labels), np.asarray(colors)[:, :n_colour]
    else:
        pixels = array[..., :n_colour].reshape(-1, n_colour)
        palette, codes = np.unique(pixels, axis=0, return_inverse=True)
        codes = codes.reshape(array.shape[:2])
    if channels in (1, 3):
        if len(palette) > 256:
            return None
        index, colours, transparency = codes, palette, None
    else:
        # Key 0: transparent; key 1 + 256 * colour + alpha: a visible pair.  Counted
        # with bincount, not sorted: a sort of 12 M keys costs more than the PNG.
        alpha = array[..., -1]
        keys = np.where(alpha == 0, 0, 1 + codes.astype(np.int64) * 256 + alpha)
        used = np.flatnonzero(np.bincount(keys.ravel()))
        if len(used) > 256:
            return None
        lookup = np.zeros(used[-1] + 1, np.uint8)
        lookup[used] = np.arange(len(used))
        index = lookup[keys]
        pair = np.maximum(used - 1, 0)
        colours = np.where((used == 0)[:, None], 0, palette[pair // 256])
        transparency = np.where(used == 0, 0, pair % 256).astype(np.uint8)
    palette_rgb = np.repeat(np.asarray(colours, np.uint8), 3 // n_colour, axis=-1)
    return index.astype(np.uint8), palette_rgb, transparency


def _imagecodecs(path: Path):
    try:
        import imagecodecs
    except ImportError:
        raise ImageIOError(
            f"writing a 16-bit colour PNG needs 'imagecodecs' (pip install imagecodecs); "
            f"or write .tif instead of {path.name}"
        ) from None
    return imagecodecs
