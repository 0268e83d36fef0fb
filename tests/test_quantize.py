"""Behaviour of the core API on real photographs.

Where a result is exactly determined (Lloyd from a given start, Otsu on one channel, the
metrics) it is compared with an independent reference implementation (scikit-learn,
scikit-image); everything else is checked against the invariants the API documents
(docs/api.md, with the parameter contract).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import warnings

import numpy as np
import pytest
from skimage import data
from skimage.color import rgb2lab
from skimage.filters import threshold_multiotsu
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio
from sklearn.cluster import KMeans

from napari_kmeans_filter import (
    COLOR_SPACES,
    MAX_N_COLORS,
    Palette,
    apply_palette,
    fit_palette,
    quantize,
)

# ---------------------------------------------------------------------------------------------
# Real images (cached: each loader reads a file)


@functools.cache
def real_image(name: str) -> np.ndarray:
    if name == "china":
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        (img,) = (im for f, im in zip(bunch.filenames, bunch.images, strict=True) if "china" in f)
        return np.ascontiguousarray(img)
    return np.ascontiguousarray(getattr(data, name)())


# Textured 60 x 80 windows (fur, face, cup rim, roof): many distinct colours, fast to fit.
CROPS = {
    "chelsea": (slice(100, 160), slice(150, 230)),
    "astronaut": (slice(100, 160), slice(200, 280)),
    "coffee": (slice(150, 210), slice(250, 330)),
    "china": (slice(150, 210), slice(300, 380)),
}
IMAGES = tuple(CROPS)


def crop(name: str, scale: int = 1) -> np.ndarray:
    """A `scale`-times larger (same top-left corner) copy of the standard crop of `name`."""
    ys, xs = CROPS[name]
    h, w = (ys.stop - ys.start) * scale, (xs.stop - xs.start) * scale
    return real_image(name)[ys.start : ys.start + h, xs.start : xs.start + w].copy()


def n_distinct(pixels: np.ndarray) -> int:
    return len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


def luminances(colors_uint8: np.ndarray) -> np.ndarray:
    """(3, n) luminance of each colour under Rec.601, Rec.709 and CIELAB L*, all in [0, 1]."""
    c = colors_uint8.astype(np.float64) / 255
    return np.stack(
        [
            c @ [0.299, 0.587, 0.114],
            c @ [0.2126, 0.7152, 0.0722],
            rgb2lab(c[None])[0, :, 0] / 100,
        ]
    )


def assert_sorted_by_luminance(colors_uint8: np.ndarray, margin: float = 0.01) -> None:
    """Label 0 is the darkest. The contract does not name the luminance formula, so a pair
    counts as out of order only if every usual formula agrees it is (by more than `margin`)."""
    lum = luminances(colors_uint8)
    n = lum.shape[1]
    bad = [
        (i, j) for i in range(n) for j in range(i + 1, n) if np.all(lum[:, i] > lum[:, j] + margin)
    ]
    assert not bad, f"palette not sorted dark -> light, out-of-order label pairs {bad}"


def assert_consistent(result, image: np.ndarray) -> None:
    """Contract invariants of an RGB(A) uint8 result (channel last)."""
    pal = result.palette
    assert result.image.shape == image.shape and result.image.dtype == image.dtype
    assert result.labels.shape == image.shape[:-1]
    assert result.labels.dtype == np.uint8
    assert pal.colors.dtype == image.dtype
    assert pal.counts.dtype == np.int64
    assert 0 <= result.labels.min() and result.labels.max() == len(pal) - 1
    np.testing.assert_array_equal(result.image[..., :3], pal.colors[result.labels])
    np.testing.assert_array_equal(pal.counts, np.bincount(result.labels.ravel()))


# ---------------------------------------------------------------------------------------------
# Exactness against scikit-learn: same start -> same Lloyd iterations.


@pytest.mark.parametrize("k", [3, 6, 11])
def test_init_array_reproduces_sklearn_lloyd_exactly(k):
    """Same start -> the same Lloyd trajectory as scikit-learn on every pixel.

    What is exactly comparable: the centres (ours are sklearn's rounded to uint8) and the
    iteration count. Labels are NOT sklearn's: the core relabels every pixel to its nearest
    *rounded* colour (lower MSE, same as apply_palette), so a pixel can only change sides if
    it lies within sqrt(3) (the rounding budget of two centres) of sklearn's float bisector.
    """
    img = crop("chelsea")
    pixels = img.reshape(-1, 3).astype(np.float64)
    # k distinct colours of the image as the common start (in the input's units).
    uniq = np.unique(pixels, axis=0)
    init = uniq[np.random.default_rng(k).choice(len(uniq), size=k, replace=False)]

    res = quantize(img, k, init=init, n_init=1, tol=0, max_iter=1000)
    km = KMeans(n_clusters=k, init=init, n_init=1, tol=0, max_iter=1000).fit(pixels)
    assert km.n_iter_ < 1000  # both ran to strict convergence, not to the iteration cap
    assert res.n_iter == km.n_iter_
    assert len(res.palette) == k

    # 1. Centres. Rounding is only well defined away from .5; no centre is within 1e-6 of a
    #    tie here, so the rounded sets must be identical.
    centres = km.cluster_centers_
    assert np.min(np.abs(centres - np.floor(centres) - 0.5)) > 1e-6
    rounded = np.round(centres).astype(np.uint8)
    order = [int(np.flatnonzero((rounded == c).all(axis=1))[0]) for c in res.palette.colors]
    assert sorted(order) == list(range(k)), (res.palette.colors, rounded)
    np.testing.assert_array_equal(res.palette.colors, rounded[order])  # our label -> sklearn's

    # 2. Labels: every pixel carries a nearest palette colour (ties either way), counts agree.
    ours = res.labels.ravel().astype(np.intp)
    d2 = ((pixels[:, None] - res.palette.colors[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(d2[np.arange(len(pixels)), ours], d2.min(axis=1))
    np.testing.assert_array_equal(res.palette.counts, np.bincount(ours, minlength=k))

    # 3. Side changes against sklearn's partition are confined to the rounding band.
    theirs = np.asarray(order)[ours]  # our labels in sklearn's numbering
    moved = theirs != km.labels_
    dist = np.sqrt(((pixels[:, None] - centres[None]) ** 2).sum(-1))
    gap = dist[moved, theirs[moved]] - dist[moved, km.labels_[moved]]
    assert np.all(gap <= np.sqrt(3) + 1e-9), gap.max()
    assert moved.mean() < 0.005

    # 4. Error. The rounded palette with nearest assignment is no worse than sklearn's
    #    partition painted with the same rounded colours; mse is that SSE per value.
    sse = np.sum((pixels - res.palette.colors[ours]) ** 2)
    assert sse <= np.sum((pixels - rounded[km.labels_]) ** 2)
    assert res.mse == pytest.approx(sse / pixels.size, rel=1e-12)
    # On sklearn's own partition, float centroids give exactly sklearn's inertia.
    means = np.stack([pixels[km.labels_ == c].mean(axis=0) for c in range(k)])
    assert np.sum((pixels - means[km.labels_]) ** 2) == pytest.approx(km.inertia_, rel=1e-9)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_converged_result_is_nearest_colour_and_near_cluster_mean(name):
    """tol=0: every pixel carries a nearest palette colour (ties allowed), and every colour
    is its cluster's mean up to rounding plus the few boundary pixels moved by rounding."""
    img = crop(name)
    res = quantize(img, 7, tol=0, max_iter=1000)
    px = img.reshape(-1, 3).astype(np.float64)
    lab = res.labels.ravel().astype(np.intp)
    d2 = ((px[:, None, :] - res.palette.colors[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(d2[np.arange(len(px)), lab], d2.min(axis=1))
    means = np.stack([px[lab == c].mean(axis=0) for c in range(len(res.palette))])
    assert np.all(np.abs(res.palette.colors - means) <= 1.0), res.palette.colors - means


# ---------------------------------------------------------------------------------------------
# Greyscale: 1-D k-means minimises within-class variance, i.e. it is multi-Otsu.


def _trimodal() -> np.ndarray:
    rng = np.random.default_rng(12345)
    modes = rng.choice([40.0, 120.0, 200.0], size=(96, 128), p=[0.5, 0.3, 0.2])
    return np.clip(np.round(modes + rng.normal(0, 12, modes.shape)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("image", "k"),
    [
        pytest.param(data.camera, 2, id="camera-2"),
        pytest.param(data.camera, 3, id="camera-3"),
        pytest.param(data.coins, 2, id="coins-2"),
        pytest.param(_trimodal, 3, id="gaussian-modes-3"),
    ],
)
def test_greyscale_matches_multiotsu(image, k):
    img = image()
    res = quantize(img, k)  # a 2-D array is always greyscale
    assert res.labels.shape == img.shape and res.image.shape == img.shape
    assert res.palette.colors.shape == (k, 1)
    # Labels sorted by intensity, so label i is Otsu class i. Otsu puts `x > t` in the upper
    # class, i.e. digitize(..., right=True).
    classes = np.digitize(img, threshold_multiotsu(img, classes=k), right=True)
    agreement = np.mean(res.labels == classes)
    assert agreement >= 0.99, agreement
    np.testing.assert_array_equal(np.diff(res.palette.colors[:, 0].astype(int)) > 0, True)
    # Same result whether greyscale is inferred (2-D) or requested (channel_axis=None).
    res_none = quantize(img, k, channel_axis=None)
    np.testing.assert_array_equal(res_none.labels, res.labels)
    np.testing.assert_array_equal(res_none.image, res.image)


# ---------------------------------------------------------------------------------------------
# Real colour photographs: metrics, ordering, quality.


@pytest.mark.parametrize("name", IMAGES)
def test_metrics_and_invariants_on_real_photo(name):
    img = crop(name, scale=2)  # 120 x 160
    res = quantize(img, 8)
    assert_consistent(res, img)
    assert len(res.palette) == 8
    assert res.mse == pytest.approx(mean_squared_error(img, res.image), rel=1e-12)
    assert res.psnr == pytest.approx(
        peak_signal_noise_ratio(img, res.image, data_range=255), rel=1e-12
    )
    assert res.n_input_colors == n_distinct(img)
    assert_sorted_by_luminance(res.palette.colors)
    assert res.n_iter >= 1  # summed over the k-means++ starts, so it may exceed max_iter


@pytest.mark.parametrize("k", [2, 5, 16])
@pytest.mark.parametrize("name", IMAGES)
def test_mse_not_worse_than_sklearn_kmeans(name, k):
    img = crop(name)
    px = img.reshape(-1, 3).astype(np.float64)
    km = KMeans(n_clusters=k, n_init=1, random_state=0).fit(px)
    centres = np.clip(np.round(km.cluster_centers_), 0, 255).astype(np.uint8)
    ref_mse = mean_squared_error(img.reshape(-1, 3), centres[km.labels_])
    res = quantize(img, k)
    # Both are local optima of the same objective; 0.5 % covers seed luck, not a worse method.
    assert res.mse <= ref_mse * 1.005, (res.mse, ref_mse)


def test_rgba_alpha_copied_and_transparent_pixels_do_not_vote():
    rgb = crop("chelsea", scale=2)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[::3] = 128  # semi-transparent rows still vote
    rgb[40:100, 50:130] = (255, 0, 255)  # a third of the image loud magenta ...
    alpha[40:100, 50:130] = 0  # ... that is invisible
    rgba = np.dstack([rgb, alpha])

    res = quantize(rgba, 3)
    assert res.image.shape == rgba.shape
    np.testing.assert_array_equal(res.image[..., 3], alpha)
    np.testing.assert_array_equal(res.image[..., :3], res.palette.colors[res.labels])
    assert res.palette.colors.shape == (3, 3)  # alpha is not a colour channel
    # A voting magenta block would take one of 3 clusters; chelsea has nothing near it.
    dist_to_magenta = np.abs(res.palette.colors.astype(int) - [255, 0, 255]).max(axis=1)
    assert dist_to_magenta.min() > 60, res.palette.colors
    # The palette is the one fitted on the visible pixels only (weighted mean for k=1).
    one = quantize(rgba, 1)
    visible = rgb[alpha > 0].astype(np.float64)
    assert np.all(np.abs(one.palette.colors[0] - visible.mean(axis=0)) <= 0.5 + 1e-9)


def test_stack_shares_one_palette_like_frames_side_by_side():
    frames = [crop(name) for name in ("chelsea", "coffee", "china")]
    stack = np.stack(frames)  # (T, Y, X, 3)
    side_by_side = np.concatenate(frames, axis=1)  # (Y, 3X, 3): a different pixel order

    res_stack = quantize(stack, 6)
    res_flat = quantize(side_by_side, 6)
    np.testing.assert_array_equal(res_stack.palette.colors, res_flat.palette.colors)
    np.testing.assert_array_equal(res_stack.palette.counts, res_flat.palette.counts)
    assert res_stack.labels.shape == stack.shape[:-1]
    np.testing.assert_array_equal(res_stack.labels, np.stack(np.split(res_flat.labels, 3, axis=1)))
    assert res_stack.mse == pytest.approx(res_flat.mse, rel=1e-12)


def test_greyscale_z_stack_shares_one_palette():
    img = data.camera()[::4, ::4]
    zstack = np.stack([img, img[::-1], img.T])  # (Z, Y, X): every element is a pixel
    res = quantize(zstack, 4, channel_axis=None)
    flat = quantize(zstack.reshape(-1, zstack.shape[-1]), 4)
    assert res.labels.shape == zstack.shape
    np.testing.assert_array_equal(res.palette.colors, flat.palette.colors)
    np.testing.assert_array_equal(res.labels.reshape(flat.labels.shape), flat.labels)


@pytest.mark.parametrize("space", ["lab", "oklab"])
def test_perceptual_color_spaces_return_input_units(space):
    assert space in COLOR_SPACES
    img = crop("astronaut", scale=2)
    res = quantize(img, 8, color_space=space)
    assert_consistent(res, img)
    assert res.palette.color_space == space
    assert res.params["color_space"] == space
    assert_sorted_by_luminance(res.palette.colors)
    # A perceptual fit is not optimal in RGB, but it is a sensible quantisation.
    rgb = quantize(img, 8)
    assert res.mse < 2 * rgb.mse
    assert res.mse == pytest.approx(mean_squared_error(img, res.image), rel=1e-12)


@pytest.mark.parametrize("space", ["rgb", "lab", "oklab"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gamut_corners_survive_colour_space_round_trip(space, dtype):
    """With as many clusters as colours the palette is exactly the input colours: the
    RGB -> Lab -> RGB round trip (and clipping at 0 / max) must not shift a colour by 1."""
    top = np.iinfo(dtype).max
    corners = np.array(
        [[0, 0, 0], [top, top, top], [top, 0, 0], [0, top, 0], [0, 0, top], [top, top, 0],
         [0, top, top], [top, 0, top], [1, 2, 3], [top - 1, top - 2, top - 3]],
        dtype=dtype,
    )  # fmt: skip
    img = np.repeat(corners[None], 7, axis=0)  # (7, 10, 3)
    res = quantize(img, len(corners), color_space=space)
    np.testing.assert_array_equal(np.unique(res.palette.colors, axis=0), np.unique(corners, axis=0))
    np.testing.assert_array_equal(res.image, img)
    assert res.mse == 0


def test_apply_palette_to_another_photo_uses_nearest_palette_colour():
    palette = quantize(crop("chelsea", scale=2), 6).palette
    other = crop("coffee", scale=2)
    res = apply_palette(other, palette)
    assert res.image.shape == other.shape and res.image.dtype == other.dtype
    assert res.labels.shape == other.shape[:2]
    assert np.all(res.labels < len(palette))
    np.testing.assert_array_equal(res.palette.colors, palette.colors)
    np.testing.assert_array_equal(res.image, palette.colors[res.labels])
    # Every pixel got a nearest palette colour (ties may go either way).
    px = other.reshape(-1, 3).astype(np.float64)
    d2 = ((px[:, None] - palette.colors[None].astype(np.float64)) ** 2).sum(-1)
    chosen = d2[np.arange(len(px)), res.labels.ravel()]
    np.testing.assert_array_equal(chosen, d2.min(axis=1))
    assert res.mse == pytest.approx(mean_squared_error(other, res.image), rel=1e-12)


def test_fit_palette_is_the_palette_quantize_uses():
    img = crop("china")
    kwargs = dict(n_colors=5, random_state=3)
    fitted, used = fit_palette(img, **kwargs), quantize(img, **kwargs).palette
    np.testing.assert_array_equal(fitted.colors, used.colors)
    np.testing.assert_array_equal(fitted.counts, used.counts)


def test_single_colour_is_the_pixel_weighted_mean():
    # 90 % near-black and 10 % near-white pixels: the pixel-weighted mean (~ 28) is far from the
    # mean of the two distinct colours (~ 128), so this catches an unweighted histogram mean.
    img = np.zeros((20, 30, 3), np.uint8)
    img[:] = (3, 5, 7)
    img[:2] = (250, 240, 230)
    res = quantize(img, 1)
    mean = img.reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert res.palette.colors.shape == (1, 3)
    assert np.all(np.abs(res.palette.colors[0] - mean) <= 0.5 + 1e-9), (res.palette.colors, mean)
    np.testing.assert_array_equal(res.labels, 0)
    assert res.palette.counts.tolist() == [600]
    # On a real photo too.
    photo = crop("coffee")
    one = quantize(photo, 1)
    mean = photo.reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert np.all(np.abs(one.palette.colors[0] - mean) <= 0.5 + 1e-9)


# ---------------------------------------------------------------------------------------------
# Parameters, serialisation, progress.


def _call_kwargs(params: dict) -> dict:
    accepted = inspect.signature(quantize).parameters
    return {k: v for k, v in params.items() if k in accepted and k != "image"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"random_state": 7},
        {"random_state": np.int64(7)},
        {"random_state": np.random.default_rng(7)},
        {"random_state": np.random.RandomState(7)},
        {"channel_axis": np.int64(-1), "alpha": np.bool_(False), "max_iter": np.int16(300)},
    ],
    ids=["int", "np.int64", "Generator", "RandomState", "numpy-scalars"],
)
def test_params_are_json_and_reproduce_the_result(kwargs):
    # One k-means++ start with k=12 on this crop: every seed gives a different palette (checked
    # below), so reproducing the result really needs the seed that was used.
    img = crop("astronaut")
    kwargs = {"n_init": 1, **kwargs}
    res = quantize(img, np.int64(12), **kwargs)  # numpy ints are ints
    params = json.loads(json.dumps(res.params))  # must be JSON-able (no numpy scalars)
    assert params["n_colors"] == 12
    other_seed = quantize(img, 12, n_init=1, random_state=12345)
    assert not np.array_equal(other_seed.palette.colors, res.palette.colors)
    again = quantize(img, **_call_kwargs(params))
    np.testing.assert_array_equal(again.palette.colors, res.palette.colors)
    np.testing.assert_array_equal(again.labels, res.labels)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_palette_dict_round_trip_through_json(dtype):
    img = crop("chelsea").astype(dtype)
    if np.dtype(dtype).kind == "f":
        img /= 255
    pal = quantize(img, 6, color_space="lab").palette
    back = Palette.from_dict(json.loads(json.dumps(pal.to_dict())))
    assert back.colors.dtype == pal.colors.dtype
    np.testing.assert_array_equal(back.colors, pal.colors)
    np.testing.assert_array_equal(back.counts, pal.counts)
    assert back.counts.dtype == np.int64
    assert back.color_space == "lab" and len(back) == len(pal)


def test_progress_is_reported_in_order():
    calls = []
    quantize(crop("chelsea"), 4, progress=lambda f, m: calls.append((f, m)))
    assert calls, "progress was never called"
    fractions = [f for f, _ in calls]
    assert all(isinstance(m, str) for _, m in calls)
    assert all(0.0 <= f <= 1.0 for f in fractions), fractions
    assert fractions == sorted(fractions), "progress went backwards"


class _Cancelled(Exception):
    pass


@pytest.mark.parametrize("func", ["quantize", "fit_palette", "apply_palette"])
def test_exception_in_progress_cancels(func):
    """The widget cancels by raising from the callback: the exception must propagate."""

    def cancel(fraction, message):
        raise _Cancelled

    img = crop("chelsea")
    with pytest.raises(_Cancelled):
        if func == "apply_palette":
            apply_palette(img, quantize(img, 4).palette, progress=cancel)
        else:
            {"quantize": quantize, "fit_palette": fit_palette}[func](img, 4, progress=cancel)


# ---------------------------------------------------------------------------------------------
# Edge cases of the contract.


def test_more_than_256_colours_give_uint16_labels():
    rng = np.random.default_rng(0)
    img = rng.permutation(np.arange(30 * 30 * 3) % 256).reshape(30, 30, 3).astype(np.uint8)
    res = quantize(img, 300)
    assert len(res.palette) == 300
    assert res.labels.dtype == np.uint16
    assert res.labels.max() == 299
    np.testing.assert_array_equal(res.image, res.palette.colors[res.labels])
    assert MAX_N_COLORS == 4096


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
)
def test_extreme_integer_values_survive(dtype):
    """dtype min / max must come back exactly (no wrap-around, no float overflow on the cast
    back, e.g. float(2**64 - 1) == 2**64 does not fit in uint64)."""
    info = np.iinfo(dtype)
    grey = np.array([[info.min, info.max], [info.max, info.min], [0, info.max]], dtype=dtype)
    res = quantize(grey, 3)
    assert res.image.dtype == dtype
    np.testing.assert_array_equal(res.image, grey)
    np.testing.assert_array_equal(np.sort(res.palette.colors[:, 0]), np.unique(grey))
    assert res.mse == 0
    two = quantize(grey, 2)  # min vs the rest: must stay within the dtype
    assert two.image.dtype == dtype
    assert two.image.min() >= info.min and two.image.max() <= info.max


def test_uint64_above_2_to_63_is_exact():
    top = np.uint64(2**63)
    grey = np.array([[top, top + np.uint64(5)], [top + np.uint64(9), top]], np.uint64)
    res = quantize(grey, 3)
    np.testing.assert_array_equal(res.image, grey)


@pytest.mark.parametrize("hot", [1e3, 1e5])
def test_one_hot_pixel_does_not_wreck_a_float_image(hot):
    """Float microscopy / HDR data have outliers. One hot pixel must cost one cluster at most,
    not the resolution of every other pixel, and `mse` must be the error of `image`."""
    img = crop("chelsea").astype(np.float32) / 255
    img[0, 0] = hot
    res = quantize(img, 8)
    true_mse = np.mean((img.astype(np.float64) - res.image.astype(np.float64)) ** 2)
    assert res.mse == pytest.approx(true_mse, rel=1e-6)
    # Error on the ordinary pixels vs scikit-learn on every pixel (which also spends one of
    # its 8 clusters on the hot pixel).
    px = img.reshape(-1, 3).astype(np.float64)
    km = KMeans(n_clusters=8, n_init=4, random_state=0).fit(px)
    ref = np.mean((px[1:] - km.cluster_centers_[km.labels_][1:]) ** 2)
    ours = np.mean((px[1:] - res.image.reshape(-1, 3)[1:].astype(np.float64)) ** 2)
    assert ours <= 1.05 * ref, (ours, ref)


def test_zero_error_gives_infinite_psnr_without_warnings():
    img = np.zeros((8, 8, 3), np.uint8)
    img[:4] = (10, 200, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = quantize(img, 5)
    assert len(res.palette) == 2
    assert res.mse == 0 and res.psnr == math.inf


def test_float_image_psnr_uses_value_range():
    img = crop("coffee").astype(np.float32) / 255 * 0.5 + 0.25  # values in [0.25, 0.75]
    res = quantize(img, 6)
    assert res.palette.colors.dtype == np.float32 and res.image.dtype == np.float32
    drange = float(img.max()) - float(img.min())
    assert res.mse == pytest.approx(mean_squared_error(img, res.image), rel=1e-5)
    assert res.psnr == pytest.approx(
        peak_signal_noise_ratio(img, res.image, data_range=drange), rel=1e-5
    )


def test_uint16_psnr_uses_dtype_range():
    img = crop("coffee").astype(np.uint16) * 257
    res = quantize(img, 6)
    assert res.psnr == pytest.approx(
        peak_signal_noise_ratio(img, res.image, data_range=65535), rel=1e-12
    )


@pytest.mark.parametrize(
    "variant", ["big-endian", "fortran", "reversed-view", "channel-first", "nested-list"]
)
def test_memory_layout_does_not_change_the_result(variant):
    """Same pixels, different memory: byte order, strides, axis order or a Python list must
    give the same palette and the same labels (pixel order never matters for the fit)."""
    img = crop("astronaut")
    ref = quantize(img, 5)
    flip = slice(None)
    if variant == "big-endian":
        res = quantize(img.astype(">u2"), 5)
    elif variant == "fortran":
        res = quantize(np.asfortranarray(img), 5)
    elif variant == "reversed-view":
        flip = slice(None, None, -1)
        res = quantize(img[flip, flip], 5)
    elif variant == "channel-first":
        res = quantize(np.moveaxis(img, -1, 0), 5, channel_axis=0)
        assert res.image.shape == (3, *img.shape[:2])
        np.testing.assert_array_equal(np.moveaxis(res.image, 0, -1), ref.image)
    else:
        res = quantize(img.tolist(), 5)
    np.testing.assert_array_equal(res.palette.colors, ref.palette.colors)
    np.testing.assert_array_equal(res.labels, ref.labels[flip, flip])


def test_many_channels_do_not_allocate_a_dense_grid():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 120, 12)).astype(np.uint8)
    result = quantize(image, 6)
    assert result.palette.colors.shape == (6, 12)


def test_large_k_swap_search_stays_bounded():
    # k x k x C temporaries made k=4096 take over 1 GB; above 512 the swap is skipped.
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
    result = quantize(image, 600, n_init=1)
    assert len(result.palette) <= 600
