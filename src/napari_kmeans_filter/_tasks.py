"""Dask task size decoupled from zarr storage chunking: several storage chunks per task.

``dask.array.from_zarr`` makes one task per storage chunk.  Microscopy stores (OME-Zarr
writers, microscope software) use 256²-1024² chunks of 0.2-3 MB, and at that size the
fixed cost of a task (the scheduler's bookkeeping, one zarr call with its own event-loop
round trip and codec set-up, one call of every kernel downstream) is paid a hundred
times per frame.  Zarr-python reads and writes many chunks in one call concurrently, so
a task that covers a block of whole storage chunks costs little more than the bytes it
moves.  This module picks such blocks (about 16 MiB, multiples of the storage chunks, so
that no two tasks ever write the same chunk) and opens, regroups and writes zarr arrays
with them; the storage chunks of what is written stay the caller's.

Measured with ``benchmarks/bench_dask.py`` (issue 19; benchmarks/results/dask_issue19.csv)
on a 0.8 GB RGB stack, k=16, labels stored with the input's chunks, on 2 cores shared with
other work (load 12-16): with one task per storage chunk the four chunkings took 97 s
(256²), 39 s (512²), 36 s (1024x345) and 29 s (2048²), 3.4x apart; with 16 MiB tasks 50,
34, 33 and 32 s, 1.6x apart; zarr-python's own read-twice-write-once I/O with the same
tasks took 31, 19, 14 and 14 s.

References
----------
dask documentation, "Array Best Practices": "Select a good chunk size" (too small chunks
lead to lots of overhead; the page suggests ~100 MB, this module less, for the 700 MB
peak of issue 19) and "Orient your chunks" (dask chunks that are multiples of the storage
chunks).  Zarr-python 3 user guide, "Performance": one read or write of many chunks runs
their I/O concurrently (``async.concurrency``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

# Bytes of input one task reads: 16 MiB is one 2048 x 2048 RGB uint8 frame, 64 storage
# chunks of 256 x 256.  Measured with benchmarks/bench_dask.py on a 0.8 GB RGB stack (64
# frames of 2048 x 2048, k=16, 2 threads): tasks of two such frames (25 MB) peaked at
# 571-704 MB RSS over the four chunkings (run 20261204T114352Z, not kept), at the 700 MB
# budget; one frame per task peaked at 557-629 MB (benchmarks/results/dask_issue19.csv),
# and still reads 64 storage chunks per zarr call at 256 x 256.
TARGET_TASK_BYTES = 16 * 2**20


def zarr_source(array: Any):
    """The zarr array a dask array was read from by ``dask.array.from_zarr``, or None.

    ``dask.array.from_array`` of a zarr array counts too (napari-ome-zarr and other
    readers use either).

    Only an array *straight* from ``from_zarr`` (every task a read of the zarr array,
    same shape) counts: after slicing or arithmetic, regrouping the reads would change
    what the array means.

    Parameters
    ----------
    array : any
        Typically a dask array.

    Returns
    -------
    zarr.Array or None
    """
    graph_of = getattr(array, "__dask_graph__", None)
    if graph_of is None:
        return None
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is what made the array
        return None
    graph = graph_of()
    layers = getattr(graph, "layers", None)
    if not layers or array.name not in layers:
        return None
    # from_zarr and from_array (inline_array=False, dask's default) build two layers: the
    # reads, and one key holding the zarr array they depend on.  Anything more is a
    # derived array; with inline_array=True the array hides in every task (not regrouped).
    if len(layers) != 2 or not array.name.startswith(("from-zarr-", "array-")):
        return None
    found = None
    for name, layer in layers.items():
        if name == array.name:
            continue
        for value in dict(layer).values():
            if isinstance(value, zarr.Array):
                found = value
    if found is None or tuple(found.shape) != tuple(array.shape):
        return None
    return found


def task_chunks(
    shape: tuple[int, ...],
    storage_chunks: tuple[int, ...],
    itemsize: int,
    target_bytes: int = TARGET_TASK_BYTES,
) -> tuple[int, ...]:
    """A task block: whole storage chunks, grown from the last axis to the first.

    Growing the fastest-varying axes first makes each task a contiguous slab (whole rows,
    then whole planes, then several planes), the order zarr and the OS read best and the
    one a frame-by-frame reader expects.

    Parameters
    ----------
    shape, storage_chunks : tuple of int
        The array's shape and its storage chunk shape (same length).
    itemsize : int
        Bytes per element.
    target_bytes : int, optional
        About how many bytes one task should cover; never fewer than one storage chunk.

    Returns
    -------
    tuple of int
        The task block: every entry a multiple of the storage chunk (or the whole axis).
    """
    if len(shape) != len(storage_chunks):
        raise ValueError(f"shape {shape} and chunks {storage_chunks} differ in length")
    block = [min(c, s) if s else c for c, s in zip(storage_chunks, shape, strict=True)]
    for axis in reversed(range(len(shape))):
        size, chunk = shape[axis], block[axis]
        if chunk >= size or size == 0:
            continue
        current = math.prod(block) * itemsize
        factor = max(1, target_bytes // max(current, 1))
        if factor <= 1:
            break
        block[axis] = min(size, chunk * factor)
        if block[axis] < size:  # this axis is only partly covered: stop growing here
            break
    return tuple(int(b) for b in block)


def _open(source, mode: str = "r"):
    import zarr

    if isinstance(source, zarr.Array):
        return source
    if isinstance(source, str | os.PathLike):
        return zarr.open_array(str(source), mode=mode)
    raise TypeError(f"expected a zarr array or a path to one, not {type(source).__name__}")


def from_zarr(source, *, target_bytes: int = TARGET_TASK_BYTES):
    """Open a zarr array as a dask array whose tasks each read a block of storage chunks.

    Parameters
    ----------
    source : zarr.Array, str or os.PathLike
        The array, or its path / URL.
    target_bytes : int, optional
        About how many bytes one task reads (see :func:`task_chunks`).

    Returns
    -------
    dask.array.Array
        The same values as ``dask.array.from_zarr(source)``, in blocks of
        :func:`task_chunks` instead of one storage chunk each.
    """
    import dask.array as da

    z = _open(source)
    chunks = task_chunks(tuple(z.shape), tuple(z.chunks), z.dtype.itemsize, target_bytes)
    return da.from_zarr(z, chunks=chunks)


def regroup(array, *, target_bytes: int = TARGET_TASK_BYTES):
    """``array`` with tasks of several storage chunks if it came straight from ``from_zarr``.

    Also for one plane of such an array along an axis (``x[:, 2]``, how napari splits
    the channels of an image opened with ``channel_axis``, as napari-ome-zarr does): the
    plane is then read from a regrouped array whose tasks hold one plane of that axis,
    so that no task reads the other channels.

    Anything else (numpy, a derived dask array, or one whose tasks already hold at least
    half of ``target_bytes``) is returned unchanged: the user's chunks are not second-
    guessed, and a ``rechunk()`` would not help anyway, since it still runs one read task
    per storage chunk.

    Parameters
    ----------
    array : any
        Typically ``dask.array.from_zarr(...)``.
    target_bytes : int, optional
        About how many bytes one task reads.

    Returns
    -------
    array or dask.array.Array
    """
    z = zarr_source(array)
    plane = None
    if z is None:
        found = _plane_of_zarr_source(array)
        if found is None:
            return array
        z, plane = found
    largest = math.prod(max(c) if c else 1 for c in array.chunks) * array.dtype.itemsize
    if largest >= target_bytes // 2:
        return array
    if plane is None:
        return from_zarr(z, target_bytes=target_bytes)
    import dask.array as da

    axis, element = plane
    storage = tuple(int(c) for c in z.chunks)
    inner = tuple(n for i, n in enumerate(z.shape) if i != axis)
    block = list(
        task_chunks(inner, storage[:axis] + storage[axis + 1 :], z.dtype.itemsize, target_bytes)
    )
    block.insert(axis, 1)
    index = [slice(None)] * z.ndim
    index[axis] = element
    return da.from_zarr(z, chunks=tuple(block))[tuple(index)]


def _plane_of_zarr_source(array) -> tuple[Any, tuple[int, int]] | None:
    """``(zarr array, (axis, element))`` if ``array`` is ``x[..., element, ...]`` (one
    integer index, every other axis whole) of an array ``x`` straight from ``from_zarr``.

    Found by its graph: three layers, the top one an indexing of a ``from_zarr`` layer,
    and the name dask gives that very indexing of the rebuilt ``x`` (names are tokens of
    the operation and its input, so a match is the same operation).
    """
    graph_of = getattr(array, "__dask_graph__", None)
    if graph_of is None or not getattr(array, "name", "").startswith("getitem-"):
        return None
    graph = graph_of()
    layers = getattr(graph, "layers", None)
    if not layers or len(layers) != 3 or array.name not in layers:
        return None
    (base_name,) = graph.dependencies.get(array.name) or (None,)
    if base_name is None or not base_name.startswith(("from-zarr-", "array-")):
        return None
    try:
        import dask.array as da
        import zarr  # noqa: F401 - the array must come from zarr
        from dask.array.core import normalize_chunks
        from dask.highlevelgraph import HighLevelGraph
    except ImportError:  # pragma: no cover - dask and zarr made the array
        return None
    rest = {name: layer for name, layer in layers.items() if name != array.name}
    base_graph = HighLevelGraph(rest, {name: graph.dependencies[name] for name in rest})
    z = _held_zarr_array(rest, base_name)
    if z is None or z.ndim != array.ndim + 1:
        return None
    chunks = normalize_chunks(z.chunks, z.shape, dtype=z.dtype)
    base = da.Array(base_graph, base_name, chunks=chunks, dtype=z.dtype)
    for axis in range(z.ndim):
        if tuple(n for i, n in enumerate(z.shape) if i != axis) != tuple(array.shape):
            continue
        for element in range(min(z.shape[axis], 64)):  # channel-like axes only
            index = [slice(None)] * z.ndim
            index[axis] = element
            if base[tuple(index)].name == array.name:
                return z, (axis, element)
    return None


def _held_zarr_array(layers: dict, reads: str):
    """The zarr array held by the layer that the read layer ``reads`` depends on."""
    import zarr

    for name, layer in layers.items():
        if name == reads:
            continue
        for value in dict(layer).values():
            if isinstance(value, zarr.Array):
                return value
    return None


def is_aligned(chunks: tuple[tuple[int, ...], ...], storage_chunks: tuple[int, ...]) -> bool:
    """Whether every task boundary of dask ``chunks`` is a storage chunk boundary.

    Then no two tasks write the same storage chunk, so writes need no lock, and each
    storage chunk is encoded once.
    """
    for sizes, chunk in zip(chunks, storage_chunks, strict=True):
        edges = np.cumsum(sizes)[:-1]
        if np.any(edges % chunk):
            return False
    return True


def align(array, storage_chunks: tuple[int, ...], *, target_bytes: int = TARGET_TASK_BYTES):
    """``array`` rechunked to blocks of whole storage chunks, if it is not already aligned.

    Parameters
    ----------
    array : dask.array.Array
    storage_chunks : tuple of int
        The chunk shape of the zarr array it will be stored in.
    target_bytes : int, optional
        Task size used when a rechunk is needed.

    Returns
    -------
    dask.array.Array
    """
    if is_aligned(array.chunks, storage_chunks):
        return array
    block = task_chunks(array.shape, storage_chunks, array.dtype.itemsize, target_bytes)
    return array.rechunk(block)


def to_zarr(
    array,
    target,
    *,
    storage_chunks: tuple[int, ...],
    zarr_format: int | None = None,
    overwrite: bool = True,
    compute: bool = True,
    **create_kwargs,
):
    """Write a dask array to a new zarr array with the given storage chunks.

    Unlike ``dask.array.to_zarr``, whose storage chunks are the dask chunks, the stored
    array gets ``storage_chunks`` (e.g. the input's), while the tasks stay large: they
    are aligned to whole storage chunks (rechunked only if they are not), so each task
    writes several chunks in one zarr call and no two tasks share one.

    Parameters
    ----------
    array : dask.array.Array
    target : str, os.PathLike or zarr store
        Where the new array goes (replaced if ``overwrite``).
    storage_chunks : tuple of int
        Chunk shape of the stored array.
    zarr_format : {2, 3}, optional
        Zarr format of the new array; zarr's default (3) if None.
    overwrite, compute : bool, optional
        As in ``dask.array.to_zarr``.
    **create_kwargs
        Passed to ``zarr.create_array`` (e.g. ``compressors``, ``attributes``).

    Returns
    -------
    zarr.Array, or a dask Delayed if ``compute`` is False
    """
    import dask.array as da
    import zarr

    storage_chunks = tuple(
        min(c, s) if s else c for c, s in zip(storage_chunks, array.shape, strict=True)
    )
    store = str(target) if isinstance(target, os.PathLike) else target
    kwargs = {"zarr_format": zarr_format} if zarr_format else {}
    if zarr_format == 2:
        # OME-NGFF 0.4 and most v2 readers expect "/" between chunk indices.
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    z = zarr.create_array(
        store=store,
        shape=array.shape,
        chunks=storage_chunks,
        dtype=array.dtype,
        overwrite=overwrite,
        **kwargs,
        **create_kwargs,
    )
    stored = da.store(align(array, storage_chunks), z, lock=False, compute=compute)
    return z if compute else stored
