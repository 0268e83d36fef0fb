"""An image seen as channel-last pixels, and back.

Every public function first turns its ``image`` (any axis order, numpy or
dask, any byte order; a dask array read from zarr in tasks of several storage
chunks) into a :class:`Layout`: the data with the colour
channels on the last axis in native byte order, which channel is alpha, and
the optional per-pixel ``mask`` / ``sample_weight`` with the same spatial
shape (and, for dask, the same spatial chunks).  Results are mapped back with
:meth:`Layout.restore`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _tasks
from . import _validation as check
from ._histogram import Encoding


@dataclass(frozen=True)
class Layout:
    """The image seen as channel-last pixels, plus how to undo that view."""

    data: Any  # numpy or dask array, channels on the last axis, native byte order
    original_shape: tuple
    original_dtype: np.dtype
    channel_axis: int | None
    n_color_channels: int
    has_alpha: bool
    is_dask: bool
    mask: Any = None  # bool, spatial shape (and chunks), or None
    sample_weight: Any = None  # float64, spatial shape (and chunks), or None

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def spatial_shape(self) -> tuple:
        return self.data.shape[:-1]

    @property
    def n_pixels(self) -> int:
        return math.prod(self.spatial_shape)

    @property
    def alpha_channel(self) -> int:
        """Column of alpha among a pixel's channels, or -1."""
        return self.data.shape[-1] - 1 if self.has_alpha else -1

    @property
    def encoding(self) -> Encoding:
        return Encoding.for_image(self.dtype, self.n_color_channels)

    def restore(self, array):
        """Undo the channel-last view: the input's shape, axis order and dtype."""
        if self.channel_axis is None:
            array = array[..., 0]
        elif self.channel_axis != len(self.original_shape) - 1:
            array = _moveaxis(array, -1, self.channel_axis, self.is_dask)
            if not self.is_dask:
                array = np.ascontiguousarray(array)
        if array.dtype != self.original_dtype:
            array = array.astype(self.original_dtype)
        return array


def _moveaxis(array, source, destination, is_dask):
    if is_dask:
        import dask.array as da

        return da.moveaxis(array, source, destination)
    return np.moveaxis(array, source, destination)


def layout_of(image, channel_axis, alpha, mask=None, sample_weight=None) -> Layout:
    """Validate ``image`` and its per-pixel options and view them channel-last.

    A dask array straight from ``dask.array.from_zarr`` (one task per storage chunk) is
    regrouped into tasks of several storage chunks (:func:`._tasks.regroup`): the same
    values, read several chunks per zarr call.
    """
    image = check.check_image(_tasks.regroup(image))
    axis = check.check_channel_axis(channel_axis, image.ndim)
    is_dask = check.is_dask_array(image)
    original_dtype = image.dtype
    if axis is None:
        data = image[..., np.newaxis]
    else:
        data = image if axis == image.ndim - 1 else _moveaxis(image, axis, -1, is_dask)
    n_channels = data.shape[-1]
    check.check_n_channels(n_channels, channel_axis)
    has_alpha = check.check_alpha(alpha, n_channels, axis, image.ndim)
    spatial = data.shape[:-1]
    spatial_ndim = len(spatial)
    mask = check.check_mask(mask, spatial)
    sample_weight = check.check_sample_weight(sample_weight, spatial)
    if not original_dtype.isnative:
        # Compute in native byte order; restore() casts the outputs back.
        data = data.astype(original_dtype.newbyteorder("="))
    if is_dask:
        data = data.rechunk({data.ndim - 1: -1})
        mask = _as_dask_like(mask, data)
        sample_weight = _as_dask_like(sample_weight, data)
        if sample_weight is not None:
            # numpy weights are checked above; lazy ones as each block is computed, with the
            # same error (before any output: the histogram computes them first).
            sample_weight = sample_weight.map_blocks(
                check.checked_weights, dtype=np.float64, meta=np.empty((0,) * spatial_ndim)
            )
    else:
        mask = None if mask is None else np.asarray(mask)
        sample_weight = None if sample_weight is None else np.asarray(sample_weight)
    return Layout(
        data,
        image.shape,
        original_dtype,
        axis,
        n_channels - has_alpha,
        has_alpha,
        is_dask,
        mask,
        sample_weight,
    )


def _as_dask_like(array, data):
    """``array`` (spatial shape) as a dask array chunked like ``data``'s spatial axes."""
    if array is None:
        return None
    import dask.array as da

    spatial_chunks = data.chunks[:-1]
    if check.is_dask_array(array):
        return array.rechunk(spatial_chunks)
    return da.from_array(np.asarray(array), chunks=spatial_chunks)
