"""Dask tasks of several zarr storage chunks: same values, same results, storage chunks kept."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

from napari_kmeans_filter import _tasks, quantize  # noqa: E402


def _noisy_stack(shape=(4, 96, 80, 3), seed=0):
    """A few frames of smooth colour ramps with noise: many distinct colours, like photos."""
    rng = np.random.default_rng(seed)
    t, h, w, _ = shape
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(t):
        base = np.stack([xx * 2 + i * 9, yy * 2, (xx + yy) + 40 * i], axis=-1) % 256
        frames.append(base + rng.normal(0, 6, (h, w, 3)))
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def stack():
    return _noisy_stack()


def _store(path, data, chunks, zarr_format=3):
    z = zarr.create_array(
        store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, zarr_format=zarr_format
    )
    z[...] = data
    return str(path)


@pytest.mark.parametrize(
    ("shape", "chunks", "itemsize", "target", "expected"),
    [
        # whole rows first, then whole planes, then planes
        ((64, 2048, 2048, 3), (1, 256, 256, 3), 1, 32 * 2**20, (2, 2048, 2048, 3)),
        # 345 does not divide 2048: six chunks cover the row, the block is the whole row
        ((64, 2048, 2048, 3), (1, 1024, 345, 3), 1, 32 * 2**20, (2, 2048, 2048, 3)),
        ((64, 2048, 2048, 3), (1, 2048, 2048, 3), 1, 32 * 2**20, (2, 2048, 2048, 3)),
        # a small target stops inside an axis, at a multiple of the chunk
        ((8, 1024, 1024), (1, 128, 128), 2, 2**20, (1, 512, 1024)),
        # never less than one storage chunk
        ((8, 1024, 1024), (2, 512, 512), 8, 1, (2, 512, 512)),
    ],
)
def test_task_chunks_are_blocks_of_whole_storage_chunks(shape, chunks, itemsize, target, expected):
    block = _tasks.task_chunks(shape, chunks, itemsize, target)
    assert block == expected
    for b, c, s in zip(block, chunks, shape, strict=True):
        assert b == s or b % c == 0


def test_zarr_source_only_for_arrays_straight_from_from_zarr(tmp_path, stack):
    path = _store(tmp_path / "s.zarr", stack, (1, 16, 16, 3))
    x = da.from_zarr(path)
    assert isinstance(_tasks.zarr_source(x), zarr.Array)
    assert _tasks.zarr_source(x[:2]) is None
    assert _tasks.zarr_source(x + 1) is None
    assert _tasks.zarr_source(np.asarray(stack)) is None
    assert _tasks.zarr_source(da.from_array(stack)) is None
    z = zarr.open_array(path, mode="r")
    assert _tasks.zarr_source(da.from_array(z, chunks=z.chunks)) is not None


def test_regroup_reads_several_storage_chunks_per_task(tmp_path, stack):
    path = _store(tmp_path / "s.zarr", stack, (1, 16, 16, 3))
    x = da.from_zarr(path)
    assert x.npartitions == 4 * 6 * 5
    y = _tasks.regroup(x, target_bytes=96 * 80 * 3 * 2)
    assert y.chunks == ((2, 2), (96,), (80,), (3,))
    np.testing.assert_array_equal(y.compute(), stack)
    # not straight from from_zarr, or tasks already large: unchanged
    assert _tasks.regroup(x[:2]) is not None and _tasks.regroup(x[:2]).chunks == x[:2].chunks
    big = da.from_zarr(path, chunks=(4, 96, 80, 3))
    assert _tasks.regroup(big, target_bytes=1000) is big
    assert _tasks.regroup(stack) is stack


@pytest.mark.parametrize("chunks", [(1, 16, 16, 3), (1, 32, 40, 3), (1, 96, 23, 3), (2, 96, 80, 3)])
def test_regrouped_quantize_is_bit_identical_to_numpy(tmp_path, stack, chunks):
    path = _store(tmp_path / "s.zarr", stack, chunks)
    expected = quantize(stack, 8, random_state=0)
    # tasks of ~2 frames, then of one row of storage chunks: both whole storage chunks
    for target in (96 * 80 * 3 * 2, chunks[2] * 80 * 3):
        x = _tasks.regroup(da.from_zarr(path), target_bytes=target)
        result = quantize(x, 8, random_state=0)
        np.testing.assert_array_equal(result.palette.colors, expected.palette.colors)
        labels = tmp_path / f"labels_{target}.zarr"
        z = _tasks.to_zarr(result.labels, labels, storage_chunks=chunks[:-1])
        assert tuple(z.chunks) == chunks[:-1]
        np.testing.assert_array_equal(zarr.open_array(str(labels))[...], expected.labels)
        np.testing.assert_array_equal(result.image.compute(), expected.image)


def test_regroup_reads_one_channel_plane_of_a_zarr_array(tmp_path, stack):
    """``x[:, :, :, 1]``-like planes, how napari splits the channels of a layer opened with
    ``channel_axis`` (napari-ome-zarr): regrouped, tasks read only that plane."""
    channels_first = np.ascontiguousarray(np.moveaxis(stack, -1, 0))  # (3, 4, 96, 80)
    path = _store(tmp_path / "c.zarr", channels_first, (1, 1, 16, 16))
    x = da.from_zarr(path)
    for c in range(3):
        plane = x[c]
        y = _tasks.regroup(plane)
        assert y.npartitions == 1 < plane.npartitions
        np.testing.assert_array_equal(y.compute(), channels_first[c])
        # each read task covers one channel: the plane's task reads nothing of the others
        layers = y.__dask_graph__().layers
        (reads,) = [name for name in layers if name.startswith("from-zarr")]
        assert sorted(key[1] for key in layers[reads]) == [0, 1, 2]
    # a plane along another axis
    np.testing.assert_array_equal(_tasks.regroup(x[:, 2]).compute(), channels_first[:, 2])
    np.testing.assert_array_equal(_tasks.regroup(x[:, :, 5]).compute(), channels_first[:, :, 5])
    # other derived arrays are left alone
    for derived in (x[0, :2], x[1] + 1, x[1:]):
        assert _tasks.regroup(derived) is derived


@pytest.mark.parametrize("chunks", [(1, 16, 16, 3), (1, 96, 23, 3)])
def test_the_api_regroups_an_array_straight_from_from_zarr(tmp_path, stack, chunks):
    """``quantize(da.from_zarr(...))`` runs on tasks of several storage chunks (the core's
    layout regroups it) and gives the numpy result bit for bit."""
    from napari_kmeans_filter._layout import layout_of

    path = _store(tmp_path / "s.zarr", stack, chunks)
    lazy = da.from_zarr(path)
    data = layout_of(lazy, -1, None).data
    assert data.chunks == ((4,), (96,), (80,), (3,))  # the whole stack: under 16 MiB
    assert lazy.npartitions > 1
    # a derived array is the user's: its chunks are kept
    assert layout_of(lazy[:3], -1, None).data.chunks[:-1] == lazy[:3].chunks[:-1]
    expected = quantize(stack, 8, random_state=0)
    result = quantize(lazy, 8, random_state=0)
    assert result.labels.npartitions == 1
    np.testing.assert_array_equal(result.palette.colors, expected.palette.colors)
    np.testing.assert_array_equal(result.labels.compute(), expected.labels)
    np.testing.assert_array_equal(result.image.compute(), expected.image)


def test_to_zarr_aligns_tasks_to_the_storage_chunks(tmp_path, stack):
    labels = da.from_array(stack[..., 0], chunks=(1, 50, 33))  # boundaries off the chunks
    assert not _tasks.is_aligned(labels.chunks, (1, 16, 16))
    aligned = _tasks.align(labels, (1, 16, 16), target_bytes=96 * 80)
    assert _tasks.is_aligned(aligned.chunks, (1, 16, 16))
    z = _tasks.to_zarr(labels, tmp_path / "l.zarr", storage_chunks=(1, 16, 16), zarr_format=2)
    assert z.metadata.zarr_format == 2
    assert (tmp_path / "l.zarr" / "0" / "0" / "0").exists()  # "/" separator, as OME-NGFF 0.4
    np.testing.assert_array_equal(z[...], stack[..., 0])


@pytest.mark.slow
@pytest.mark.distributed
def test_regrouped_quantize_on_a_cluster_gives_the_numpy_result(tmp_path, stack):
    distributed = pytest.importorskip("distributed")
    path = _store(tmp_path / "s.zarr", stack, (1, 16, 16, 3))
    expected = quantize(stack, 8, random_state=0)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        x = _tasks.regroup(da.from_zarr(path), target_bytes=96 * 80 * 3)
        result = quantize(x, 8, random_state=0)
        _tasks.to_zarr(result.labels, tmp_path / "l.zarr", storage_chunks=(1, 16, 16))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "l.zarr"))[...], expected.labels)
