"""Reading and writing images for the command line (no napari, no Qt).

Formats
-------
* PNG, JPEG, BMP, GIF, WebP ... through Pillow.  16-bit colour PNG goes through
  ``imagecodecs`` because Pillow reduces it to 8 bits.
* TIFF through ``tifffile``: any dtype, any number of channels, stacks.  A TIFF larger
  than :data:`LAZY_TIFF_BYTES` (or any TIFF when ``chunked=True``) is opened as a
  tifffile zarr store and wrapped in a dask array, so it is processed chunk by chunk.
* ``.zarr`` directories through ``dask.array.from_zarr`` (always lazy).

Writing keeps the dtype.  A PNG of at most 256 distinct colours is written as an
indexed (palette, mode ``"P"``) image, which is what makes a quantised PNG small.
Every output is written to a temporary name beside its destination and renamed into
place at the end, so an interrupted run never leaves half a file behind and an
existing file is only replaced by a complete one.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: TIFF files whose pixel data would take more than this many bytes in memory are read
#: lazily (chunk by chunk) even without ``--chunked``.  A fixed number rather than a
#: fraction of the machine's memory, so the behaviour is the same everywhere.
LAZY_TIFF_BYTES = 1 << 30

#: Size aimed at for one chunk of a lazily processed image.
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

#: Suffixes Pillow reads that we accept as input (besides TIFF and zarr).
PILLOW_INPUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}

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
        Shape of the array :meth:`load` returns.
    dtype : numpy.dtype
        Its dtype.
    lazy : bool
        Whether :meth:`load` returns a dask array (processed chunk by chunk).
    samples_axis : int or None
        Axis that the file itself declares as colour samples (TIFF ``S`` axis), if any.
    """

    path: Path
    kind: str
    shape: tuple[int, ...]
    dtype: np.dtype
    lazy: bool
    samples_axis: int | None = None
    _closers: list[Any] = field(default_factory=list, repr=False)

    def default_channel_axis(self) -> int | None:
        """Guess the colour-channel axis, or None for an intensity image.

        A TIFF that declares a samples axis uses it; otherwise the last axis holds
        colour when it has length 3 or 4 (RGB / RGBA) and the array has more than two
        dimensions.  Everything else is treated as intensities.
        """
        if self.samples_axis is not None:
            return self.samples_axis - len(self.shape)  # negative: robust to reshapes
        if len(self.shape) >= 3 and self.shape[-1] in (3, 4):
            return -1
        return None

    def load(self):
        """Return the pixels: a numpy array, or a dask array when :attr:`lazy`."""
        try:
            if self.kind == "pillow":
                return _read_pillow(self.path)
            if self.kind == "tiff":
                return self._load_tiff()
            return self._load_zarr()
        except ImageIOError:
            raise
        except MemoryError:
            raise ImageIOError(
                f"not enough memory to read {self.path}; try --chunked (TIFF) or a .zarr input"
            ) from None
        except Exception as exc:  # readers raise many types for corrupt data
            raise ImageIOError(f"cannot read image {self.path}: {_describe(exc)}") from exc

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

    def _load_tiff(self):
        import tifffile

        if not self.lazy:
            return tifffile.imread(self.path)
        import dask.array as da

        _require_zarr("reading a TIFF chunk by chunk")
        store = tifffile.imread(self.path, aszarr=True, level=0)
        self._closers.append(store)
        return _rechunk_for_processing(da.from_zarr(store), self.default_channel_axis())

    def _load_zarr(self):
        import dask.array as da

        return _rechunk_for_processing(da.from_zarr(str(self.path)), self.default_channel_axis())


def open_image(path: str | os.PathLike, *, chunked: bool = False) -> InputImage:
    """Open ``path`` and read its header (shape and dtype), but not its pixels.

    Parameters
    ----------
    path : str or path-like
        An image file or a ``.zarr`` directory.
    chunked : bool
        Read a TIFF lazily even when it would fit in memory.  ``.zarr`` input is always
        lazy; other formats are always read whole (they cannot be read in pieces).

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


def _open_pillow(path: Path) -> InputImage:
    """Read the header only: a batch of many photos must not sit in memory at once."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            shape, dtype = _pillow_header_shape(image, path)
    except UnidentifiedImageError:
        raise ImageIOError(f"cannot read image {path}: not a recognised image format") from None
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    return InputImage(path, "pillow", shape, dtype, lazy=False)


