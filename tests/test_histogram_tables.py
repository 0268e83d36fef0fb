"""Dask histograms counted in shared count tables: the numpy histogram, bit for bit."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from napari_kmeans_filter import _histogram, quantize  # noqa: E402
from napari_kmeans_filter._layout import layout_of  # noqa: E402


@functools.cache
def _stack() -> np.ndarray:
    """Three 1024 x 2048 RGB frames of noisy colour ramps with many colours: 6.3 M pixels,
    over a quarter of the 2**24 entries of an 8-bit RGB table (so that they are counted
    in tables) and more than one block of counting (``_COUNT_BLOCK_PIXELS``)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:1024, 0:2048]
    frames = [
        np.stack([xx // 8 + 30 * i, yy // 4, (xx + yy) // 12 + 50 * i], axis=-1) % 256
        + rng.normal(0, 5, (1024, 2048, 3))
        for i in range(3)
    ]
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _histograms(image, chunks, channel_axis=-1, **layout_options):
    """(dask histogram, numpy histogram, whether the dask one was counted in tables)."""
    lazy = layout_of(da.from_array(image, chunks=chunks), channel_axis, False, **layout_options)
    eager = layout_of(image, channel_axis, False, **layout_options)
    counting = _histogram._counting_blocks(lazy)[0]
    in_tables = _histogram._counts_in_tables(lazy, lazy.encoding, counting)
    return _histogram.image_histogram(lazy)[0], _histogram.image_histogram(eager)[0], in_tables


def _assert_same(lazy, eager) -> None:
    for name in ("codes", "counts"):
        assert getattr(lazy, name).dtype == getattr(eager, name).dtype, name
        np.testing.assert_array_equal(getattr(lazy, name), getattr(eager, name))
    assert lazy.visible is None and lazy.votes is None


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
@pytest.mark.parametrize(
    "chunks",
    [(1, 1024, 2048, 3), (1, 300, 700, 3), (2, 1024, 345, 3), (1, 1000, 2048, 3)],
    ids=str,
)
def test_rgb_stack_counted_in_tables_gives_the_numpy_histogram(chunks, scheduler):
    with dask.config.set(scheduler=scheduler):
        lazy, eager, in_tables = _histograms(_stack(), chunks)
    assert in_tables
    assert len(eager) > 100_000
    _assert_same(lazy, eager)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: s[..., 1], id="uint8-grey"),
        pytest.param(lambda s: s[..., 1].astype(np.uint16) * 251, id="uint16-grey"),
        pytest.param(lambda s: (s[..., 2].astype(np.int16) - 128).astype(np.int8), id="int8-grey"),
        pytest.param(
            lambda s: (s[..., 0].astype(np.int32) * 200 - 2**15).astype(np.int16), id="int16"
        ),
    ],
)
def test_greyscale_counted_in_tables_gives_the_numpy_histogram(make):
    image = make(_stack())
    lazy, eager, in_tables = _histograms(image, (1, 512, 2048), channel_axis=None)
    assert in_tables
    _assert_same(lazy, eager)


def test_signed_rgb_counted_in_tables_gives_the_numpy_histogram():
    """int8 colour is packed as value - dtype.min: the table's codes are the same."""
    image = (_stack().astype(np.int16) - 128).astype(np.int8)
    lazy, eager, in_tables = _histograms(image, (1, 512, 2048, 3))
    assert in_tables
    _assert_same(lazy, eager)


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_colours_counted_past_the_16_bit_tables_carry_exactly(scheduler):
    """Colours seen 65535, 65536, 65537 and 3 x 65536 + 5 times, scattered over the chunks:
    every count is exact (the 16-bit table carries over; synchronously all in one)."""
    image = _stack().copy()
    flat = image.reshape(-1, 3)
    repeats = {(1, 2, 3): 65535, (4, 5, 6): 65536, (7, 8, 9): 65537, (250, 0, 250): 3 * 65536 + 5}
    codes = (flat[:, 0].astype(np.int64) << 16) | (flat[:, 1].astype(np.int64) << 8) | flat[:, 2]
    wanted = [(r << 16) | (g << 8) | b for r, g, b in repeats]
    flat[np.isin(codes, wanted)] = (0, 0, 0)  # the image's own pixels of those colours
    places = np.random.default_rng(1).permutation(flat.shape[0])
    start = 0
    for colour, n in repeats.items():
        flat[places[start : start + n]] = colour
        start += n
    with dask.config.set(scheduler=scheduler):
        lazy, eager, in_tables = _histograms(image, (1, 64, 2048, 3))
    assert in_tables
    _assert_same(lazy, eager)
    for code, n in zip(wanted, repeats.values(), strict=True):
        assert lazy.counts[np.searchsorted(lazy.codes, code)] == n


def test_more_threads_than_tables_share_them():
    """Eight threads, at most ``max_tables`` tables (two here on two cores): tasks wait for
    a free table, and every pixel is counted once."""
    with ThreadPoolExecutor(8) as pool, dask.config.set(pool=pool):
        lazy, eager, in_tables = _histograms(_stack(), (1, 128, 2048, 3))
    assert in_tables
    _assert_same(lazy, eager)


def test_tables_only_for_plain_counts_in_this_process():
    """Alpha, masks, weights, floats and schedulers in other processes take the tree of
    sorted partial histograms (tables live in this process)."""
    image = _stack()
    lazy = layout_of(da.from_array(image, chunks=(1, 512, 2048, 3)), -1, False)
    counting = _histogram._counting_blocks(lazy)[0]
    assert _histogram._counts_in_tables(lazy, lazy.encoding, counting)
    with dask.config.set(scheduler="processes"):
        assert not _histogram._counts_in_tables(lazy, lazy.encoding, counting)
    mask = np.ones(image.shape[:-1], bool)
    masked = layout_of(da.from_array(image, chunks=(1, 512, 2048, 3)), -1, False, mask=mask)
    assert not _histogram._counts_in_tables(
        masked, masked.encoding, _histogram._counting_blocks(masked)[0]
    )
    small = layout_of(da.from_array(image[:, :64], chunks=(1, 32, 2048, 3)), -1, False)
    # Fewer pixels than a quarter of the table: reading the table would cost more.
    assert not _histogram._counts_in_tables(
        small, small.encoding, _histogram._counting_blocks(small)[0]
    )


def test_quantize_counted_in_tables_equals_numpy_and_a_cluster(tmp_path):
    """The whole result from a zarr store: counted in tables (threads), in the tree of
    sorted histograms (a dask.distributed cluster), and from numpy, bit for bit."""
    distributed = pytest.importorskip("distributed")
    zarr = pytest.importorskip("zarr")
    image = _stack()
    store = zarr.create_array(
        store=str(tmp_path / "stack.zarr"),
        shape=image.shape,
        chunks=(1, 256, 512, 3),
        dtype=image.dtype,
    )
    store[...] = image
    eager = quantize(image, 8, random_state=0)
    lazy = quantize(da.from_zarr(store), 8, random_state=0)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        on_cluster = quantize(da.from_zarr(store), 8, random_state=0)
        cluster_labels = on_cluster.labels.compute()
    for result, labels in ((lazy, lazy.labels.compute()), (on_cluster, cluster_labels)):
        np.testing.assert_array_equal(labels, eager.labels)
        np.testing.assert_array_equal(result.palette.colors, eager.palette.colors)
        np.testing.assert_array_equal(result.palette.counts, eager.palette.counts)
        assert float(result.mse) == float(eager.mse)
        assert result.n_input_colors == eager.n_input_colors
