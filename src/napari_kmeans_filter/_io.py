"""Reading and writing images for the command line (no napari, no Qt).

The contract is what an image viewer shows: an input is read as the pixels, frames and
transparency a viewer displays, and the outputs show the same picture.

* Pictures (PNG, JPEG, JPEG 2000, GIF, WebP, BMP, PBM, and TIFFs that are not plain
  grey or RGB) are read by Pillow, which converts every mode to what viewers show: bilevel to black
  and white, palettes to their colours, CMYK, YCbCr and Lab to RGB, tRNS colour keys and
  palette transparency to alpha, with the EXIF orientation applied.  Every frame is read
  (animated GIF, APNG and WebP, multi-page TIFF) into one (T, Y, X[, C]) stack.  Where
  Pillow reduces samples to 8 bits (16-bit colour PNG and JPEG 2000) imagecodecs decodes
  them instead.
* PGM, PPM and PAM of every depth (1 to 16 bits, grey, RGB, with alpha, several images
  in one file) are read here, to uint8 or uint16 (Pillow reduces 16-bit colour to 8 bits
  and cannot read PAM); samples are scaled to the full range of the dtype as Pillow
  scales grey (``value * top // maxval``).
* Grey and RGB TIFFs of any dtype are read by tifffile (stacks, ``extrasamples``
  alpha), chunk by chunk through its zarr store above :data:`LAZY_TIFF_BYTES`.  Samples
  come last whatever the ``planarconfig``; pages of one kind written one at a time are
  the frames of one stack; reduced-resolution pages (previews, pyramid levels) are left
  out, with a note.
* ``.zarr`` arrays are read by dask, in the store's own chunks.

An ICC colour profile of the input is kept in :attr:`InputImage.icc_profile` when it
describes the pixels read, and written into PNG, JPEG and TIFF outputs.

Arrays come back in native byte order.  Writing keeps the dtype; an 8-bit PNG of at
most 256 (colour, alpha) pairs is written indexed, with one transparent entry for every
fully transparent pixel.  Every output is written under a temporary name beside its
destination and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: TIFFs whose pixels would take more than this many bytes are read chunk by chunk even
#: without ``--chunked`` (a fixed number, so that the behaviour is the same everywhere).
LAZY_TIFF_BYTES = 1 << 30

#: Size aimed at for one chunk of a TIFF read, or one band of a TIFF written, chunk by
#: chunk.
CHUNK_BYTES = 64 * 2**20

#: Output formats by file-name suffix.
FORMATS_BY_SUFFIX = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".zarr": "zarr",
    ".npy": "npy",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TILE = 256  # rows and columns of the tiles of TIFFs written chunk by chunk


class ImageIOError(Exception):
    """A problem with an input or output file, with a message fit for one line of stderr."""


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


@dataclass
class InputImage:
    """An opened input: what :meth:`load` returns, and how to load it.

    Attributes
    ----------
    path : pathlib.Path
        The file (or ``.zarr`` directory) as given on the command line.
    kind : {"pillow", "tiff", "zarr"}
        Which library reads it.
    shape, dtype
        Shape and (native) dtype of the array :meth:`load` returns.
    lazy : bool
        Whether :meth:`load` returns a dask array (processed chunk by chunk).
    channel_axis : int or None
        Negative index of the colour axis, or None for an intensity image.
    alpha : bool or None
        Whether the last colour channel is alpha; None when the file does not say (a
        zarr array: the core's rule, 4 channels on the last axis are RGBA, applies).
    n_frames : int
        Frames of a picture file; when more than one they form the leading axis.
    notes : list of str
        What a user should know about how the file was read (e.g. a preview page left
        out), one line each, without the file's name: the command line prints them.
    icc_profile : bytes or None
        The file's ICC colour profile, when it describes the pixels :meth:`load`
        returns (a CMYK profile of a CMYK file read as RGB does not; a note says so).
    """

    path: Path
    kind: str
    shape: tuple[int, ...]
    dtype: np.dtype
    lazy: bool
    channel_axis: int | None
    alpha: bool | None
    read: Callable[[InputImage], Any] = field(repr=False)
    n_frames: int = 1
    notes: list[str] = field(default_factory=list)
    icc_profile: bytes | None = field(default=None, repr=False)
    _closers: list[Any] = field(default_factory=list, repr=False)

    def load(self):
        """Return the pixels: a numpy array, or a dask array when :attr:`lazy`.

        What the decoding libraries report on the way is appended to :attr:`notes`
        (the reading of a lazy input happens later, chunk by chunk, and reports errors
        only).
        """
        try:
            with _library_messages() as messages:
                array = self.read(self)
        except ImageIOError as exc:
            raise ImageIOError(_with_messages(str(exc), messages)) from exc
        except MemoryError:
            raise ImageIOError(
                f"not enough memory to read {self.path}; try --chunked (TIFF) or a .zarr input"
            ) from None
        except Exception as exc:  # readers raise many types for corrupt data
            message = f"cannot read image {self.path}: {_describe(exc)}"
            raise ImageIOError(_with_messages(message, messages)) from exc
        self.notes.extend(note for note in _as_notes(messages) if note not in self.notes)
        if not array.dtype.isnative:  # Pillow's I;16B, big-endian TIFF and zarr data
            array = array.astype(array.dtype.newbyteorder("="))
        return array

    def close(self) -> None:
        """Release file handles held by a lazy reader."""
        for closer in reversed(self._closers):  # a store before the file it reads
            with contextlib.suppress(Exception):
                closer.close()
        self._closers.clear()

    def __enter__(self) -> InputImage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_image(path: str | os.PathLike, *, chunked: bool = False) -> InputImage:
    """Open ``path`` and find out what :meth:`InputImage.load` will return.

    Picture files are decoded here once (and again by ``load``), so that a corrupt file
    fails while a batch is checked, and the shape is exact; TIFF and zarr headers are
    read without the pixels.

    Parameters
    ----------
    path : str or path-like
        An image file or a ``.zarr`` directory.
    chunked : bool
        Read a grey or RGB TIFF lazily even when it would fit in memory.  ``.zarr`` input
        is always lazy; other files are always read whole.

    Raises
    ------
    ImageIOError
        Missing, unreadable, unsupported or corrupt file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageIOError(_missing(path))
    try:
        with _library_messages() as messages:
            source = _open(path, chunked, messages)
    except ImageIOError as exc:
        raise ImageIOError(_with_messages(str(exc), messages)) from exc
    source.notes.extend(_as_notes(messages))
    return source


def _open(path: Path, chunked: bool, messages: list[str]) -> InputImage:
    if path.is_dir():
        if path.suffix.lower() == ".zarr" or any(
            (path / name).exists() for name in ("zarr.json", ".zarray")
        ):
            return _open_zarr(path)
        raise ImageIOError(f"{path} is a directory, not an image (or a .zarr array)")
    if not os.access(path, os.R_OK):
        raise ImageIOError(f"cannot read {path}: permission denied")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
    except OSError as exc:
        raise ImageIOError(f"cannot read {path}: {_describe(exc)}") from exc
    # Decide by content: a PNG called .tif is still a PNG.
    if magic[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _open_tiff(path, chunked=chunked, messages=messages)
    if _NETPBM_MAGIC.match(magic):
        return _open_netpbm(path)
    return _open_pillow(path)


@contextlib.contextmanager
def _library_messages() -> Iterator[list[str]]:
    """Collect what the decoders say while a file is read, instead of printing it.

    libtiff (under Pillow) and other C libraries write warnings and errors straight to
    the process's stderr, tifffile logs them, Pillow warns: on a damaged file the user
    saw several lines of the libraries' talk before the one error line.  Here the
    stderr file descriptor is pointed at a temporary file for the duration (the
    command line reads its inputs in one thread), the "tifffile" logger and Python
    warnings are recorded, and all of it is returned as lines.
    """
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("tifffile")
    handler, propagate = Collect(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    with contextlib.ExitStack() as stack:
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        sink = stack.enter_context(tempfile.TemporaryFile())
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a GUI process): nothing to collect
            saved = None
        else:
            os.dup2(sink.fileno(), 2)
        try:
            yield messages
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            logger.removeHandler(handler)
            logger.propagate = propagate
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            messages.extend(line.strip() for line in text.splitlines() if line.strip())
            # Warnings about the file (Pillow's UserWarnings, DecompressionBombWarning);
            # deprecations speak to developers, not about the file.
            about_the_file = [w for w in caught if issubclass(w.category, _FILE_WARNINGS)]
            messages.extend(str(warning.message) for warning in about_the_file)


#: Warning categories that speak about a file being read (not DeprecationWarning,
#: FutureWarning and the like, which speak to developers).
_FILE_WARNINGS = (UserWarning, RuntimeWarning)


def _as_notes(messages: list[str]) -> list[str]:
    """The decoders' messages as at most one note (the first, and how many more)."""
    if not messages:
        return []
    more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
    return [f"the decoder reported: {_shorten(messages[0])}{more}; the file may be damaged"]


def _with_messages(message: str, messages: list[str]) -> str:
    """An error message with the decoder's first message, which often says more."""
    if not messages or messages[0] in message:
        return message
    return f"{message} (decoder: {_shorten(messages[0])})"


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _missing(path: Path) -> str:
    """Why ``path`` cannot be found: a loop of symbolic links, a link to nothing, or no
    file at all (``Path.exists`` is False for all three)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"cannot read {path}: a loop of symbolic links (they lead back to each other)"
        if os.path.islink(path):
            target = os.readlink(path)
            return f"cannot read {path}: a symbolic link to {target}, which does not exist"
    return f"no such file: {path}"


# Pillow ------------------------------------------------------------------------------

#: The 8-bit mode viewers show each Pillow mode in (others: RGB, e.g. CMYK, YCbCr, LAB).
#: A tRNS colour key or palette transparency in ``info`` adds alpha.
_VIEW_MODES = {"1": "L", "L": "L", "LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA"}
_VIEW_MODES |= {"RGBa": "RGBA"}
#: Modes kept as arrays of their own dtype.
_ARRAY_MODES = {"I;16": np.uint16, "I;16L": np.uint16, "I;16B": np.uint16, "I": np.int32}
_ARRAY_MODES |= {"F": np.float32}


def _open_pillow(path: Path, *, tiff: str | None = None) -> InputImage:
    from PIL import UnidentifiedImageError

    try:
        picture = _read_pictures(path)
    except UnidentifiedImageError:
        what = f"a TIFF with {tiff}" if tiff else "not a recognised image format"
        raise ImageIOError(f"cannot read image {path}: {what}") from None
    except ImageIOError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    array, n_frames = picture.array, picture.n_frames
    has_channels = array.ndim == 3 + (n_frames > 1)
    n_colour = (3 if array.shape[-1] >= 3 else 1) if has_channels else 1
    icc_profile, icc_notes = _matching_profile(picture.icc_profile, n_colour, picture.mode)
    return InputImage(
        path,
        "pillow",
        array.shape,
        array.dtype.newbyteorder("="),
        lazy=False,
        channel_axis=-1 if has_channels else None,
        alpha=has_channels and array.shape[-1] in (2, 4),
        read=lambda source: _read_pictures(source.path).array,
        n_frames=n_frames,
        notes=picture.notes + icc_notes,
        icc_profile=icc_profile,
    )


@dataclass
class _Picture:
    """What :func:`_read_pictures` found in a picture file."""

    array: np.ndarray
    n_frames: int
    mode: str  # Pillow's mode of the first frame, as stored
    notes: list[str]
    icc_profile: bytes | None


def _read_pictures(path: Path) -> _Picture:
    """Every frame of a picture file as viewers show it, and what else a user should
    know: the frames' count, notes, the ICC profile."""
    from PIL import Image, ImageSequence, TiffImagePlugin

    # Pillow 13's own decoder of uncompressed TIFFs garbles the pixels when the
    # Orientation tag swaps rows and columns (5 to 8); libtiff, which Pillow uses for
    # every compressed TIFF, gets them right.
    libtiff, TiffImagePlugin.READ_LIBTIFF = TiffImagePlugin.READ_LIBTIFF, True
    notes: list[str] = []
    try:
        with Image.open(path) as image:
            n_frames = getattr(image, "n_frames", 1)
            mode, profile = image.mode, image.info.get("icc_profile") or None
            if image.format == "PNG" and _png_is_16bit_colour(path):
                return _Picture(_read_png16(path, image, n_frames), n_frames, mode, notes, profile)
            if image.format == "JPEG2000" and image.mode in ("LA", "RGB", "RGBA"):
                # Pillow reduces colour and grey+alpha samples of more than 8 bits to 8
                # (16-bit grey it reads whole, as I;16, shifted to the full range).
                array = _read_jpeg2k_deep(path)
                if array is not None:
                    return _Picture(array, 1, mode, notes, profile)
            frames, reduced = [], 0
            for frame in ImageSequence.Iterator(image):
                if image.format == "TIFF" and _is_reduced_tiff_frame(frame):
                    reduced += 1  # a preview of another page, not a frame of its own
                    continue
                frames.append(_view_frame(frame))
    finally:
        TiffImagePlugin.READ_LIBTIFF = libtiff
    if reduced:
        notes.append(_reduced_note(reduced))
    return _Picture(_stack(frames, path), len(frames), mode, notes, profile)


def _is_reduced_tiff_frame(frame) -> bool:
    """Whether a TIFF page is a reduced-resolution version of another (a preview or
    thumbnail): NewSubfileType bit 0, or the old SubfileType 2."""
    tags = frame.tag_v2
    return bool(int(tags.get(254, 0)) & 1) or int(tags.get(255, 1)) == 2


def _reduced_note(count: int) -> str:
    pages = "page" if count == 1 else "pages"
    return (
        f"left out {count} reduced-resolution {pages} (a preview or pyramid level); "
        "the full-size image is read"
    )


#: ICC colour spaces (header bytes 16-20) that describe grey and RGB pixels.
_ICC_SPACES = {1: b"GRAY", 3: b"RGB "}


def _matching_profile(
    profile: bytes | None, n_colour: int, stored: str
) -> tuple[bytes | None, list[str]]:
    """The ICC profile if it describes the pixels read (``n_colour`` colour channels),
    else None and a note: a CMYK file is read as RGB, and its CMYK profile says nothing
    about those RGB values."""
    if not profile:
        return None, []
    space = bytes(profile[16:20])
    if space == _ICC_SPACES[n_colour]:
        return bytes(profile), []
    name = space.decode("latin-1", "replace").strip() or "unknown"
    read = "RGB" if n_colour == 3 else "grey"
    return None, [
        f"its ICC profile (colour space {name}) describes the stored {stored} samples, "
        f"not the {read} pixels read: it is not kept in the outputs"
    ]


def _view_frame(frame):
    """One frame as viewers show it: a Pillow image in mode L, LA, RGB or RGBA, or an
    array for the 16-bit, 32-bit and float modes."""
    from PIL import ImageOps

    transparency = frame.info.get("transparency")
    indexed = frame.mode in ("P", "PA")
    # 16-bit PGM (and PNG in old Pillow) opens as 32-bit "I": they hold 16 bits at most.
    sixteen_bits = frame.mode == "I" and frame.format in ("PNG", "PPM")
    frame = ImageOps.exif_transpose(frame)  # TIFFs are turned by Pillow when loaded
    if frame.mode in _ARRAY_MODES:
        dtype = np.uint16 if sixteen_bits else _ARRAY_MODES[frame.mode]
        array = np.asarray(frame).astype(np.dtype(dtype).newbyteorder("="))
        if transparency is not None and dtype == np.uint16:
            # Pillow clips 16-bit grey to 8 bits when it adds alpha: the tRNS key is
            # applied here, keyed pixels transparent.
            return np.dstack([array, np.where(array == transparency, 0, 65535)]).astype(dtype)
        return array
    mode = _VIEW_MODES.get(frame.mode, "RGB")
    if transparency is not None and mode in ("L", "RGB"):
        mode += "A"
    converted = frame.convert(mode)
    converted.info["indexed"] = indexed
    return converted


def _stack(frames: list, path: Path) -> np.ndarray:
    """The frames as one array: the frame itself, or a (T, Y, X[, C]) stack.

    A GIF's first frame is indexed and Pillow composites the later ones in RGB(A), so
    the 8-bit frames get one mode: colour if any has colour, alpha if any has alpha.  An
    indexed file whose colours are all grey (as this program writes quantised greyscale
    images) reads as greyscale.
    """
    from PIL import Image

    pictures = [frame for frame in frames if isinstance(frame, Image.Image)]
    if pictures:
        if len(pictures) != len(frames):
            raise ImageIOError(f"cannot read {path}: its frames mix 8-bit and other pixels")
        modes = "".join(frame.mode for frame in pictures)
        mode = ("RGB" if "RGB" in modes else "L") + ("A" if "A" in modes else "")
        frames = [np.asarray(frame.convert(mode)) for frame in pictures]
        if mode.startswith("RGB") and pictures[0].info["indexed"]:
            colours = np.stack(frames)[..., :3]
            if (colours == colours[..., :1]).all():
                frames = [
                    frame[..., [0, 3]] if len(mode) == 4 else frame[..., 0] for frame in frames
                ]
    if len(frames) == 1:
        return frames[0]
    if len({(frame.shape, frame.dtype) for frame in frames}) > 1:
        raise ImageIOError(f"cannot read {path}: its {len(frames)} frames differ in size")
    return np.stack(frames)


def _png_is_16bit_colour(path: Path) -> bool:
    """Whether a PNG has 16-bit colour or grey+alpha samples, which Pillow reduces to 8
    bits (16-bit grey it reads whole, as I;16)."""
    with open(path, "rb") as handle:
        header = handle.read(26)
    bit_depth, colour_type = struct.unpack(">BB", header[24:26])
    return bit_depth == 16 and colour_type in (2, 4, 6)


def _read_png16(path: Path, image, n_frames: int) -> np.ndarray:
    try:
        import imagecodecs
    except ImportError:
        raise ImageIOError(
            f"{path} is a 16-bit colour PNG; reading it without losing bits needs "
            "'imagecodecs' (pip install imagecodecs)"
        ) from None
    data = path.read_bytes()
    array = imagecodecs.apng_decode(data) if n_frames > 1 else imagecodecs.png_decode(data)
    key = image.info.get("transparency")
    if isinstance(key, tuple) and array.shape[-1] == 3:
        # imagecodecs ignores a tRNS colour key: applied here, keyed pixels transparent.
        alpha = np.where((array == np.array(key, np.uint16)).all(axis=-1), 0, 65535)
        array = np.concatenate([array, alpha[..., None].astype(np.uint16)], axis=-1)
    return array


def _read_jpeg2k_deep(path: Path) -> np.ndarray | None:
    """A JPEG 2000 file of more than 8 bits per sample, decoded whole by imagecodecs and
    shifted to the full 16-bit range as Pillow shifts 16-bit grey (a 12-bit 4095 reads
    65520); None for 8 bits or less, which Pillow reads exactly."""
    data = path.read_bytes()
    # The codestream's SIZ marker segment (ISO/IEC 15444-1 A.5.1) follows the SOC marker;
    # per component, Ssiz: bit 7 signed, bits 0-6 precision - 1.
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0 or len(data) < start + 42:
        return None  # Pillow reports the damage
    (n_components,) = struct.unpack(">H", data[start + 40 : start + 42])
    sizes = data[start + 42 : start + 42 + 3 * n_components : 3]
    precision = max(((size & 0x7F) + 1 for size in sizes), default=0)
    if precision <= 8:
        return None
    try:
        import imagecodecs
    except ImportError:
        raise ImageIOError(
            f"{path} is a {precision}-bit colour JPEG 2000; reading it without losing bits "
            "needs 'imagecodecs' (pip install imagecodecs)"
        ) from None
    array = imagecodecs.jpeg2k_decode(data)
    if array.dtype == np.uint16 and precision < 16:
        array = array << np.uint16(16 - precision)
    return array


# PGM, PPM, PAM -----------------------------------------------------------------------

#: The netpbm formats read here: plain and raw grey (P2, P5), colour (P3, P6), PAM (P7)
#: and colour PFM (PF, which Pillow cannot read).  Bilevel PBM (P1, P4) and grey PFM
#: (Pf) are left to Pillow, which reads them whole.
_NETPBM_MAGIC = re.compile(rb"P[23567F]\s")
#: One header number, after whitespace and comments (netpbm's "# ... end of line").
_NETPBM_NUMBER = re.compile(rb"(?:\s|#[^\r\n]*)*(\d+)")
#: One sample of a plain (P2, P3) raster.
_PLAIN_SAMPLE = re.compile(rb"\s*(\d+)")
#: PAM tuple types -> (channels, alpha); others are accepted by their DEPTH, as
#: netpbm's own pamtopng does.
_PAM_TUPLES = {
    "BLACKANDWHITE": (1, False),
    "GRAYSCALE": (1, False),
    "RGB": (3, False),
    "BLACKANDWHITE_ALPHA": (2, True),
    "GRAYSCALE_ALPHA": (2, True),
    "RGB_ALPHA": (4, True),
}


def _open_netpbm(path: Path) -> InputImage:
    try:
        array, n_frames = _read_netpbm(path)
    except ImageIOError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    has_channels = array.ndim == 3 + (n_frames > 1)
    return InputImage(
        path,
        "netpbm",
        array.shape,
        array.dtype,
        lazy=False,
        channel_axis=-1 if has_channels else None,
        alpha=has_channels and array.shape[-1] in (2, 4),
        read=lambda source: _read_netpbm(source.path)[0],
        n_frames=n_frames,
    )


def _read_netpbm(path: Path) -> tuple[np.ndarray, int]:
    """Every image of a PGM, PPM or PAM file (netpbm streams may hold several, one after
    the other: they are frames) as uint8 (maxval up to 255) or uint16."""
    data = path.read_bytes()
    frames, offset = [], 0
    while True:
        frame, offset = _netpbm_image(data, offset, path)
        frames.append(frame)
        following = data[offset:].lstrip()
        if not _NETPBM_MAGIC.match(following[:3]):
            break  # trailing bytes that start no image hold no pixels
        offset = len(data) - len(following)
    if len(frames) == 1:
        return frames[0], 1
    if len({(frame.shape, frame.dtype) for frame in frames}) > 1:
        raise ImageIOError(f"cannot read {path}: its {len(frames)} images differ in size or depth")
    return np.stack(frames), len(frames)


def _pfm_colour(data: bytes, offset: int, corrupt) -> tuple[np.ndarray, int]:
    """A colour PFM (Portable Float Map, netpbm's pfm format): float32 RGB, rows stored
    bottom to top, the scale's sign giving the byte order (negative: little-endian)."""
    header = re.compile(rb"PF\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s").match(data, offset)
    if header is None:
        raise corrupt("a PFM header without width, height and scale")
    width, height = int(header.group(1)), int(header.group(2))
    try:
        scale = float(header.group(3))
    except ValueError:
        raise corrupt("a PFM header with an unreadable scale") from None
    if width < 1 or height < 1 or scale == 0:
        raise corrupt(f"width {width}, height {height}, scale {scale} out of range")
    count, start = width * height * 3, header.end()
    if len(data) < start + 4 * count:
        raise corrupt("the file is truncated (fewer samples than its header says)")
    samples = np.frombuffer(data, "<f4" if scale < 0 else ">f4", count, start)
    image = samples.reshape(height, width, 3)[::-1].astype(np.float32)
    return image, start + 4 * count


def _netpbm_image(data: bytes, offset: int, path: Path) -> tuple[np.ndarray, int]:
    """The image whose header starts at ``offset``, and the offset after its raster."""

    def corrupt(what: str) -> ImageIOError:
        return ImageIOError(f"cannot read image {path}: {what}")

    magic = data[offset : offset + 2]
    if magic == b"PF":
        return _pfm_colour(data, offset, corrupt)
    if magic == b"P7":
        end = data.find(b"ENDHDR", offset)
        if end < 0:
            raise corrupt("a PAM header without ENDHDR")
        fields: dict[str, str] = {}
        for line in data[offset + 2 : end].decode("latin-1").splitlines():
            key, _, value = line.split("#", 1)[0].strip().partition(" ")
            if key:
                # TUPLTYPE may be given on several lines: they are joined.
                joined = f"{fields[key]} {value.strip()}" if key in fields else value.strip()
                fields[key] = joined
        try:
            width, height, depth, maxval = (
                int(fields[key]) for key in ("WIDTH", "HEIGHT", "DEPTH", "MAXVAL")
            )
        except (KeyError, ValueError):
            raise corrupt("a PAM header without valid WIDTH, HEIGHT, DEPTH and MAXVAL") from None
        tuple_type = fields.get("TUPLTYPE", "")
        channels, _ = _PAM_TUPLES.get(tuple_type, (depth, depth in (2, 4)))
        if channels != depth or not 1 <= depth <= 4:
            raise corrupt(
                f"a PAM of {depth} samples per pixel (TUPLTYPE {tuple_type or 'none'}); "
                "pictures of 1 to 4 (grey, grey+alpha, RGB, RGBA) are read"
            )
        if data[end + 6 : end + 7] != b"\n":
            raise corrupt("a PAM header whose ENDHDR line does not end")
        raster, plain = end + 7, False
    else:
        depth = 3 if magic in (b"P3", b"P6") else 1
        plain = magic in (b"P2", b"P3")
        numbers, position = [], offset + 2
        for _ in range(3):
            match = _NETPBM_NUMBER.match(data, position)
            if match is None:
                raise corrupt(f"a {magic.decode()} header without width, height and maxval")
            numbers.append(int(match.group(1)))
            position = match.end()
        width, height, maxval = numbers
        if not plain and data[position : position + 1] not in (b" ", b"\t", b"\n", b"\r"):
            raise corrupt("no whitespace between its header and its samples")
        raster = position if plain else position + 1  # one whitespace character ends it
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise corrupt(f"width {width}, height {height}, maxval {maxval} out of range")
    count = width * height * depth
    dtype = np.dtype(np.uint8 if maxval < 256 else ">u2")
    if plain:
        values, after = [], raster
        while len(values) < count:
            match = _PLAIN_SAMPLE.match(data, after)
            if match is None:
                raise corrupt(f"{len(values)} of its {count} samples are readable")
            values.append(int(match.group(1)))
            after = match.end()
        samples = np.array(values, dtype=np.int64)
    else:
        after = raster + count * dtype.itemsize
        if len(data) < after:
            raise corrupt("the file is truncated (fewer samples than its header says)")
        samples = np.frombuffer(data, dtype, count, raster)
    if samples.max(initial=0) > maxval:
        raise corrupt(f"a sample above its maxval {maxval}")
    top = 255 if maxval < 256 else 65535
    if maxval != top:
        # Scaled to the full range as Pillow scales 16-bit grey (floor); distinct values
        # stay distinct, as top / maxval >= 1.
        samples = samples.astype(np.uint32) * top // maxval
    out = np.asarray(samples).astype(np.uint8 if top == 255 else np.uint16)
    shape = (height, width) if depth == 1 else (height, width, depth)
    return out.reshape(shape), after


# TIFF --------------------------------------------------------------------------------

#: TIFF Orientation -> (swap rows and columns, axes flipped after that), as viewers
#: apply it; tifffile returns the pixels in stored order.
_ORIENTATIONS = {2: (False, "X"), 3: (False, "YX"), 4: (False, "Y"), 5: (True, "")}
_ORIENTATIONS |= {6: (True, "X"), 7: (True, "YX"), 8: (True, "Y")}


#: tifffile's messages about a damaged page chain or a tag entry it cannot decode (a
#: type or offset no writer produces).  tifffile reads on without them: a broken page
#: chain gives fewer frames, a broken strip table missing pixels, and a broken tag of
#: any kind says the bytes around it cannot be trusted either.  (Its messages about
#: ImageJ, OME or shaped metadata it cannot parse are only notes: it falls back to the
#: pages themselves.)
_TIFF_STRUCTURE = re.compile(r"TiffPages? |TiffTag")


def _open_tiff(path: Path, *, chunked: bool, messages: list[str]) -> InputImage:
    """:func:`_parse_tiff`, refusing a TIFF whose structure tifffile found damaged
    (``messages``: what the tifffile logger says, collected as it says it)."""
    start = len(messages)
    try:
        source = _parse_tiff(path, chunked=chunked)
    except ImageIOError:
        _check_tiff_structure(path, messages[start:])
        raise
    _check_tiff_structure(path, messages[start:])
    return source


def _check_tiff_structure(path: Path, messages: list[str]) -> None:
    damage = [message for message in messages if _TIFF_STRUCTURE.search(message)]
    if damage:
        raise ImageIOError(
            f"cannot read image {path}: its TIFF structure is damaged ({_shorten(damage[0])})"
        )


def _parse_tiff(path: Path, *, chunked: bool) -> InputImage:
    import tifffile
    from tifffile import COMPRESSION, EXTRASAMPLE, PHOTOMETRIC

    notes = []
    try:
        with tifffile.TiffFile(path) as tif:
            # tifffile's series are the file's images: a shaped stack, one image per
            # page written on its own, a reduced-resolution page (NewSubfileType bit 0,
            # a preview viewers skip) or the levels of a pyramid (series.levels).
            kept, images, reduced = [], [], 0
            for index, series in enumerate(tif.series):
                if series.keyframe.is_reduced:
                    reduced += len(series.levels)
                    continue
                kept.append(index)
                images.append(series)
                for level in series.levels[1:]:
                    # tifffile also makes a smaller page that follows a larger one a
                    # level; unless the file says it is reduced (or a SubIFD, where
                    # pyramids keep their levels) it is an image of its own.
                    if level.keyframe.is_reduced or level.keyframe.is_subifd:
                        reduced += 1
                    else:
                        images.append(level)
            if not images:
                what = "only reduced-resolution pages" if reduced else "no image"
                raise ImageIOError(f"cannot read image {path}: it holds {what} (damaged?)")
            if reduced:
                notes.append(_reduced_note(reduced))
            if len({_tiff_kind(image) for image in images}) > 1:
                raise ImageIOError(_mixed_tiff_message(path, images))
            # tifffile reads what is there: pixels beyond the end of a file cut short
            # would come back as an error at best, as zeros at worst.
            size = os.path.getsize(path)
            for image in images:
                for one in image.pages:
                    pieces = zip(one.dataoffsets, one.databytecounts, strict=False)
                    if max((offset + count for offset, count in pieces), default=0) > size:
                        raise ImageIOError(
                            f"cannot read image {path}: the file is cut short (its pixels "
                            f"reach beyond its {size} bytes)"
                        )
            series = images[0]
            page = series.keyframe
            shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes
            if len(kept) > 1:
                # Pages written one at a time (tifffile sees one series each) but all of
                # one kind: the frames of one stack, as viewers page through them.
                shape, axes = (len(kept), *shape), "I" + axes
            photometric, extra = PHOTOMETRIC(page.photometric), tuple(page.extrasamples)
            picture = not (
                photometric in (PHOTOMETRIC.MINISBLACK, PHOTOMETRIC.RGB)
                or (photometric == PHOTOMETRIC.YCBCR and page.compression == COMPRESSION.JPEG)
            )
            if picture or page.bitspersample == 1 or EXTRASAMPLE.ASSOCALPHA in extra:
                # Bilevel, MinIsWhite, palette, CMYK, uncompressed YCbCr, Lab, alpha
                # premultiplied: tifffile returns the stored samples, Pillow what
                # viewers show.
                described = f"{page.bitspersample}-bit {photometric.name} samples"
                return _open_pillow(path, tiff=described)
            orientation = _ORIENTATIONS.get(page.tags.valueof(274, 1))
            profile = page.tags.valueof(34675)  # InterColorProfile
    except ImageIOError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    order, names = _tiff_view_axes(axes, orientation)
    shape = tuple(shape[i] for i in order)
    if "S" in names:
        channel_axis, n_colour = -1, 3 if photometric == PHOTOMETRIC.RGB else 1
    else:
        channel_axis = -1 if len(shape) >= 3 and shape[-1] in (3, 4) else None
        n_colour = 1
    icc_profile, icc_notes = _matching_profile(profile, n_colour, photometric.name)
    return InputImage(
        path,
        "tiff",
        shape,
        dtype.newbyteorder("="),
        lazy=chunked or math.prod(shape) * dtype.itemsize > LAZY_TIFF_BYTES,
        channel_axis=channel_axis,
        alpha="S" in axes and extra[-1:] == (EXTRASAMPLE.UNASSALPHA,),
        read=lambda source: _read_tiff(source, kept, order, names, orientation),
        notes=notes + icc_notes,
        icc_profile=icc_profile,
    )


def _tiff_kind(series) -> tuple:
    """What must agree for images of a TIFF to be frames of one stack."""
    page = series.keyframe
    return (
        tuple(series.shape),
        np.dtype(series.dtype),
        series.axes,
        int(page.photometric),
        tuple(int(value) for value in page.extrasamples),
        page.tags.valueof(274, 1),  # Orientation
    )


def _mixed_tiff_message(path: Path, series: list) -> str:
    """Why the images of a TIFF cannot be read as one stack, in the words of what differs."""
    from tifffile import PHOTOMETRIC

    shapes = [tuple(one.shape) for one in series]
    if len(set(shapes)) > 1:
        what = f"of different shapes {' '.join(map(str, shapes))}"
    else:
        described = [
            f"{np.dtype(one.dtype).name} {PHOTOMETRIC(one.keyframe.photometric).name}"
            for one in series
        ]
        what = f"of shape {shapes[0]} but different kinds ({', '.join(described)})"
    return f"cannot read {path}: it holds {len(series)} images {what}; save them as separate files"


def _tiff_view_axes(axes: str, orientation) -> tuple[list[int], str]:
    """The transposition of the stored axes that shows the image as viewers do, and the
    axes' names after it: rows and columns swapped as the Orientation tag says, samples
    last whatever the planar configuration (a planar RGB TIFF is an RGB picture)."""
    order = list(range(len(axes)))
    if orientation and orientation[0]:
        y, x = axes.index("Y"), axes.index("X")
        order[y], order[x] = x, y
    if "S" in axes:
        s = axes.index("S")
        order = [axis for position, axis in enumerate(order) if position != s] + [order[s]]
        axes = axes.replace("S", "") + "S"
    return order, axes


def _tiff_stack(tif, series: list[int]):
    """The series of ``tif`` numbered ``series`` as one tifffile series, stacked along a
    new first axis: pages written one at a time are one series each, and reading them
    as one series costs one parse of the file and, lazily, one zarr store (2,000 pages:
    a few seconds, not a graph of 2,000 arrays)."""
    import tifffile

    if len(series) == 1:
        return tif.series[series[0]]
    first = tif.series[series[0]]
    pages = [page for index in series for page in tif.series[index].pages]
    shape = (len(series), *first.shape)
    return tifffile.TiffPageSeries(
        pages, shape, first.dtype, "I" + first.axes, parent=tif, kind="pages"
    )


def _read_tiff(source: InputImage, series: list[int], order: list[int], names: str, orientation):
    import tifffile

    if source.lazy:
        import dask.array as xp

        zarr = _require_zarr("reading a TIFF chunk by chunk")
        tif = tifffile.TiffFile(source.path)
        source._closers.append(tif)  # the store reads through its file handle
        store = _tiff_stack(tif, series).aszarr(level=0)
        source._closers.append(store)
        array = _lazy_array(zarr.open_array(store, mode="r"), source.path, str(series))
    else:
        xp = np
        with tifffile.TiffFile(source.path) as tif:
            array = _tiff_stack(tif, series).asarray(level=0)
    array = xp.transpose(array, order)
    for name in orientation[1] if orientation else "":
        array = xp.flip(array, axis=names.index(name))
    if source.lazy:
        from dask.array.core import normalize_chunks

        # TIFF strips are often a few rows each: chunks of whole rows and samples, of
        # about CHUNK_BYTES, instead.
        whole = {names.index("X"), names.index("S") if "S" in names else -1}
        wanted = tuple(-1 if axis in whole else "auto" for axis in range(array.ndim))
        array = array.rechunk(
            normalize_chunks(wanted, array.shape, limit=CHUNK_BYTES, dtype=array.dtype)
        )
    return array


# zarr --------------------------------------------------------------------------------


def _open_zarr(path: Path) -> InputImage:
    zarr = _require_zarr("reading .zarr input")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise ImageIOError(f"cannot read zarr {path}: {_describe(exc)}") from exc
    if not hasattr(node, "shape"):  # a group, e.g. OME-Zarr: ask for one of its arrays
        names = sorted(name for name, _ in node.arrays())
        hint = f"; pass one of its arrays, e.g. {path / names[0]}" if names else ""
        raise ImageIOError(f"{path} is a zarr group, not an array{hint}")
    shape = tuple(node.shape)

    def read(source: InputImage):
        # The store's own chunks: the outputs get them, and memory stays that of the
        # Python API on the same array.
        return _lazy_array(zarr.open_array(str(source.path), mode="r"), source.path, "")

    return InputImage(
        path,
        "zarr",
        shape,
        np.dtype(node.dtype).newbyteorder("="),
        lazy=True,
        channel_axis=-1 if len(shape) >= 3 and shape[-1] in (3, 4) else None,
        alpha=None,
        read=read,
    )


class _NamedErrors:
    """A zarr array whose read errors name the file they come from.

    A lazy input is read chunk by chunk while dask computes, long after
    :func:`open_image`; a corrupt chunk would surface there as the codec's bare
    exception (a ``ValueError`` from zlib, say) that names no file.
    """

    def __init__(self, array, path: Path) -> None:
        self.array, self.path = array, path
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key):
        try:
            return self.array[key]
        except Exception as exc:
            raise ImageIOError(f"cannot read image {self.path}: {_describe(exc)}") from exc


def _lazy_array(array, path: Path, part: str):
    """A dask array over a zarr array, in its own chunks, read errors naming ``path``."""
    import dask.array as da
    from dask.base import tokenize

    stat = os.stat(path)  # a name that changes when the file does
    return da.from_array(
        _NamedErrors(array, path),
        chunks=array.chunks,
        name="read-" + tokenize(str(path), part, stat.st_mtime_ns, stat.st_size),
        asarray=True,
        fancy=False,
        meta=np.empty((0,) * array.ndim, array.dtype),
    )


# --------------------------------------------------------------------------------------
# Checking what a format can hold
# --------------------------------------------------------------------------------------


def output_format(path: str | os.PathLike) -> str:
    """The format ("png", "jpeg", "tiff", "zarr", "npy") of an output path, by suffix.

    Raises
    ------
    ImageIOError
        The suffix is not one we can write.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS_BY_SUFFIX:
        known = ", ".join(sorted(FORMATS_BY_SUFFIX))
        raise ImageIOError(
            f"cannot write {path}: unknown output format {suffix or '(no suffix)'!r} "
            f"(use one of {known})"
        )
    return FORMATS_BY_SUFFIX[suffix]


def check_writable(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    dtype: np.dtype,
    channel_axis: int | None,
    alpha: bool | None = None,
) -> None:
    """Raise :class:`ImageIOError` if ``path``'s format cannot hold such an array.

    Called before any work, so that a batch fails at once and not after an hour.
    ``alpha``: whether the last channel is alpha (None: 4 channels on the last axis).
    """
    fmt = output_format(path)
    if fmt not in ("png", "jpeg"):
        return  # TIFF, zarr and npy hold any numeric array, frames included
    name, ndim = fmt.upper(), len(shape)
    axis = None if channel_axis is None else channel_axis % ndim
    spatial = [size for i, size in enumerate(shape) if i != axis]
    channels = 1 if axis is None else shape[axis]
    alpha = channels == 4 if alpha is None else alpha
    problem = None
    if len(spatial) > 2:
        problem = (
            f"the image has {math.prod(spatial[:-2])} frames (shape {shape}) and {name} "
            "holds one; write .tif, .zarr or .npy to keep every frame"
        )
    elif axis is not None and axis != ndim - 1:
        problem = f"{name} needs colour channels on the last axis"
    elif (channels, bool(alpha)) not in {(1, False), (3, False), (2, True), (4, True)} or (
        alpha and fmt == "jpeg"
    ):
        problem = f"{name} cannot hold {channels} channels{' with alpha' * bool(alpha)}"
    elif np.dtype(dtype).name not in ("uint8", "uint16")[: 1 + (fmt == "png")]:
        problem = f"{name} cannot hold {np.dtype(dtype).name} pixels without changing them"
    if problem:
        hint = "" if "frames" in problem else "; write .tif or .zarr instead"
        raise ImageIOError(f"cannot write {path}: {problem}{hint}")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask image as a boolean array of its spatial shape (channels removed).

    A pixel is True where it is nonzero in any colour channel.  A mask with
    transparency (an alpha channel, a tRNS colour key or palette transparency) in which
    some pixel is fully transparent is read by its alpha instead: True where alpha > 0,
    whatever the colour, as in a layer painted over a transparent background.  The mask
    is read into memory whole.

    Raises
    ------
    ImageIOError
        Missing, unreadable, unsupported or corrupt file.
    """
    with open_image(path) as source:
        values = np.asarray(source.load())
    if source.channel_axis is None:
        return values != 0
    values = np.moveaxis(values, source.channel_axis, -1)
    if source.alpha:
        alpha = values[..., -1]
        if np.any(alpha == 0):
            return alpha > 0
        values = values[..., :-1]
    return np.any(values != 0, axis=-1)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it to ``path`` if the block succeeds.

    Without ``overwrite`` an existing destination raises :class:`ImageIOError` (checked
    again here: another process may have created it since the batch was checked).
    Whatever ends the block (an error, Ctrl-C, a stop signal), the temporary is removed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ImageIOError(f"{path} already exists (use --overwrite to replace it)")
    if path.is_dir() and path.suffix.lower() != ".zarr":
        raise ImageIOError(f"cannot write {path}: it is a directory")
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    _remove(temporary)
    try:
        yield temporary
        if path.is_dir():  # an old .zarr directory: os.replace cannot replace a directory
            shutil.rmtree(path)
        os.replace(temporary, path)
    finally:
        _remove(temporary)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_array(
    path: Path,
    array: np.ndarray,
    *,
    fmt: str,
    channel_axis: int | None,
    alpha: bool | None = None,
    labels: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    indexed: bool = True,
    optimize: bool = False,
    icc_profile: bytes | None = None,
) -> None:
    """Write an in-memory array to ``path`` (a temporary path) as ``fmt``, keeping its dtype.

    Parameters
    ----------
    path : pathlib.Path
        Where to write; ``fmt`` decides the format, not the suffix.
    array : numpy.ndarray
        The pixels.
    fmt : str
        One of the values of :data:`FORMATS_BY_SUFFIX`.
    channel_axis : int or None
        Colour axis of ``array`` (None: intensity image); decides the TIFF layout.
    alpha : bool or None
        Whether the last channel is alpha (None: 4 channels on the last axis), tagged as
        ``extrasamples`` in TIFF.
    labels, colors : numpy.ndarray, optional
        The quantisation (``array == colors[labels]`` on the colour channels): a PNG of
        at most 256 colours is then written indexed without searching its colours.
    indexed : bool
        Allow an indexed PNG; False writes plain greyscale/RGB(A) PNGs.
    optimize : bool
        Also encode a PNG with Pillow's ``optimize=True`` (zlib level 9 and a search
        for the smallest palette; 16-bit colour: zlib level 9) and keep whichever of the
        two encodings is smaller: never larger than without it, several times slower.
    icc_profile : bytes, optional
        The input's ICC colour profile (:attr:`InputImage.icc_profile`), embedded in PNG
        (iCCP), JPEG and TIFF outputs; npy and zarr cannot hold one
        (:func:`icc_profile_note`).
    """
    from PIL import Image

    profile = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "png":
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
            path.write_bytes(_with_iccp(encoded, icc_profile) if icc_profile else encoded)
        else:
            _save_png(Image.fromarray(np.ascontiguousarray(array)), path, optimize, **profile)
    elif fmt == "jpeg":
        Image.fromarray(array).save(path, format="JPEG", quality=95, **profile)
    elif fmt == "tiff":
        import tifffile

        layout = _tiff_layout(array.shape, array.dtype, channel_axis, alpha)
        tifffile.imwrite(path, array, compression="zlib", iccprofile=icc_profile or None, **layout)
    elif fmt == "npy":
        with open(path, "wb") as handle:  # np.save(path) would append ".npy"
            np.save(handle, array)
    else:
        create_lazy_target(path, fmt, array.shape, array.dtype, None, channel_axis)[...] = array


def create_lazy_target(
    path, fmt, shape, dtype, chunks, channel_axis, alpha=None, *, icc_profile=None
):
    """An empty on-disk array that ``dask.array.store`` can fill chunk by chunk.

    ``zarr``: a zarr array with the given ``chunks``.  ``tiff``: an uncompressed,
    memory-mapped TIFF, the one TIFF that can be written in any order (for the layouts
    :func:`write_tiff_from_dask` cannot stream, e.g. planar RGB), with ``icc_profile``.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if fmt == "zarr":
        zarr = _require_zarr("writing .zarr output")
        return zarr.open_array(
            str(path), mode="w", shape=shape, dtype=dtype, chunks=chunks or shape
        )
    import tifffile

    layout = _tiff_layout(shape, dtype, channel_axis, alpha)
    return tifffile.memmap(
        path,
        shape=shape,
        dtype=dtype,
        bigtiff=nbytes > 2**31,
        iccprofile=icc_profile or None,
        **layout,
    )


def can_stream_tiff(ndim: int, channel_axis: int | None) -> bool:
    """Whether :func:`write_tiff_from_dask` handles this layout (channels last or none)."""
    return channel_axis is None or channel_axis % ndim == ndim - 1


def write_tiff_from_dask(
    path, array, channel_axis, alpha=None, *, progress=None, icc_profile=None
) -> None:
    """Write a dask array as a zlib-compressed, tiled TIFF, one band of rows at a time.

    tifffile takes the tiles in file order (page by page, row of tiles by row of tiles),
    so the array is cut into bands of whole rows, a multiple of the tile height and
    about :data:`CHUNK_BYTES` each, computed one after the other: memory holds one band.
    ``channel_axis`` must be None or the last axis (:func:`can_stream_tiff`);
    ``progress(fraction)`` is called after each band; ``icc_profile`` is embedded.
    """
    import tifffile

    y = array.ndim - 2 - (channel_axis is not None)
    row_bytes = array.dtype.itemsize * math.prod(array.shape[y + 1 :])
    rows = max(1, CHUNK_BYTES // (row_bytes * _TILE)) * _TILE
    array = array.rechunk((1,) * y + (rows,) + array.shape[y + 1 :])
    n_blocks = math.prod(array.numblocks)

    def tiles():
        for number, index in enumerate(np.ndindex(*array.numblocks), start=1):
            band = np.asarray(array.blocks[index].compute())[(0,) * y]
            for top in range(0, band.shape[0], _TILE):
                for left in range(0, band.shape[1], _TILE):
                    yield band[top : top + _TILE, left : left + _TILE]
            if progress is not None:
                progress(number / n_blocks)

    tifffile.imwrite(
        path,
        tiles(),
        shape=array.shape,
        dtype=array.dtype,
        tile=(_TILE, _TILE),
        compression="zlib",
        bigtiff=math.prod(array.shape) * array.dtype.itemsize > 2**31,  # size unknown yet
        iccprofile=icc_profile or None,
        **_tiff_layout(array.shape, array.dtype, channel_axis, alpha),
    )


def _tiff_layout(shape, dtype, channel_axis, alpha) -> dict:
    """Photometric interpretation, planar layout and alpha tag that round-trip ``shape``."""
    if channel_axis is None:
        return {"photometric": "minisblack"}
    ndim = len(shape)
    axis = channel_axis % ndim
    channels = shape[axis]
    alpha = bool(channels == 4 and axis == ndim - 1 if alpha is None else alpha)
    # tifffile writes RGB samples of every integer and float dtype (SampleFormat says
    # which): three colour channels are tagged RGB whatever their dtype.
    rgb = channels - alpha == 3 and np.dtype(dtype).kind in "uif"
    layout: dict[str, Any] = {"photometric": "rgb" if rgb else "minisblack"}
    if axis in (ndim - 1, ndim - 3):
        layout["planarconfig"] = "contig" if axis == ndim - 1 else "separate"
    extra = channels - (3 if rgb else 1)
    if extra > 0:
        layout["extrasamples"] = ("unspecified",) * (extra - alpha) + ("unassalpha",) * alpha
    return layout


def icc_profile_note(path: str | os.PathLike, icc_profile: bytes | None) -> str | None:
    """A line for the user when ``path``'s format cannot hold the input's ICC profile
    (npy, zarr), else None: the numbers are written, the colour management is not."""
    if not icc_profile or output_format(path) in ("png", "jpeg", "tiff"):
        return None
    return (
        f"{path} keeps the pixel values but not the input's ICC colour profile "
        f"({output_format(path)} cannot hold one): colour-managed viewers may show other colours"
    )


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


def _with_iccp(png: bytes, icc_profile: bytes) -> bytes:
    """``png`` with an iCCP chunk after IHDR (imagecodecs writes none; PNG 1.2 11.3.3.3:
    a name, a zero byte, compression method 0, the zlib-compressed profile)."""
    data = b"ICC Profile\x00\x00" + zlib.compress(icc_profile)
    chunk = struct.pack(">I", len(data)) + b"iCCP" + data
    chunk += struct.pack(">I", zlib.crc32(b"iCCP" + data))
    end_of_ihdr = len(_PNG_SIGNATURE) + 8 + 13 + 4
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


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


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _require_zarr(purpose: str):
    try:
        import zarr
    except ImportError:
        raise ImageIOError(f"{purpose} needs the 'zarr' package (pip install zarr)") from None
    return zarr


def _imagecodecs(path: Path):
    try:
        import imagecodecs
    except ImportError:
        raise ImageIOError(
            f"writing a 16-bit colour PNG needs 'imagecodecs' (pip install imagecodecs); "
            f"or write .tif instead of {path.name}"
        ) from None
    return imagecodecs


def _describe(exc: BaseException) -> str:
    """One-line description of an exception from a reader or writer."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
