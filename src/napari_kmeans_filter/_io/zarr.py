"""zarr arrays and OME-Zarr images read lazily by dask, several storage chunks per task.

A ``.zarr`` array is read as it is; an OME-Zarr image group (OME-NGFF 0.4 on zarr v2,
0.5 on zarr v3) at full resolution, with its axes (``c`` the channel axis; ``t`` and
``z`` stay leading axes, pooled into one palette).  Each dask task reads a block of
whole storage chunks (:func:`napari_kmeans_filter._tasks.task_chunks`) in one zarr call,
and :class:`InputImage` records the storage chunks and zarr format for the outputs.
Read errors name the file they come from.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import _tasks
from .errors import ImageIOError, _describe, _require_zarr
from .source import LENGTH_UNITS, InputImage


def _open_zarr(path: Path) -> InputImage:
    zarr = _require_zarr("reading .zarr input")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise ImageIOError(f"cannot read zarr {path}: {_describe(exc)}") from exc
    if not hasattr(node, "shape"):
        from .. import _omezarr

        if _omezarr.is_ome_zarr(path):
            return _open_ome_zarr(path)
        names = sorted(name for name, _ in node.arrays())
        hint = f"; pass one of its arrays, e.g. {path / names[0]}" if names else ""
        raise ImageIOError(f"{path} is a zarr group, not an array or an OME-Zarr image{hint}")
    shape = tuple(node.shape)

    def read(source: InputImage):
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
        storage_chunks=tuple(int(c) for c in node.chunks),
        zarr_format=_zarr_format(node),
    )


def _zarr_format(node) -> int:
    """2 or 3: the zarr format of an array or group (zarr-python 2 knows only 2)."""
    return int(getattr(getattr(node, "metadata", None), "zarr_format", 2))


def _open_ome_zarr(path: Path) -> InputImage:
    """An OME-Zarr image group: its full-resolution level, with its axes.

    The channel axis is the axis of type ``channel`` (none: an intensity image); OME-NGFF
    has no alpha, so four channels are four channels.  ``t`` and ``z`` stay leading
    axes: the core pools every time point and plane into one palette.
    """
    from .. import _omezarr

    zarr = _require_zarr("reading OME-Zarr input")
    try:
        image = _omezarr.read_image(path)
        level = _level_path(image, 0)
        full = zarr.open_array(level, mode="r")
    except _omezarr.OmeZarrError as exc:
        raise ImageIOError(f"cannot read OME-Zarr image {path}: {exc}") from exc
    except Exception as exc:
        raise ImageIOError(f"cannot read OME-Zarr image {path}: {_describe(exc)}") from exc
    shape = tuple(int(n) for n in full.shape)
    channel = image.channel_axis

    def read(source: InputImage):
        return _lazy_array(zarr.open_array(level, mode="r"), source.path, level)

    return InputImage(
        path,
        "ome-zarr",
        shape,
        np.dtype(full.dtype).newbyteorder("="),
        lazy=True,
        channel_axis=None if channel is None else channel - len(shape),
        alpha=False if channel is not None else None,
        read=read,
        axes=image.axis_names,
        storage_chunks=tuple(int(c) for c in full.chunks),
        zarr_format=image.zarr_format,
        ome_zarr=image,
        pixel_sizes=_ome_zarr_pixel_sizes(image),
    )


def _ome_zarr_pixel_sizes(image) -> dict[str, tuple[float, str]] | None:
    """The physical pixel size of an OME-Zarr image's full resolution along x, y and z:
    its ``scale`` (the dataset's times the multiscale's, OME-NGFF #trafo-md) in the unit
    of its axis, for the axes with a length unit (TIFF outputs keep them)."""
    scale = image.scales()[0]
    for transform in image.multiscale.get("coordinateTransformations") or ():
        if transform.get("type") == "scale" and scale is not None:
            scale = [a * float(b) for a, b in zip(scale, transform["scale"], strict=True)]
    if scale is None:
        return None
    sizes = {}
    for axis, value in zip(image.axes, scale, strict=True):
        name, unit = str(axis["name"]).upper(), LENGTH_UNITS.get(str(axis.get("unit")))
        if name in ("X", "Y", "Z") and unit and value > 0:
            sizes[name] = (value, unit)
    return sizes or None


def _level_path(image, index: int) -> str:
    """Where pyramid level ``index`` of an OME-Zarr image is stored."""
    return f"{image.path.rstrip('/')}/{image.datasets[index]['path']}"


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
    """A dask array over a zarr array, read errors naming ``path``.

    Each task reads a block of whole storage chunks in one zarr call
    (:func:`napari_kmeans_filter._tasks.task_chunks`): with one task per storage chunk,
    256 x 256 chunks read at a third of the speed of 2048 x 2048 ones (issue 19).
    """
    import dask.array as da
    from dask.base import tokenize

    shape, storage = tuple(array.shape), tuple(array.chunks)
    chunks = _tasks.task_chunks(shape, storage, np.dtype(array.dtype).itemsize)
    stat = os.stat(path)  # a name that changes when the file does
    return da.from_array(
        _NamedErrors(array, path),
        chunks=chunks,
        name="read-" + tokenize(str(path), part, stat.st_mtime_ns, stat.st_size, chunks),
        asarray=True,
        fancy=False,
        meta=np.empty((0,) * array.ndim, array.dtype),
    )
