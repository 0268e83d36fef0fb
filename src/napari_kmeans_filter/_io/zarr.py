"""zarr arrays read lazily by dask, read errors naming the file they come from."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ImageIOError, _describe, _require_zarr
from .source import InputImage


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
