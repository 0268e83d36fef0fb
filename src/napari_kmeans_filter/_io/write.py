"""Writing outputs: the format by suffix, checks before any work, atomic replacement, and
arrays written in every format.

Writing keeps the dtype; an 8-bit PNG of at most 256 (colour, alpha) pairs is written
indexed, with one transparent entry for every fully transparent pixel.  Every output is
written under a temporary name beside its destination and renamed into place when
complete.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .._files import move_into_place, remove_output
from .errors import ImageIOError, _require_zarr
from .png import write_png
from .source import InputImage, resolution_in
from .tiff import _resolution_tags, _tiff_layout, write_tiff

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
    remove_output(temporary, writers=False)  # left by an earlier process of this pid
    try:
        yield temporary
        move_into_place(temporary, path)  # an old .zarr directory is put back on failure
    finally:
        # Unfinished: removed until the threads still writing its chunks have stopped.
        remove_output(temporary)


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
    axes: tuple[str, ...] | None = None,
    imagej: dict | None = None,
    pixel_sizes: dict | None = None,
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
    axes, imagej, pixel_sizes : optional
        The names of the array's axes, the input's ImageJ metadata and its pixels'
        physical size (:func:`output_metadata` gives all three): a TIFF is then written
        as an ImageJ hyperstack (ImageJ input) or an OME-TIFF with those axes and pixel
        sizes when the format can hold them (:func:`.tiff.write_tiff`), else as a plain
        TIFF with the sizes as its resolution; a PNG or JPEG holds them as its
        resolution (pHYs, JFIF density) in pixels per inch.
    """
    from PIL import Image

    profile = {"icc_profile": icc_profile} if icc_profile else {}
    dpi = _dpi(pixel_sizes, fmt)
    if fmt == "png":
        write_png(
            path,
            array,
            labels=labels,
            colors=colors,
            indexed=indexed,
            optimize=optimize,
            icc_profile=icc_profile,
            dpi=dpi,
        )
    elif fmt == "jpeg":
        density = {"dpi": dpi} if dpi else {}
        Image.fromarray(array).save(path, format="JPEG", quality=95, **profile, **density)
    elif fmt == "tiff":
        write_tiff(
            path,
            array,
            channel_axis,
            alpha,
            icc_profile=icc_profile,
            axes=axes,
            imagej=imagej,
            pixel_sizes=pixel_sizes,
        )
    elif fmt == "npy":
        with open(path, "wb") as handle:  # np.save(path) would append ".npy"
            np.save(handle, array)
    else:
        create_lazy_target(path, fmt, array.shape, array.dtype, None, channel_axis)[...] = array


