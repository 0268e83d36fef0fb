"""Dask input: lazy output, bit-identical to numpy, from zarr, and under dask.distributed."""

from __future__ import annotations

import functools
import logging
import threading

import dask
import dask.array as da
import numpy as np
import pytest
from skimage import data

from napari_kmeans_filter import apply_palette, fit_palette, quantize


@functools.cache
def _photo() -> np.ndarray:
    # Odd sizes so that no chunking below divides the image evenly.
    return np.ascontiguousarray(data.chelsea()[90:135, 140:201])  # (45, 61, 3)


def photo() -> np.ndarray:
    return _photo().copy()


def assert_same_result(lazy, eager) -> None:
    """Bit-for-bit equality of a dask-input result with the numpy-input result."""
    assert isinstance(lazy.labels, da.Array) and isinstance(lazy.image, da.Array)
    labels, image = dask.compute(lazy.labels, lazy.image)
    assert labels.dtype == eager.labels.dtype and image.dtype == eager.image.dtype
    np.testing.assert_array_equal(labels, eager.labels)
    np.testing.assert_array_equal(image, eager.image)
    assert lazy.palette.colors.dtype == eager.palette.colors.dtype
    np.testing.assert_array_equal(lazy.palette.colors, eager.palette.colors)
    np.testing.assert_array_equal(lazy.palette.counts, eager.palette.counts)
    assert float(lazy.mse) == float(eager.mse)  # bit for bit, not approx
    assert float(lazy.psnr) == float(eager.psnr)
    assert lazy.n_input_colors == eager.n_input_colors
    assert lazy.n_iter == eager.n_iter
    assert lazy.params == eager.params


@pytest.mark.parametrize(
    "chunks",
    [
        (7, 13, 3),  # uneven spatial chunks, whole pixels
        (7, 13, 2),  # the channel axis split: a pixel's R, G in one chunk, B in another
        (45, 61, 1),  # one chunk per channel
        (4, 61, 3),  # a few rows per chunk: many small chunks
        (45, 61, 3),  # a single chunk
    ],
    ids=str,
)
def test_dask_equals_numpy_bit_for_bit(chunks):
    img = photo()
    eager = quantize(img, 6)
    lazy = quantize(da.from_array(img, chunks=chunks), 6)
    assert lazy.image.shape == img.shape and lazy.labels.shape == img.shape[:2]
    assert_same_result(lazy, eager)


@pytest.mark.parametrize(
    ("make", "kwargs", "chunks"),
    [
        pytest.param(
            lambda img: img[..., 0], {}, (10, 17), id="greyscale-2d"
        ),  # 2-D: always greyscale
        pytest.param(
            lambda img: np.stack([img[..., 0], img[..., 1]]),
            {"channel_axis": None},
            (1, 9, 61),
            id="greyscale-zstack",
        ),
        pytest.param(
            lambda img: np.dstack([img, (img[..., :1] > 100).astype(np.uint8) * 255]),
            {},
            (8, 20, 4),
            id="rgba-transparent-holes",
        ),
        pytest.param(
            lambda img: np.moveaxis(img, -1, 0), {"channel_axis": 0}, (2, 9, 20), id="CYX"
        ),
        pytest.param(
            lambda img: img.astype(np.uint16) * 257, {"color_space": "lab"}, (9, 9, 3), id="u16-lab"
        ),
        pytest.param(
            lambda img: img.astype(np.float32) / 255, {"color_space": "oklab"}, (9, 20, 3), id="f32"
        ),
        pytest.param(
            lambda img: img.astype(np.float64) / 255, {}, (11, 11, 3), id="f64"
        ),  # floats: value-range encoding must use the global range on every chunk
    ],
)
def test_dask_equals_numpy_for_every_layout(make, kwargs, chunks):
    img = make(photo())
    eager = quantize(img, 5, **kwargs)
    lazy = quantize(da.from_array(img, chunks=chunks), 5, **kwargs)
    assert_same_result(lazy, eager)


