"""Reading and writing images for the command line (no napari, no Qt).

The contract is what an image viewer shows: an input is read as the pixels, frames
and transparency a viewer would display, and the outputs show the same picture.

Reading
-------
* Pictures (PNG, JPEG, GIF, WebP, BMP, PPM, and TIFFs whose photometric
  interpretation is not plain grey or RGB) go through Pillow, which converts every
  mode to what viewers show: bilevel to black and white, palettes to their colours,
  CMYK / YCbCr / Lab to RGB, tRNS colour keys and palette transparency to an alpha
  channel, EXIF orientation applied.  Every frame is read (animated GIF, APNG, WebP,
  multi-page TIFF) into a (T, Y, X[, C]) stack.
* 16-bit colour PNGs go through ``imagecodecs``: Pillow reduces them to 8 bits.
* Grey and RGB TIFFs of any dtype go through ``tifffile`` (stacks, samples,
  ``extrasamples`` alpha); above :data:`LAZY_TIFF_BYTES` (or with ``chunked=True``)
  they are read chunk by chunk through tifffile's zarr store and dask.
* ``.zarr`` arrays through ``dask.array.from_zarr``, keeping the store's chunks.

Every array is returned in native byte order.

Writing
-------
The dtype is kept.  An 8-bit PNG of at most 256 (colour, alpha) pairs is written
indexed (mode ``"P"``), with one transparent entry for all fully transparent pixels.
Formats that hold one 2-D image (PNG, JPEG) refuse stacks with an error naming the
frame count.  Every output is written to a temporary name beside its destination and
renamed into place at the end, so an interrupted run never leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: TIFF files whose pixel data would take more than this many bytes in memory are read
#: lazily (chunk by chunk) even without ``--chunked``.  A fixed number rather than a
#: fraction of the machine's memory, so the behaviour is the same everywhere.
LAZY_TIFF_BYTES = 1 << 30

#: Size aimed at for one chunk of a lazily processed TIFF (zarr keeps its own chunks).
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

_TIFF_SUFFIXES = {".tif", ".tiff"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageIOError(Exception):
    """A problem with an input or output file, with a message fit for one line of stderr."""


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


@dataclass
class InputImage:
    """An opened input image: its header, and a way to load its pixels.

    Parameters
    ----------
    path : pathlib.Path
        The file (or ``.zarr`` directory) as given on the command line.
    kind : {"pillow", "tiff", "zarr"}
        Which reader handles it.
    shape : tuple of int
        Shape of the array :meth:`load` returns (for Pillow files read from the header:
        an indexed image whose colours all turn out grey loads with fewer channels).
    dtype : numpy.dtype
        Its dtype (native byte order).
    lazy : bool
        Whether :meth:`load` returns a dask array (processed chunk by chunk).
    channel_axis : int or None
        Negative index of the colour axis, or None for an intensity image.
    alpha : bool or None
        Whether the last entry of the colour axis is alpha; None when the file does not
        say (a zarr array: the core's rule applies).
    n_frames : int
        Frames (pages) of a Pillow file; they form the leading axis when more than one.
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
    _closers: list[Any] = field(default_factory=list, repr=False)

    def load(self):
        """Return the pixels: a numpy array, or a dask array when :attr:`lazy`."""
        try:
            array = self.read(self)
        except ImageIOError:
            raise
        except MemoryError:
            raise ImageIOError(
                f"not enough memory to read {self.path}; try --chunked (TIFF) or a .zarr input"
            ) from None
        except Exception as exc:  # readers raise many types for corrupt data
            raise ImageIOError(f"cannot read image {self.path}: {_describe(exc)}") from exc
        if self.kind == "pillow" and array.shape != self.shape:
            # The header's forecast was wrong (e.g. an indexed file whose colours are all
            # grey reads as greyscale): describe what was read.
            self.shape = array.shape
            has_channels = array.ndim == 3 + (self.n_frames > 1)
            self.channel_axis = -1 if has_channels else None
            self.alpha = has_channels and array.shape[-1] in (2, 4)
        return _native(array)

    def close(self) -> None:
        """Release file handles held by a lazy reader."""
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer.close()
        self._closers.clear()

    def __enter__(self) -> InputImage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_image(path: str | os.PathLike, *, chunked: bool = False) -> InputImage:
    """Open ``path`` and read its header (shape and dtype), but not its pixels.

    Parameters
    ----------
    path : str or path-like
        An image file or a ``.zarr`` directory.
    chunked : bool
        Read a grey or RGB TIFF lazily even when it would fit in memory.  ``.zarr`` input
        is always lazy; other files are always read whole.

    Returns
    -------
    InputImage

    Raises
    ------
    ImageIOError
        Missing, unreadable, unsupported or corrupt file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageIOError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if path.is_dir():
        if suffix == ".zarr" or (path / "zarr.json").exists() or (path / ".zarray").exists():
            return _open_zarr(path)
        raise ImageIOError(f"{path} is a directory, not an image (or a .zarr array)")
    if not os.access(path, os.R_OK):
        raise ImageIOError(f"cannot read {path}: permission denied")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
    except OSError as exc:
        raise ImageIOError(f"cannot read {path}: {_describe(exc)}") from exc
    # Decide by content first: a PNG called .tif is still a PNG.
    is_tiff = magic[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    if is_tiff or (suffix in _TIFF_SUFFIXES and not magic.startswith(_PNG_SIGNATURE)):
        return _open_tiff(path, chunked=chunked)
    return _open_pillow(path)


def _native(array):
    """The array in native byte order (Pillow's I;16B, big-endian zarr and TIFF data)."""
    if array.dtype.isnative:
        return array
    return array.astype(array.dtype.newbyteorder("="))


# Pillow ------------------------------------------------------------------------------

#: What viewers show for each Pillow mode: (mode to convert to, dtype).  Modes with
#: transparency in ``info`` (a tRNS colour key, palette transparency) gain alpha.
_VIEW_MODES = {
    "1": ("L", np.uint8),
    "L": ("L", np.uint8),
    "LA": ("LA", np.uint8),
    "La": ("LA", np.uint8),
    "P": ("RGB", np.uint8),
    "PA": ("RGBA", np.uint8),
    "RGB": ("RGB", np.uint8),
    "RGBA": ("RGBA", np.uint8),
    "RGBa": ("RGBA", np.uint8),
    "I;16": ("I;16", np.uint16),
    "I;16L": ("I;16", np.uint16),
    "I;16B": ("I;16", np.uint16),
    "I;16N": ("I;16", np.uint16),
    "I": ("I", np.int32),
    "F": ("F", np.float32),
}
#: "I;16A" is no Pillow mode: 16-bit grey with a tRNS key, read as grey + alpha.
_WITH_ALPHA = {"L": "LA", "RGB": "RGBA", "I;16": "I;16A"}
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1, "I;16A": 2, "I": 1, "F": 1}


def _view_mode(image) -> tuple[str, type]:
    """The mode a viewer shows ``image`` (one frame) in, and its dtype."""
    mode, dtype = _VIEW_MODES.get(image.mode, ("RGB", np.uint8))  # CMYK, YCbCr, LAB, HSV...
    if mode in _WITH_ALPHA and "transparency" in image.info:
        mode = _WITH_ALPHA[mode]
    if mode == "I" and image.format in ("PNG", "PPM"):
        # Pillow opens 16-bit PGM (and PNG, in old versions) as 32-bit "I": the file
        # holds at most 16 bits, so uint16 is what it is.
        dtype = np.uint16
    return mode, dtype


def _open_pillow(path: Path, *, tiff: dict | None = None) -> InputImage:
    """Read the header only: a batch of many photos must not sit in memory at once."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            n_frames = getattr(image, "n_frames", 1)
            if image.format == "PNG" and (depth := _png_16bit_colour(path)):
                mode, dtype = depth, np.uint16
                if mode == "RGB" and "transparency" in image.info:
                    mode = "RGBA"
            else:
                mode, dtype = _view_mode(image)
            width, height = image.size
            # Pillow reports a TIFF's size already turned upright; other formats are
            # turned by exif_transpose when read.
            turned = image.format != "TIFF" and image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except UnidentifiedImageError:
        if tiff is not None:
            raise ImageIOError(
                f"cannot read {path}: a {tiff['photometric']} TIFF with {tiff['bits']}-bit "
                "samples is not supported"
            ) from None
        raise ImageIOError(f"cannot read image {path}: not a recognised image format") from None
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    if turned:
        width, height = height, width
    channels = _CHANNELS[mode]
    shape = (n_frames,) * (n_frames > 1) + (height, width) + (channels,) * (channels > 1)
    return InputImage(
        path,
        "pillow",
        shape,
        np.dtype(dtype),
        lazy=False,
        channel_axis=-1 if channels > 1 else None,
        alpha=mode in ("LA", "RGBA", "I;16A"),
        read=_read_pillow,
        n_frames=n_frames,
    )


def _png_16bit_colour(path: Path) -> str | None:
    """ "LA" or "RGB"/"RGBA" for a PNG with 16-bit colour or alpha samples, else None.

    Pillow reduces such PNGs to 8 bits; imagecodecs reads them whole.
    """
    with open(path, "rb") as handle:
        header = handle.read(29)
    if len(header) < 29 or not header.startswith(_PNG_SIGNATURE):
        return None
    bit_depth, colour_type = struct.unpack(">BB", header[24:26])
    if bit_depth != 16:
        return None
    return {2: "RGB", 4: "LA", 6: "RGBA"}.get(colour_type)


def _read_pillow(source: InputImage) -> np.ndarray:
    from PIL import Image, ImageSequence

    with _pillow_tiff_through_libtiff(), Image.open(source.path) as image:
        if image.format == "PNG" and _png_16bit_colour(source.path):
            return _read_png16(source.path, image)
        frames = [_view_frame(frame) for frame in ImageSequence.Iterator(image)]
    return _stack_frames(frames, source.path)


@contextlib.contextmanager
def _pillow_tiff_through_libtiff():
    """Decode TIFFs with libtiff, as Pillow does for every compressed TIFF.

    Pillow 13's own decoder of uncompressed TIFFs garbles the pixels when the
    Orientation tag swaps rows and columns (5 to 8); libtiff gets them right.
    """
    from PIL import TiffImagePlugin

    previous = TiffImagePlugin.READ_LIBTIFF
    TiffImagePlugin.READ_LIBTIFF = True
    try:
        yield
    finally:
        TiffImagePlugin.READ_LIBTIFF = previous


def _view_frame(frame):
    """One frame as a viewer shows it: a Pillow image in an 8-bit L/LA/RGB/RGBA mode, or
    an array for 16-bit, 32-bit integer and float modes."""
    from PIL import ImageOps

    mode, dtype = _view_mode(frame)
    frame = ImageOps.exif_transpose(frame)
    if mode in ("I;16", "I;16A", "I", "F"):
        array = np.asarray(frame)
        if mode == "I;16A":
            # Pillow's conversions clip 16-bit grey to 8 bits, so a tRNS key on a
            # 16-bit grey PNG is applied here: keyed pixels become transparent.
            array = _native(array).astype(np.uint16)
            key = frame.info["transparency"]
            alpha = np.where(array == key, 0, np.iinfo(np.uint16).max).astype(np.uint16)
            return np.stack([array, alpha], axis=-1)
        return _native(array).astype(dtype)
    converted = frame.convert(mode)
    converted.info["was_indexed"] = frame.mode in ("P", "PA")
    return converted


def _stack_frames(frames: list, path: Path) -> np.ndarray:
    """Frames as one array: the single frame, or a (T, Y, X[, C]) stack.

    A GIF's first frame is indexed and the later ones RGB(A) once Pillow has composited
    them, so 8-bit frames are brought to one mode: colour if any frame has colour,
    alpha if any has alpha.  An indexed file whose colours are all grey (as this program
    writes quantised greyscale images) reads as greyscale.
    """
    from PIL import Image

    pictures = [frame for frame in frames if isinstance(frame, Image.Image)]
    if pictures:
        if len(pictures) != len(frames):
            raise ImageIOError(f"cannot read {path}: its frames mix 8-bit and other pixel types")
        colour = any(frame.mode in ("RGB", "RGBA") for frame in pictures)
        alpha = any(frame.mode in ("LA", "RGBA") for frame in pictures)
        mode = ("RGB" if colour else "L") + ("A" if alpha else "")
        arrays = [np.asarray(frame.convert(mode)) for frame in pictures]
        if colour and all(frame.info.get("was_indexed") for frame in pictures[:1]):
            if all(
                (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all() for a in arrays
            ):
                arrays = [a[..., [0, 3]] if alpha else a[..., 0] for a in arrays]
        frames = arrays
    if len(frames) == 1:
        return frames[0]
    shapes = {(frame.shape, frame.dtype) for frame in frames}
    if len(shapes) > 1:
        raise ImageIOError(
            f"cannot read {path}: its {len(frames)} frames differ in size or pixel type"
        )
    return np.stack(frames)


def _read_png16(path: Path, image) -> np.ndarray:
    """A PNG with 16-bit colour or alpha samples, every frame, through imagecodecs."""
    try:
        import imagecodecs
    except ImportError:
        raise ImageIOError(
            f"{path} is a 16-bit colour PNG; reading it without losing bits needs "
            "'imagecodecs' (pip install imagecodecs)"
        ) from None
    data = path.read_bytes()
    n_frames = getattr(image, "n_frames", 1)
    array = imagecodecs.apng_decode(data) if n_frames > 1 else imagecodecs.png_decode(data)
    key = image.info.get("transparency")
    if isinstance(key, tuple) and array.shape[-1] == 3:
        # imagecodecs ignores a tRNS colour key; applied here (keyed pixels transparent).
        hidden = (array == np.asarray(key, dtype=array.dtype)).all(axis=-1)
        alpha = np.where(hidden, 0, np.iinfo(np.uint16).max).astype(np.uint16)
        array = np.concatenate([array, alpha[..., None]], axis=-1)
    return array


# TIFF --------------------------------------------------------------------------------

#: TIFF Orientation -> (swap rows and columns, axes to flip afterwards), as viewers apply
#: it; tifffile returns the pixels in stored order.
_ORIENTATIONS = {2: (False, "X"), 3: (False, "YX"), 4: (False, "Y"), 5: (True, "")}
_ORIENTATIONS |= {6: (True, "X"), 7: (True, "YX"), 8: (True, "Y")}


def _open_tiff(path: Path, *, chunked: bool) -> InputImage:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ImageIOError(f"cannot read image {path}: the TIFF holds no images")
            shapes = [tuple(series.shape) for series in tif.series]
            series = tif.series[0]
            page = series.keyframe
            shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes
            photometric = tifffile.PHOTOMETRIC(page.photometric)
            extrasamples = tuple(page.extrasamples)
            bits = page.bitspersample
            jpeg = page.compression == tifffile.COMPRESSION.JPEG
            orientation = page.tags.valueof(274, 1)
    except ImageIOError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    if len(shapes) > 1:
        raise ImageIOError(
            f"cannot read {path}: it holds {len(shapes)} images of different shapes "
            f"{', '.join(map(str, shapes))}; save them as separate files"
        )
    associated = tifffile.EXTRASAMPLE.ASSOCALPHA in extrasamples
    plain = photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
    if (
        not (plain or (photometric == tifffile.PHOTOMETRIC.YCBCR and jpeg))
        or bits == 1
        or associated
    ):
        # Bilevel, MinIsWhite, palette, CMYK, uncompressed YCbCr, Lab and premultiplied
        # alpha: tifffile returns the stored samples, Pillow converts them to what
        # viewers show.
        return _open_pillow(path, tiff={"photometric": photometric.name, "bits": bits})

    samples = axes.index("S") if "S" in axes else None
    if samples is not None:
        channel_axis = samples - len(shape)
    elif len(shape) >= 3 and shape[-1] in (3, 4):
        channel_axis = -1
    else:
        channel_axis = None
    alpha = samples is not None and extrasamples[-1:] == (tifffile.EXTRASAMPLE.UNASSALPHA,)
    orient = _ORIENTATIONS.get(orientation)
    if orient and orient[0]:
        y, x = axes.index("Y"), axes.index("X")
        shape = tuple(
            shape[x] if i == y else shape[y] if i == x else n for i, n in enumerate(shape)
        )
    nbytes = math.prod(shape) * dtype.itemsize
    return InputImage(
        path,
        "tiff",
        shape,
        dtype.newbyteorder("="),
        lazy=chunked or nbytes > LAZY_TIFF_BYTES,
        channel_axis=channel_axis,
        alpha=alpha,
        read=lambda source: _read_tiff(source, axes, orient),
    )


def _read_tiff(source: InputImage, axes: str, orient):
    import tifffile

    if source.lazy:
        import dask.array as da

        _require_zarr("reading a TIFF chunk by chunk")
        store = tifffile.imread(source.path, aszarr=True, level=0)
        source._closers.append(store)
        array = da.from_zarr(store)
    else:
        array = tifffile.imread(source.path, series=0, level=0)
    if orient:
        swap, flips = orient
        y, x = axes.index("Y"), axes.index("X")
        xp = da if source.lazy else np
        if swap:
            array = xp.swapaxes(array, y, x)
        for name in flips:
            array = xp.flip(array, axis=y if name == "Y" else x)
    if source.lazy:
        # TIFF strips are often a few rows each: bands of whole rows instead.
        array = array.rechunk(band_chunks(array.shape, array.dtype.itemsize, source.channel_axis))
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
    return InputImage(
        path,
        "zarr",
        shape,
        np.dtype(node.dtype).newbyteorder("="),
        lazy=True,
        channel_axis=-1 if len(shape) >= 3 and shape[-1] in (3, 4) else None,
        alpha=None,
        # The store's own chunks: the outputs are written with them, and memory stays
        # that of the Python API on the same array.
        read=lambda source: _dask().from_zarr(str(source.path)),
    )


def _dask():
    import dask.array as da

    return da


def band_chunks(shape: tuple[int, ...], itemsize: int, channel_axis: int | None) -> tuple[int, ...]:
    """Chunk shape of about :data:`CHUNK_BYTES` made of whole image rows.

    The last two non-channel axes are Y and X; earlier axes (Z, T, ...) are pages.  A
    chunk holds several whole pages when a page is small, else one band of Y rows (a
    multiple of 256 rows, or of 16 for very wide images: TIFF tiles must not straddle
    two bands) across the whole width, with all channels.
    """
    ndim = len(shape)
    channel = None if channel_axis is None else channel_axis % ndim
    spatial = [axis for axis in range(ndim) if axis != channel]
    chunks = list(shape)
    y_axis, leading = spatial[-2], spatial[:-2]
    for axis in leading:
        chunks[axis] = 1
    row_bytes = itemsize * math.prod(
        size for axis, size in enumerate(shape) if axis not in leading and axis != y_axis
    )
    page_bytes = row_bytes * shape[y_axis]
    if page_bytes <= CHUNK_BYTES:
        if leading:
            pages = max(1, CHUNK_BYTES // max(page_bytes, 1))
            chunks[leading[-1]] = min(shape[leading[-1]], pages)
    else:
        rows = CHUNK_BYTES // row_bytes
        # Multiples of 256 rows allow 256-row TIFF tiles (which compress better).
        rows = rows // 256 * 256 if rows >= 256 else max(16, rows // 16 * 16)
        chunks[y_axis] = min(rows, shape[y_axis])
    return tuple(chunks)


# --------------------------------------------------------------------------------------
# Checking what a format can hold
# --------------------------------------------------------------------------------------


def output_format(path: str | os.PathLike) -> str:
    """Return the format name ("png", "jpeg", "tiff", "zarr", "npy") for an output path.

    Raises
    ------
    ImageIOError
        The suffix is not one we can write.
    """
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS_BY_SUFFIX[suffix]
    except KeyError:
        known = ", ".join(sorted(FORMATS_BY_SUFFIX))
        raise ImageIOError(
            f"cannot write {path}: unknown output format {suffix or '(no suffix)'!r} "
            f"(use one of {known})"
        ) from None


def check_writable(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    dtype: np.dtype,
    channel_axis: int | None,
    alpha: bool | None = None,
) -> None:
    """Raise :class:`ImageIOError` if ``path``'s format cannot hold such an array.

    Called before any work so that a batch fails at once, not after an hour.  ``alpha``
    says whether the last channel is alpha (None: 4 channels on the last axis are RGBA).
    """
    fmt = output_format(path)
    dtype = np.dtype(dtype)
    if fmt not in ("png", "jpeg"):
        return  # TIFF, zarr and npy hold any numeric array, frames included
    name = "PNG" if fmt == "png" else "JPEG"
    ndim = len(shape)
    spatial = [
        size
        for axis, size in enumerate(shape)
        if channel_axis is None or axis != channel_axis % ndim
    ]
    channels = 1 if channel_axis is None else shape[channel_axis]
    if len(spatial) > 2:
        n_images = math.prod(spatial[:-2])
        raise ImageIOError(
            f"cannot write {path}: the image has {n_images} frames (shape {shape}) and "
            f"{name} holds one; write .tif, .zarr or .npy to keep every frame"
        )
    if channel_axis is not None and channel_axis % ndim != ndim - 1:
        raise ImageIOError(
            f"cannot write {path}: {name} needs colour channels on the last axis; "
            "write .tif or .zarr instead"
        )
    if alpha is None:
        alpha = channels == 4
    allowed = {(1, False), (3, False)} | ({(2, True), (4, True)} if fmt == "png" else set())
    if (channels, bool(alpha)) not in allowed:
        what = f"{channels} channels" + (" with alpha" if alpha else "")
        raise ImageIOError(
            f"cannot write {path}: {name} cannot hold {what}; write .tif or .zarr instead"
        )
    allowed_dtypes = ("uint8",) if fmt == "jpeg" else ("uint8", "uint16")
    if dtype.name not in allowed_dtypes:
        raise ImageIOError(
            f"cannot write {path}: {name} cannot hold {dtype.name} pixels without "
            "changing them; write .tif or .zarr instead"
        )


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it to ``path`` if the block succeeds.

    Parameters
    ----------
    path : str or path-like
        Final destination (file or ``.zarr`` directory).
    overwrite : bool
        Replace an existing destination.  Without it an existing destination raises
        :class:`ImageIOError` (checked again here because another process may have
        created the file since the batch was planned).
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
) -> None:
    """Write an in-memory array to ``path`` (already a temporary path) as ``fmt``.

    Parameters
    ----------
    path : pathlib.Path
        Where to write; the suffix is ignored, ``fmt`` decides.
    array : numpy.ndarray
        The pixels, written with their dtype unchanged.
    fmt : str
        One of the values of :data:`FORMATS_BY_SUFFIX`.
    channel_axis : int or None
        Colour axis of ``array`` (None: intensity image).  Decides the TIFF layout.
    alpha : bool or None
        Whether the last channel is alpha (None: 4 channels on the last axis are RGBA).
        Tagged as such in TIFF (``extrasamples``); in PNG alpha is 2 or 4 channels.
    labels, colors : numpy.ndarray, optional
        The quantisation (``array == colors[labels]`` on the colour channels).  With
        them a PNG of at most 256 colours is written indexed without searching for its
        colours again.
    indexed : bool
        Allow an indexed PNG.  False writes plain greyscale/RGB(A) PNGs.
    optimize : bool
        Pillow's ``optimize=True`` for PNG: a few per cent smaller, several times slower.
    """
    if fmt == "png":
        _write_png(path, array, labels=labels, colors=colors, indexed=indexed, optimize=optimize)
    elif fmt == "jpeg":
        from PIL import Image

        Image.fromarray(array).save(path, format="JPEG", quality=95)
    elif fmt == "tiff":
        import tifffile

        layout = _tiff_layout(array.shape, array.dtype, channel_axis, alpha)
        tifffile.imwrite(path, array, compression="zlib", **layout)
    elif fmt == "npy":
        with open(path, "wb") as handle:  # np.save(path) would append ".npy"
            np.save(handle, array)
    elif fmt == "zarr":
        target = create_lazy_target(path, fmt, array.shape, array.dtype, None, channel_axis)
        target[...] = array
    else:  # pragma: no cover - output_format() rejects unknown formats first
        raise ImageIOError(f"cannot write {fmt}")


def create_lazy_target(
    path: Path,
    fmt: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunks: tuple[int, ...] | None,
    channel_axis: int | None,
    alpha: bool | None = None,
):
    """Create an empty on-disk array that ``dask.array.store`` can fill chunk by chunk.

    ``zarr`` gives a chunked zarr array (chunks aligned with the dask chunks, so
    parallel writes never share a chunk); ``tiff`` gives an uncompressed, memory-mapped
    TIFF, which is the one TIFF layout that can be written in random order (used for
    layouts :func:`write_tiff_from_dask` does not handle, e.g. planar RGB).
    """
    if fmt == "zarr":
        zarr = _require_zarr("writing .zarr output")
        return zarr.open_array(
            str(path), mode="w", shape=shape, dtype=dtype, chunks=chunks or shape
        )
    if fmt == "tiff":
        import tifffile

        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        return tifffile.memmap(
            path,
            shape=shape,
            dtype=dtype,
            bigtiff=nbytes > 2**31,  # classic TIFF offsets stop at 4 GB
            **_tiff_layout(shape, dtype, channel_axis, alpha),
        )
    raise ImageIOError(f"cannot write {fmt} chunk by chunk")  # pragma: no cover


def can_stream_tiff(ndim: int, channel_axis: int | None) -> bool:
    """Whether :func:`write_tiff_from_dask` handles this layout (channels last or none)."""
    return channel_axis is None or channel_axis % ndim == ndim - 1


def write_tiff_from_dask(
    path: Path, array, channel_axis: int | None, alpha: bool | None = None, *, progress=None
) -> None:
    """Write a dask array as a compressed, tiled TIFF, one band of rows at a time.

    Only one chunk (:data:`CHUNK_BYTES`) is in memory at once.  Tiles must reach
    tifffile in order (page by page, row of tiles by row of tiles), so the array is
    chunked in bands of whole rows (:func:`band_chunks`) and the bands are computed one
    after the other.

    Parameters
    ----------
    path : pathlib.Path
        Destination (a temporary path; see :func:`atomic_output`).
    array : dask.array.Array
        Pixels; its dtype is kept.
    channel_axis : int or None
        Must be None or the last axis (see :func:`can_stream_tiff`).
    alpha : bool or None
        Whether the last channel is alpha (as in :func:`write_array`).
    progress : callable, optional
        ``progress(fraction)`` after each band.
    """
    import tifffile

    ndim = array.ndim
    y_axis = ndim - 2 - (channel_axis is not None)
    array = array.rechunk(band_chunks(array.shape, array.dtype.itemsize, channel_axis))
    band_rows = array.chunks[y_axis][0]
    if band_rows < array.shape[y_axis]:  # tiles must not straddle two bands
        tile_rows = next(rows for rows in (256, 128, 64, 32, 16) if band_rows % rows == 0)
    else:
        tile_rows = 256
    tile_columns = 256
    n_blocks = math.prod(array.numblocks)

    def tiles():
        # numblocks is 1 along X and channels, and Y is whole when a block holds several
        # pages, so C order over the blocks is the TIFF's tile order.
        for number, index in enumerate(np.ndindex(*array.numblocks), start=1):
            block = np.asarray(array.blocks[index].compute())
            for page in np.ndindex(*block.shape[:y_axis]):
                rows = block[page]
                for top in range(0, rows.shape[0], tile_rows):
                    for left in range(0, rows.shape[1], tile_columns):
                        yield rows[top : top + tile_rows, left : left + tile_columns]
            if progress is not None:
                progress(number / n_blocks)

    nbytes = math.prod(array.shape) * array.dtype.itemsize
    tifffile.imwrite(
        path,
        tiles(),
        shape=array.shape,
        dtype=array.dtype,
        tile=(tile_rows, tile_columns),
        compression="zlib",
        bigtiff=nbytes > 2**31,  # the compressed size is unknown in advance
        **_tiff_layout(array.shape, array.dtype, channel_axis, alpha),
    )


def _tiff_layout(
    shape: tuple[int, ...], dtype: np.dtype, channel_axis: int | None, alpha: bool | None
) -> dict:
    """Photometric interpretation, planar layout and alpha tag that round-trip ``shape``."""
    ndim = len(shape)
    if channel_axis is None:
        return {"photometric": "minisblack"}
    axis = channel_axis % ndim
    channels = shape[axis]
    if alpha is None:
        alpha = channels == 4 and axis == ndim - 1
    rgb = channels - alpha == 3 and np.dtype(dtype).name in ("uint8", "uint16")
    layout: dict[str, Any] = {"photometric": "rgb" if rgb else "minisblack"}
    if axis == ndim - 1:
        layout["planarconfig"] = "contig"
    elif axis == ndim - 3:
        layout["planarconfig"] = "separate"
    extra = channels - (3 if rgb else 1)
    if extra > 0:
        layout["extrasamples"] = ("unspecified",) * (extra - alpha) + ("unassalpha",) * alpha
    return layout


def _write_png(path, array, *, labels, colors, indexed, optimize) -> None:
    from PIL import Image

    if array.dtype == np.uint8 and indexed:
        paletted = _to_paletted(array, labels, colors)
        if paletted is not None:
            index, palette_rgb, alpha = paletted
            image = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
            image.putpalette(palette_rgb.reshape(-1).tolist())
            options = {} if alpha is None else {"transparency": alpha.tobytes()}
            image.save(path, format="PNG", optimize=optimize, **options)
            return
    if array.dtype == np.uint16 and array.ndim == 3 and array.shape[-1] != 1:
        try:
            import imagecodecs
        except ImportError:
            raise ImageIOError(
                f"writing a 16-bit colour PNG needs 'imagecodecs' (pip install imagecodecs); "
                f"or write .tif instead of {path.name}"
            ) from None
        path.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(array)))
        return
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", optimize=optimize)


def _to_paletted(array, labels, colors):
    """Return ``(index, palette_rgb, alpha)`` for an indexed PNG, or None if impossible.

    ``index`` is a 2-D uint8 array, ``palette_rgb`` an (n, 3) uint8 array and ``alpha``
    None or an (n,) uint8 array (the PNG tRNS chunk).  Uses the quantisation labels when
    given (no search); otherwise finds the distinct colours itself.  Every pixel with
    alpha 0 gets the one transparent entry, whatever colour it hides.
    """
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[-1]
    if channels not in (1, 2, 3, 4):
        return None
    n_colour = 3 if channels >= 3 else 1
    alpha = array[..., n_colour] if channels in (2, 4) else None

    if labels is not None and colors is not None and labels.shape == array.shape[:2]:
        codes = np.asarray(labels, dtype=np.int64)
        palette = np.asarray(colors)[:, :n_colour]
    else:
        rows, codes = np.unique(
            array[..., :n_colour].reshape(-1, n_colour), axis=0, return_inverse=True
        )
        codes = codes.reshape(array.shape[:2])
        palette = rows
    if alpha is not None:
        # One colour can appear with several alpha values (alpha is the input's): every
        # visible (colour, alpha) pair needs its own entry, all invisible pixels one.
        codes = np.where(alpha == 0, -1, codes * 256 + alpha)
    keys, index = np.unique(codes, return_inverse=True)
    if len(keys) > 256:
        return None
    index = index.reshape(codes.shape)
    if alpha is None:
        palette_colour, palette_alpha = palette[keys], None
    else:
        visible = np.maximum(keys, 0)
        palette_colour = np.where((keys < 0)[:, None], 0, palette[visible // 256])
        palette_alpha = np.where(keys < 0, 0, visible % 256).astype(np.uint8)
    palette_colour = np.asarray(palette_colour, dtype=np.uint8)
    if n_colour == 1:
        palette_colour = np.repeat(palette_colour, 3, axis=-1)
    return index.astype(np.uint8), palette_colour, palette_alpha


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _require_zarr(purpose: str):
    try:
        import zarr
    except ImportError:
        raise ImageIOError(f"{purpose} needs the 'zarr' package (pip install zarr)") from None
    return zarr


def _describe(exc: BaseException) -> str:
    """One-line description of an exception from a reader or writer."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
