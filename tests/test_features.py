"""Dithering, fewest colours for a target quality, per-cluster statistics."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from skimage import data
from skimage.filters import gaussian

from napari_kmeans_filter import Palette, _paint, apply_palette, quantize

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint64, np.float16, np.float32]


def _photo_in(dtype):
    """The astronaut's upper-left quarter in ``dtype``'s units (floats in [0, 1])."""
    photo = data.astronaut()[:128, :160].astype(np.float64) / 255
    if np.dtype(dtype).kind == "f":
        return photo.astype(dtype)
    info = np.iinfo(dtype)
    return np.rint(info.min + photo * (float(info.max) - float(info.min))).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dithered_labels_index_the_palette_on_every_dtype(dtype):
    image = _photo_in(dtype)
    result = quantize(image, 6, dither=True)
    assert result.image.dtype == image.dtype
    np.testing.assert_array_equal(result.image, result.palette.colors[result.labels])
    assert result.palette.counts.sum() == result.labels.size
    np.testing.assert_array_equal(
        np.bincount(result.labels.ravel(), minlength=len(result.palette)), result.palette.counts
    )


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "coffee"])
def test_dithering_diffuses_the_error(name):
    """Blurred, the dithered picture is closer to the blurred original than the undithered
    one: the error went into fine grain instead of flat bands."""
    photo = getattr(data, name)()

    def blurred_error(image):
        blur = lambda x: gaussian(x.astype(float), sigma=2, channel_axis=-1)  # noqa: E731
        return ((blur(image) - blur(photo)) ** 2).mean()

    plain, dithered = quantize(photo, 8), quantize(photo, 8, dither=True)
    np.testing.assert_array_equal(plain.palette.colors, dithered.palette.colors)
    assert blurred_error(dithered.image) < blurred_error(plain.image)
    assert dithered.mse > plain.mse  # per pixel, dithering trades error for texture
    half = quantize(photo, 8, dither=0.5)
    assert plain.mse < half.mse < dithered.mse


def test_dithering_a_ramp_keeps_its_average():
    ramp = np.tile(np.linspace(0, 255, 256), (64, 1)).astype(np.uint8)
    result = quantize(ramp, 2, dither=True)
    low, high = result.palette.colors.ravel()
    inside = (ramp >= low) & (ramp <= high)
    column_means = np.where(inside, result.image, 0).sum(0) / np.maximum(inside.sum(0), 1)
    target = np.where(inside, ramp, 0).sum(0) / np.maximum(inside.sum(0), 1)
    assert np.abs(column_means - target)[inside.any(0)].mean() < 6


@pytest.mark.parametrize("k", [64, 256])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_dithering_picks_the_exact_nearest_colour_at_any_k(k, dtype, monkeypatch):
    """Above a few colours the RGB kernel searches per-cell candidate lists (or walks
    the neighbour table): its labels equal comparing every colour (ties: lowest index)."""

    rng = np.random.default_rng(k)
    image = data.astronaut()[::2, ::2].astype(np.float64)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255)
    image = image.astype(dtype) / (255 if dtype == np.float32 else 1)
    palette = quantize(image, k, random_state=0, speed=10).palette
    fast = apply_palette(image, palette, dither=True)
    monkeypatch.setattr(_paint, "_BRUTE_FORCE_K", 10**6)
    every = apply_palette(image, palette, dither=True)
    np.testing.assert_array_equal(fast.labels, every.labels)


def test_stacks_dither_plane_by_plane_and_dask_chunk_by_chunk():
    frames = np.stack([data.chelsea()[:100, :120]] * 3)
    whole = quantize(frames, 5, dither=True)
    np.testing.assert_array_equal(whole.labels[0], whole.labels[2])  # each plane alike
    single = quantize(frames[0], 5, dither=True, init=whole.palette.colors.astype(float))
    # A dask array chunked by whole planes dithers exactly like numpy.
    lazy = quantize(da.from_array(frames, chunks=(1, 100, 120, 3)), 5, dither=True)
    np.testing.assert_array_equal(lazy.labels.compute(), whole.labels)
    np.testing.assert_array_equal(lazy.image.compute(), whole.image)
    assert lazy.mse == pytest.approx(whole.mse)
    np.testing.assert_array_equal(lazy.palette.counts, whole.palette.counts)
    assert single.labels.shape == frames.shape[1:3]


@pytest.mark.parametrize("kept", [True, False])
def test_a_dithered_dask_block_is_dithered_once(monkeypatch, kept):
    """Statistics, labels and image of a dithered dask result come from one dithering
    of each block (labels kept in memory), or two when the labels are too big to keep
    (the statistics now; labels and image together later) -- not one per output."""
    rgba = np.dstack([data.chelsea()[:120, :160], np.full((120, 160), 255, np.uint8)])
    rgba[:40, :50, 3] = 0
    frames = np.stack([rgba, rgba[::-1]])
    calls = []
    paint = _paint.Ditherer.paint

    def counted(self, block):
        calls.append(block.shape)
        return paint(self, block)

    monkeypatch.setattr(_paint.Ditherer, "paint", counted)
    if not kept:
        monkeypatch.setattr(_paint, "_KEEP_LABELS_BYTES", 0)
    lazy = da.from_array(frames, chunks=(1, 60, 160, 4))
    with dask.config.set(scheduler="threads"):
        result = quantize(lazy, 6, dither=True, random_state=0)
        after_fit = len(calls)
        labels, image = dask.compute(result.labels, result.image)
    n_blocks = lazy.numblocks[0] * lazy.numblocks[1]
    assert after_fit == n_blocks
    assert len(calls) == (n_blocks if kept else 2 * n_blocks)
    # The same as dithering each block on its own (numpy).
    monkeypatch.undo()
    for t in range(2):
        for top in (0, 60):
            block = frames[t, top : top + 60]
            alone = apply_palette(block, result.palette, dither=True)
            np.testing.assert_array_equal(labels[t, top : top + 60], alone.labels)
            np.testing.assert_array_equal(image[t, top : top + 60], alone.image)
    eager = [
        apply_palette(frames[t, top : top + 60], result.palette, dither=True)
        for t in range(2)
        for top in (0, 60)
    ]
    np.testing.assert_array_equal(result.palette.counts, sum(e.palette.counts for e in eager))
    visible = [e.palette.counts.sum() for e in eager]
    expected_mse = sum(e.mse * n for e, n in zip(eager, visible, strict=True)) / sum(visible)
    assert result.mse == pytest.approx(expected_mse, rel=1e-9)


def test_apply_palette_dithers_and_transparent_pixels_take_no_error():
    rgba = np.dstack([data.chelsea(), np.full(data.chelsea().shape[:2], 255, np.uint8)])
    rgba[:, :100, 3] = 0
    palette = Palette(np.array([[0, 0, 0], [128, 128, 128], [255, 255, 255]], np.uint8))
    result = apply_palette(rgba, palette, dither=True)
    np.testing.assert_array_equal(result.image[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(result.image[..., :3], palette.colors[result.labels])
    assert result.palette.counts.sum() == np.count_nonzero(rgba[..., 3])
    plain = apply_palette(rgba, palette)
    # Hidden pixels keep their undithered colour: nothing diffused into them.
    np.testing.assert_array_equal(result.labels[:, :100], plain.labels[:, :100])


@pytest.mark.parametrize("bad", [-0.1, 1.5, "yes", None])
def test_bad_dither_is_named(bad):
    with pytest.raises(ValueError, match="dither"):
        quantize(data.chelsea(), 4, dither=bad)


def test_cluster_stats_sum_to_the_pixel_count_and_describe_the_clusters():
    photo = data.coffee()
    result = quantize(photo, 7)
    stats = result.cluster_stats()
    assert set(stats) >= {"label", "count", "fraction", "mean_0", "mean_1", "mean_2", "rms_error"}
    assert all(len(column) == 7 for column in stats.values())
    assert stats["count"].sum() == photo.shape[0] * photo.shape[1]
    assert stats["fraction"].sum() == pytest.approx(1.0)
    for label in range(7):
        members = photo[result.labels == label].astype(float)
        np.testing.assert_allclose(
            [stats[f"mean_{c}"][label] for c in range(3)], members.mean(axis=0), rtol=1e-12
        )
        error = ((members - result.palette.colors[label]) ** 2).mean()
        assert stats["rms_error"][label] == pytest.approx(np.sqrt(error))


def test_cluster_stats_per_frame_count_every_visible_pixel():
    frames = np.stack([data.chelsea(), data.chelsea()[::-1], data.chelsea() // 2])
    result = quantize(frames, 5)
    stats = result.cluster_stats(frame_axis=0)
    per_frame = stats["frame_counts"]
    assert per_frame.shape == (5, 3)
    np.testing.assert_array_equal(per_frame.sum(axis=1), stats["count"])
    for t in range(3):
        np.testing.assert_array_equal(
            per_frame[:, t], np.bincount(result.labels[t].ravel(), minlength=5)
        )
    lazy = quantize(da.from_array(frames, chunks=(1, 150, 451, 3)), 5)
    np.testing.assert_array_equal(lazy.cluster_stats(frame_axis=0)["frame_counts"], per_frame)


@pytest.mark.parametrize(("name", "target"), [("chelsea", 30.0), ("coffee", 33.0)])
def test_auto_finds_the_fewest_colors_reaching_the_psnr(name, target):
    photo = getattr(data, name)()
    result = quantize(photo, "auto", target_psnr=target)
    k = len(result.palette)
    assert result.psnr >= target
    assert quantize(photo, k - 1).psnr < target  # one colour fewer misses
    curve = result.error_curve
    assert curve["reached"] and k in curve["n_colors"] and k - 1 in curve["n_colors"]
    assert len(curve["n_colors"]) < 16  # a search, not every k from 2 to k
    assert result.params["n_colors"] == "auto" and result.params["target_psnr"] == target


def test_auto_progress_is_weighted_by_each_fits_cost():
    """The bar of an auto-k search never goes back and is near its end when the last fit
    ends: each fit used to count 1/16 whatever its k, so the bar parked at 60-75 %
    through the costly last fits of a high target, then jumped."""
    reports = []
    result = quantize(
        data.chelsea(), "auto", target_psnr=38.0, progress=lambda f, m: reports.append((f, m))
    )
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions)
    search = [f for f, m in reports if m.startswith("finding the fewest")]
    # the stage spans 0.3-0.9 of the bar; the search tried several ks
    assert len(result.error_curve["n_colors"]) >= 8
    assert search[-1] >= 0.3 + 0.6 * 0.9
    # ... and not early: an estimate that took the first small fit (k = 2) for most of the
    # work reached the bar's cap within it and parked there for 90 % of the search. The
    # reports come from the fits' passes, more of them for the larger ks.
    late = next(i for i, f in enumerate(search) if f >= 0.3 + 0.6 * 0.8)
    assert late >= len(search) / 2, (late, len(search))


def test_auto_with_a_delta_e_target():
    photo = data.astronaut()
    result = quantize(photo, "auto", target_delta_e=4.0)
    k = len(result.palette)
    assert result.error_curve["delta_e"][result.error_curve["n_colors"].index(k)] <= 4.0
    assert result.error_curve["delta_e"][result.error_curve["n_colors"].index(k - 1)] > 4.0


def test_auto_on_few_colors_is_lossless_and_an_unreachable_target_warns():
    few = np.repeat(np.arange(0, 250, 50, dtype=np.uint8), 20).reshape(10, 10)
    assert len(quantize(few, "auto", target_psnr=60).palette) == 5
    noise = np.random.default_rng(0).integers(0, 2**16, (64, 80, 3), dtype=np.uint16)
    with pytest.warns(UserWarning, match="not reached"):
        result = quantize(noise, "auto", target_psnr=199, speed=10)
    assert len(result.palette) == 4096 and not result.error_curve["reached"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_colors": 8, "target_psnr": 30}, "target_psnr"),
        ({"n_colors": 8, "target_delta_e": 2}, "target_delta_e"),
        ({"n_colors": "auto"}, "target"),
        ({"n_colors": "auto", "target_psnr": -3}, "target_psnr"),
        ({"n_colors": "auto", "target_psnr": "high"}, "target_psnr"),
        ({"n_colors": "automatic"}, "n_colors"),
        ({"n_colors": 3, "fixed_colors": [[0, 0, 0]] * 4}, "fixed_colors"),
        ({"n_colors": 3, "mask": np.ones((5, 5), bool)}, "mask"),
        ({"n_colors": 3, "sample_weight": -np.ones((300, 451))}, "sample_weight"),
    ],
)
def test_bad_combinations_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        quantize(data.chelsea(), **kwargs)


def test_delta_e_needs_rgb():
    with pytest.raises(ValueError, match="target_delta_e"):
        quantize(data.camera(), "auto", target_delta_e=2)