def test_stack_with_constant_and_empty_chunks():
    """A time series with a black (constant) frame and zero-length chunks along T."""
    img = photo()
    stack = np.stack([img, np.zeros_like(img), img[::-1], img[:, ::-1]])  # (4, 45, 61, 3)
    lazy_input = da.from_array(stack, chunks=((1, 0, 1, 0, 2), (45,), (30, 31), (3,)))
    assert 0 in lazy_input.chunks[0]
    eager = quantize(stack, 7)
    lazy = quantize(lazy_input, 7)
    assert_same_result(lazy, eager)
    # The black frame is one colour: every pixel of it shares one (the darkest) label.
    assert np.all(lazy.labels[1].compute() == 0)


def test_fit_palette_and_apply_palette_accept_dask():
    img = photo()
    lazy_img = da.from_array(img, chunks=(16, 16, 3))
    palette = fit_palette(lazy_img, 4)
    np.testing.assert_array_equal(palette.colors, fit_palette(img, 4).colors)
    other = np.ascontiguousarray(data.coffee()[100:150, 200:260])
    eager = apply_palette(other, palette)
    lazy = apply_palette(da.from_array(other, chunks=(13, 17, 3)), palette)
    assert isinstance(lazy.image, da.Array) and isinstance(lazy.labels, da.Array)
    np.testing.assert_array_equal(lazy.labels.compute(), eager.labels)
    np.testing.assert_array_equal(lazy.image.compute(), eager.image)
    np.testing.assert_array_equal(lazy.palette.counts, eager.palette.counts)
    assert float(lazy.mse) == float(eager.mse)


class _CountingSource:
    """Array-like for `da.from_array` that counts how often its data is read."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self._lock = threading.Lock()
        self.reads = 0

    def __getitem__(self, key):
        with self._lock:
            self.reads += 1
        return self._array[key]


def test_dask_output_is_lazy():
    """Only the fit touches the data; labels and image are computed when asked for."""
    img = photo()
    source = _CountingSource(img)
    lazy_input = da.from_array(source, chunks=(15, 20, 3), asarray=True)
    n_chunks = lazy_input.npartitions
    source.reads = 0  # dask may probe the source while building the graph

    res = quantize(lazy_input, 5)
    after_fit = source.reads
    assert after_fit >= n_chunks  # the fit read every chunk ...
    assert isinstance(res.labels, da.Array) and isinstance(res.image, da.Array)
    _ = (res.labels.shape, res.image.dtype, res.palette.colors, res.mse)
    assert source.reads == after_fit  # ... and nothing more until asked

    labels = res.labels.compute()
    assert source.reads > after_fit  # labels really are derived from the source chunks
    np.testing.assert_array_equal(labels, quantize(img, 5).labels)


def test_zarr_store_round_trip(tmp_path):
    zarr = pytest.importorskip("zarr")
    img = photo()
    store = str(tmp_path / "photo.zarr")
    z = zarr.create_array(store=store, shape=img.shape, chunks=(16, 16, 3), dtype=img.dtype)
    z[:] = img
    lazy_input = da.from_zarr(store)
    assert lazy_input.npartitions > 1

    res = quantize(lazy_input, 6)
    assert_same_result(res, quantize(img, 6))
    # The lazy result can be written straight back to zarr.
    out = str(tmp_path / "labels.zarr")
    res.labels.to_zarr(out)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(out)), quantize(img, 6).labels)


@pytest.mark.slow
@pytest.mark.distributed
def test_distributed_cluster_gives_the_numpy_result():
    """Everything shipped to worker processes must pickle; results must not change."""
    distributed = pytest.importorskip("distributed")
    img = photo()
    eager = quantize(img, 6)
    rgba = np.dstack([img, np.where(img[..., 0] > 120, 255, 0).astype(np.uint8)])
    eager_rgba = quantize(rgba, 4)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        lazy = quantize(da.from_array(img, chunks=(10, 25, 3)), 6)
        assert_same_result(lazy, eager)
        lazy_rgba = quantize(da.from_array(rgba, chunks=(20, 20, 4)), 4)
        assert_same_result(lazy_rgba, eager_rgba)
        # The painted image is computed on the workers, through the client.
        future = client.compute(lazy.image)
        np.testing.assert_array_equal(future.result(), eager.image)