def _pillow_header_shape(image, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype that :func:`_pillow_to_array` will return, from the header.

    Only used to check outputs before the pixels are read; an indexed image with a grey
    palette is counted as RGB here although it loads as greyscale (both fit any format).
    """
    width, height = image.size
    mode = image.mode
    if image.format == "PNG" and _png_is_16bit_colour(path):
        channels = 3 if mode == "RGB" else 4
        return (height, width, channels), np.dtype(np.uint16)
    if mode in ("1", "L"):
        return (height, width), np.dtype(np.uint8)
    if mode.startswith("I;16"):
        return (height, width), np.dtype(np.uint16)
    if mode in ("I", "F"):
        return (height, width), np.dtype(np.int32 if mode == "I" else np.float32)
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
        mode == "P" and "transparency" in image.info
    )
    return (height, width, 4 if has_alpha else 3), np.dtype(np.uint8)


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return _pillow_to_array(image, path)


def _pillow_to_array(image, path: Path) -> np.ndarray:
    """Convert a Pillow image to the array a user would expect, keeping bit depth."""
    from PIL import ImageOps

    if image.format == "PNG" and _png_is_16bit_colour(path):
        return _read_png_with_imagecodecs(path)
    # Show the pixels the way every viewer does (camera JPEGs are often stored rotated).
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        has_alpha = "transparency" in image.info
        if not has_alpha and _palette_is_grey(image):
            # An indexed PNG with only grey entries is a greyscale image (this is how
            # the CLI itself writes quantised greyscale images).
            return np.asarray(image.convert("L"))
        return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    if mode in ("1", "L"):
        return np.asarray(image.convert("L"))
    if mode in ("LA", "La", "PA"):
        return np.asarray(image.convert("RGBA"))
    if mode in ("RGB", "RGBA", "F"):
        return np.asarray(image)
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        array = np.asarray(image)
        if image.format == "PNG" and array.size and array.min() >= 0 and array.max() < 65536:
            return array.astype(np.uint16)  # 16-bit greyscale PNG opened as 32-bit
        return array
    if mode == "RGBa":
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV ...


def _palette_is_grey(image) -> bool:
    """Whether every palette entry the image actually uses is a grey (r == g == b)."""
    rgb = np.asarray(image.getpalette("RGB") or [], dtype=np.int64).reshape(-1, 3)
    used = np.unique(np.asarray(image))
    if len(rgb) == 0 or used.max() >= len(rgb):
        return False
    return bool((rgb[used] == rgb[used, :1]).all())


def _png_is_16bit_colour(path: Path) -> bool:
    """Whether the PNG header says 16 bits per sample with colour or alpha."""
    with open(path, "rb") as handle:
        header = handle.read(29)
    if len(header) < 29 or not header.startswith(_PNG_SIGNATURE):
        return False
    bit_depth, colour_type = struct.unpack(">BB", header[24:26])
    return bit_depth == 16 and colour_type in (2, 4, 6)


def _read_png_with_imagecodecs(path: Path) -> np.ndarray:
    try:
        import imagecodecs
    except ImportError:
        raise ImageIOError(
            f"{path} is a 16-bit colour PNG; reading it without losing bits needs "
            "'imagecodecs' (pip install imagecodecs)"
        ) from None
    array = imagecodecs.png_decode(path.read_bytes())
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha -> RGBA
        array = np.concatenate([array[..., :1]] * 3 + [array[..., 1:]], axis=-1)
    return array


def _open_tiff(path: Path, *, chunked: bool) -> InputImage:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ImageIOError(f"cannot read image {path}: the TIFF holds no images")
            series = tif.series[0]
            shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes
    except ImageIOError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    samples_axis = axes.index("S") if "S" in axes else None
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    lazy = chunked or nbytes > LAZY_TIFF_BYTES
    return InputImage(path, "tiff", shape, dtype, lazy=lazy, samples_axis=samples_axis)


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
    return InputImage(path, "zarr", tuple(node.shape), np.dtype(node.dtype), lazy=True)


def _rechunk_for_processing(array, channel_axis: int | None):
    """Give a lazy array chunks of whole rows (see :func:`band_chunks`).

    TIFF strips are often a few rows each; thousands of tiny chunks make dask slow.  A
    pixel's channels stay in one chunk so that every chunk holds whole colours, and
    whole rows let :func:`write_tiff_from_dask` write the result band by band.
    """
    return array.rechunk(band_chunks(array.shape, array.dtype.itemsize, channel_axis))


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
    path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype, channel_axis: int | None
) -> None:
    """Raise :class:`ImageIOError` if ``path``'s format cannot hold such an array.

    Called before any work so that a batch fails at once, not after an hour.
    """
    fmt = output_format(path)
    dtype = np.dtype(dtype)
    if fmt not in ("png", "jpeg"):
        return  # TIFF, zarr and npy hold any numeric array
    name = "PNG" if fmt == "png" else "JPEG"
    spatial_ndim = len(shape) - (channel_axis is not None)
    channels = 1 if channel_axis is None else shape[channel_axis]
    if spatial_ndim != 2:
        raise ImageIOError(
            f"cannot write {path}: {name} holds one 2-D image but this one has shape "
            f"{shape}; write .tif or .zarr instead"
        )
    if channel_axis is not None and channel_axis % len(shape) != len(shape) - 1:
        raise ImageIOError(
            f"cannot write {path}: {name} needs colour channels on the last axis; "
            "write .tif or .zarr instead"
        )
    allowed_channels = (1, 3) if fmt == "jpeg" else (1, 3, 4)
    if channels not in allowed_channels:
        raise ImageIOError(
            f"cannot write {path}: {name} cannot hold {channels} channels; "
            "write .tif or .zarr instead"
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
    labels: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    indexed: bool = True,
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
    labels, colors : numpy.ndarray, optional
        The quantisation (``array == colors[labels]`` on the colour channels).  With
        them a PNG of at most 256 colours is written indexed without searching for its
        colours again.
    indexed : bool
        Allow an indexed PNG.  False writes plain greyscale/RGB(A) PNGs.
    """
    if fmt == "png":
        _write_png(path, array, labels=labels, colors=colors, indexed=indexed)
    elif fmt == "jpeg":
        from PIL import Image

        Image.fromarray(array).save(path, format="JPEG", quality=95)
    elif fmt == "tiff":
        import tifffile

        tifffile.imwrite(
            path, array, compression="zlib", **_tiff_layout(array.shape, array.dtype, channel_axis)
        )
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

        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return tifffile.memmap(
            path,
            shape=shape,
            dtype=dtype,
            bigtiff=nbytes > 2**31,  # classic TIFF offsets stop at 4 GB
            **_tiff_layout(shape, dtype, channel_axis),
        )
    raise ImageIOError(f"cannot write {fmt} chunk by chunk")  # pragma: no cover


def can_stream_tiff(ndim: int, channel_axis: int | None) -> bool:
    """Whether :func:`write_tiff_from_dask` handles this layout (channels last or none)."""
    return channel_axis is None or channel_axis % ndim == ndim - 1


def write_tiff_from_dask(path: Path, array, channel_axis: int | None, *, progress=None) -> None:
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

    nbytes = int(np.prod(array.shape, dtype=np.int64)) * array.dtype.itemsize
    tifffile.imwrite(
        path,
        tiles(),
        shape=array.shape,
        dtype=array.dtype,
        tile=(tile_rows, tile_columns),
        compression="zlib",
        bigtiff=nbytes > 2**31,  # the compressed size is unknown in advance
        **_tiff_layout(array.shape, array.dtype, channel_axis),
    )


def _tiff_layout(shape: tuple[int, ...], dtype: np.dtype, channel_axis: int | None) -> dict:
    """Photometric interpretation and planar layout that round-trip ``shape`` exactly."""
    ndim = len(shape)
    if channel_axis is None:
        return {"photometric": "minisblack"}
    axis = channel_axis % ndim
    channels = shape[axis]
    rgb = channels in (3, 4) and np.dtype(dtype).name in ("uint8", "uint16")
    layout: dict[str, Any] = {"photometric": "rgb" if rgb else "minisblack"}
    if axis == ndim - 1:
        layout["planarconfig"] = "contig"
    elif axis == ndim - 3:
        layout["planarconfig"] = "separate"
    if rgb and channels == 4:
        layout["extrasamples"] = ("unassalpha",)
    return layout


def _write_png(path, array, *, labels, colors, indexed) -> None:
    from PIL import Image

    if array.dtype == np.uint8 and indexed:
        paletted = _to_paletted(array, labels, colors)
        if paletted is not None:
            index, palette_rgb, alpha = paletted
            image = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
            image.putpalette(palette_rgb.reshape(-1).tolist())
            options = {} if alpha is None else {"transparency": alpha.tobytes()}
            image.save(path, format="PNG", optimize=True, **options)
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
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", optimize=True)


def _to_paletted(array, labels, colors):
    """Return ``(index, palette_rgb, alpha)`` for an indexed PNG, or None if impossible.

    ``index`` is a 2-D uint8 array, ``palette_rgb`` an (n, 3) uint8 array and ``alpha``
    None or an (n,) uint8 array (the PNG tRNS chunk).  Uses the quantisation labels when
    given (no search); otherwise finds the distinct colours itself.
    """
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[-1]
    if channels not in (1, 3, 4):
        return None
    colour = array[..., : 3 if channels >= 3 else 1]
    alpha = array[..., 3] if channels == 4 else None

    if labels is not None and colors is not None and labels.shape == array.shape[:2]:
        labels = np.asarray(labels, dtype=np.int64)
        palette = np.asarray(colors)[:, : colour.shape[-1]]
        if alpha is None:
            if len(palette) > 256:
                return None
            index, palette_colour, palette_alpha = labels, palette, None
        else:
            # Alpha is copied from the input, so one colour can appear with several
            # alpha values: every (colour, alpha) pair needs its own palette entry.
            keys, inverse = np.unique(labels * 256 + alpha, return_inverse=True)
            if len(keys) > 256:
                return None
            index = inverse.reshape(labels.shape)
            palette_colour = palette[keys // 256]
            palette_alpha = (keys % 256).astype(np.uint8)
    else:
        flat = array.reshape(-1, channels)
        rows, inverse = np.unique(flat, axis=0, return_inverse=True)
        if len(rows) > 256:
            return None
        index = inverse.reshape(array.shape[:2])
        palette_colour = rows[:, : colour.shape[-1]]
        palette_alpha = rows[:, 3].astype(np.uint8) if alpha is not None else None

    palette_colour = np.asarray(palette_colour, dtype=np.uint8)
    if palette_colour.shape[-1] == 1:
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