def create_lazy_target(
    path,
    fmt,
    shape,
    dtype,
    chunks,
    channel_axis,
    alpha=None,
    *,
    icc_profile=None,
    zarr_format=None,
    pixel_sizes=None,
):
    """An empty on-disk array that ``dask.array.store`` can fill chunk by chunk.

    ``zarr``: a zarr array with the given storage ``chunks``, in ``zarr_format`` (2 or
    3; None: zarr's default, 3) -- pass the input's (:attr:`InputImage.zarr_format`) so
    that a v2 input gives v2 outputs, which older readers open.  Fill it with dask tasks
    of whole storage chunks (``_tasks.align(array, chunks)``): then no two tasks write
    one chunk.  ``tiff``: an uncompressed, memory-mapped TIFF, the one TIFF that can be
    written in any order (for the layouts :func:`write_tiff_from_dask` cannot stream,
    e.g. planar RGB), with ``icc_profile`` and ``pixel_sizes`` as its resolution.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if fmt == "zarr":
        zarr = _require_zarr("writing .zarr output")
        version = {}
        if zarr_format == 2:
            # "/" between chunk indices, as OME-NGFF 0.4 and most v2 readers expect.
            version = {"zarr_format": 2, "dimension_separator": "/"}
        elif zarr_format is not None:
            version = {"zarr_format": zarr_format}
        return zarr.open_array(
            str(path), mode="w", shape=shape, dtype=dtype, chunks=chunks or shape, **version
        )
    import tifffile

    layout = _tiff_layout(shape, dtype, channel_axis, alpha) | _resolution_tags(pixel_sizes)
    return tifffile.memmap(
        path,
        shape=shape,
        dtype=dtype,
        bigtiff=nbytes > 2**31,
        iccprofile=icc_profile or None,
        **layout,
    )


def zarr_output_chunks(
    source: InputImage, shape: tuple[int, ...], channel_axis: int | None
) -> tuple[int, ...] | None:
    """The storage chunks of a zarr output of ``shape`` made from ``source``: the input's.

    The image keeps the input's storage chunks; the labels (one axis fewer: the channel
    axis ``channel_axis`` of the input, as the core normalised it) keep them less that
    axis.  None when the input is not zarr or the shapes do not follow from it.
    """
    chunks = source.storage_chunks
    if chunks is None:
        return None
    shape = tuple(shape)
    if shape == tuple(source.shape):
        return tuple(chunks)
    if channel_axis is not None and len(shape) == len(chunks) - 1:
        axis = channel_axis % len(chunks)
        kept = tuple(c for i, c in enumerate(chunks) if i != axis)
        if shape == tuple(n for i, n in enumerate(source.shape) if i != axis):
            return kept
    return None


def output_axes(
    source: InputImage, shape: tuple[int, ...], channel_axis: int | None
) -> tuple[str, ...] | None:
    """The axis names of an output of ``shape`` made from ``source`` (None: unnamed).

    The image keeps the input's axes (:attr:`InputImage.axes`, e.g. T, Z, C, Y, X); the
    labels lose the channel axis ``channel_axis`` the palette replaces (T, Z, Y, X).
    """
    axes = source.axes
    if axes is None:
        return None
    shape = tuple(shape)
    if shape == tuple(source.shape):
        return tuple(axes)
    if channel_axis is not None and len(shape) == len(axes) - 1:
        axis = channel_axis % len(axes)
        if shape == tuple(n for i, n in enumerate(source.shape) if i != axis):
            return tuple(name for i, name in enumerate(axes) if i != axis)
    return None


def _dpi(pixel_sizes, fmt: str) -> tuple[float, float] | None:
    """A PNG's or JPEG's resolution (pixels per inch along X and Y) from ``pixel_sizes``,
    when the format can hold it: a PNG's pHYs holds whole pixels per metre in 32 bits, a
    JPEG's density whole pixels per inch in 16."""
    if fmt not in ("png", "jpeg"):
        return None
    stored, limit = ("m", 2**32) if fmt == "png" else ("in", 2**16)
    steps = resolution_in(pixel_sizes, stored)
    if steps is None or not all(1 <= round(value) < limit for value in steps):
        return None
    return resolution_in(pixel_sizes, "in")


def output_metadata(
    source: InputImage, shape: tuple[int, ...], channel_axis: int | None
) -> dict[str, object]:
    """What an output of ``shape`` made from ``source`` keeps of the input's metadata.

    The keywords ``axes`` (:func:`output_axes`), ``imagej`` (:attr:`InputImage.imagej`)
    and ``pixel_sizes`` (:attr:`InputImage.pixel_sizes`) of :func:`write_array`,
    :func:`.tiff.write_tiff_from_dask` and (``axes``) :func:`.tiff.can_stream_tiff`:
    an ImageJ hyperstack or OME-TIFF input gives hyperstacks or OME-TIFFs with its axes
    and calibration, the image and its labels alike.  An input that names no axes gives
    its pixel sizes only (a picture's resolution, kept by PNG, JPEG and plain TIFF
    outputs); so does one whose axes ``shape`` does not follow from.
    """
    axes = output_axes(source, shape, channel_axis)
    if axes is None:
        sizes = getattr(source, "pixel_sizes", None)
        return {"pixel_sizes": sizes} if sizes else {}
    return {
        "axes": axes,
        "imagej": getattr(source, "imagej", None),
        "pixel_sizes": getattr(source, "pixel_sizes", None),
    }


#: The output formats that hold an ICC profile and a pixel size (resolution).
_PICTURE_FORMATS = ("png", "jpeg", "tiff")


def pixel_size_note(path: str | os.PathLike, pixel_sizes) -> str | None:
    """A line for the user when ``path``'s format cannot hold the input's pixel size (a
    plain .zarr, npy), else None."""
    if not pixel_sizes or output_format(path) in _PICTURE_FORMATS:
        return None
    return (
        f"{path} keeps the pixel values but not the input's pixel size (resolution): "
        f"{output_format(path)} cannot hold one"
    )


def icc_profile_note(path: str | os.PathLike, icc_profile: bytes | None) -> str | None:
    """A line for the user when ``path``'s format cannot hold the input's ICC profile
    (npy, zarr), else None: the numbers are written, the colour management is not."""
    if not icc_profile or output_format(path) in _PICTURE_FORMATS:
        return None
    return (
        f"{path} keeps the pixel values but not the input's ICC colour profile "
        f"({output_format(path)} cannot hold one): colour-managed viewers may show other colours"
    )
