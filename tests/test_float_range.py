"""Property tests over the float range for every public function (issue 17).

float32 and float64 images with tiny (subnormal), huge (up to and beyond the refused
+-1e140) and moderate magnitudes, mixed signs, constant images and values spanning many
decades go through ``quantize``, ``fit_palette``, ``apply_palette``, every
``QuantizeResult`` method and the estimator's fit / predict / transform / score.  Each gives
either a finite result that looks right (palette within the data's range, every pixel on its
nearest colour, metrics that agree with the returned image, no colours merged that ``k``
could keep apart) or the library's own error naming the range -- never a raw OverflowError,
a warning, a NaN, or a silent one-colour result.
"""

from __future__ import annotations

import math
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from napari_kmeans_filter import Palette, apply_palette, fit_palette, quantize
from napari_kmeans_filter._contract import InvalidParameterError
from napari_kmeans_filter._validation import MAX_FLOAT_MAGNITUDE, MIN_FLOAT_SPREAD

# The same examples on every run and machine (CI included): a failure found once is found
# again, and no run fails by the luck of the draw.
FAST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)

#: Magnitudes that matter to float arithmetic: subnormals, the smallest normal number, the
#: squares' underflow (~1e-154) and overflow (~1e154) points, the refused limit and beyond.
MAGNITUDES = {
    np.dtype(np.float64): [
        5e-324,
        1e-320,
        2.2250738585072014e-308,
        1e-300,
        1e-200,
        1e-160,
        1e-140,
        1e-100,
        1e-20,
        1.0,
        1e20,
        1e100,
        1e139,
        1e140,
        1.5e140,
        1e141,
        1e200,
        1e300,
    ],
    np.dtype(np.float32): [1.4e-45, 1e-40, 1.1754944e-38, 1e-30, 1e-10, 1.0, 1e20, 1e30, 3e38],
}
MODES = ["positive", "mixed signs", "constant", "decades", "any finite"]


def out_of_range(low: float, high: float) -> bool:
    """Whether the core may refuse values in ``[low, high]`` (naming the range)."""
    return max(abs(low), abs(high)) > MAX_FLOAT_MAGNITUDE or tiny_spread(low, high)


def tiny_spread(low: float, high: float) -> bool:
    return 0 < high - low < MIN_FLOAT_SPREAD


@st.composite
def tables(draw, dtype: np.dtype, n_channels: int) -> np.ndarray:
    """A small table of distinct-ish colours of one magnitude and mode, as float64."""
    magnitude = draw(st.sampled_from(MAGNITUDES[dtype]))
    mode = draw(st.sampled_from(MODES))
    n = 1 if mode == "constant" else draw(st.integers(1, 8))
    shape = (n, n_channels)
    if mode == "positive":
        table = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 8))) * magnitude
    elif mode == "mixed signs":
        table = draw(hnp.arrays(np.int64, shape, elements=st.integers(-4, 4))) * magnitude
    elif mode == "constant":
        table = np.full(shape, draw(st.sampled_from([-1.0, 1.0])) * magnitude)
    elif mode == "decades":
        exponents = draw(hnp.arrays(np.int64, shape, elements=st.integers(-60, 0)))
        signs = draw(hnp.arrays(np.int64, shape, elements=st.sampled_from([-1, 1])))
        with np.errstate(under="ignore"):
            table = signs * magnitude * 10.0**exponents
    else:
        width = dtype.itemsize * 8
        finite = st.floats(allow_nan=False, allow_infinity=False, width=width)
        table = draw(hnp.arrays(np.float64, shape, elements=finite))
    return table


@st.composite
def images(draw, *, channels=(None, 3)) -> np.ndarray:
    """A float image ``table[index]``: repeated colours, any magnitude."""
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    n_channels = draw(st.sampled_from(channels))
    table = draw(tables(dtype, 1 if n_channels is None else n_channels))
    with np.errstate(over="ignore", under="ignore"):
        table = table.astype(dtype)
    assume(np.isfinite(table).all())
    shape = (draw(st.integers(1, 6)), draw(st.integers(2, 6)))
    index = draw(hnp.arrays(np.intp, shape, elements=st.integers(0, len(table) - 1)))
    image = table[index]
    return image[..., 0] if n_channels is None else image


def pixels(image: np.ndarray) -> np.ndarray:
    """The image's colours as float64 rows ``(n, C)``."""
    colour = image[..., None] if image.ndim == 2 else image
    return colour.reshape(-1, colour.shape[-1]).astype(np.float64)


def data_range(image: np.ndarray) -> tuple[float, float]:
    values = image.astype(np.float64)
    return float(values.min()), float(values.max())


def slack(image: np.ndarray) -> float:
    """A few units in the last place of the image's largest magnitude (rounded means)."""
    low, high = data_range(image)
    return 4 * float(np.spacing(image.dtype.type(max(abs(low), abs(high)))))


def power_of_two_exponent(*arrays: np.ndarray) -> int:
    """``e`` such that ``2**e`` (exact, and finite) brings the largest magnitude of ``arrays``
    near 1."""
    largest = max(float(np.max(np.abs(a.astype(np.float64)))) for a in arrays if a.size)
    return 0 if largest == 0 else min(max(-math.frexp(largest)[1], -1020), 1020)


def calling(function, *args, **kwargs):
    """``function(*args, **kwargs)`` with every warning an error (valid input must not warn)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function(*args, **kwargs)


def assert_refusal_names_the_range(error: Exception, image: np.ndarray, name="image") -> None:
    """A refusal: the library's own error, naming the parameter and the range, and due."""
    assert isinstance(error, InvalidParameterError), repr(error)
    assert error.parameter == name, error
    assert "range" in str(error) or "spread" in str(error), error
    assert out_of_range(*data_range(image)), f"{error} for values in {data_range(image)}"


def assert_palette_looks_right(colors: np.ndarray, image: np.ndarray, k: int) -> None:
    low, high = data_range(image)
    distinct = np.unique(pixels(image), axis=0)
    assert colors.dtype == image.dtype
    assert np.isfinite(colors).all(), colors
    tolerance = slack(image)
    values = colors.astype(np.float64)
    assert values.min() >= low - tolerance and values.max() <= high + tolerance, (
        f"palette {values.tolist()} outside the data's range [{low!r}, {high!r}]"
    )
    assert 1 <= len(colors) <= min(k, len(distinct))
    if len(distinct) >= 2 and k >= 2:
        assert len(colors) >= 2, f"{len(distinct)} distinct colours became one at k={k}"
    if len(distinct) <= k:  # every colour kept exactly
        np.testing.assert_array_equal(np.unique(colors.astype(np.float64), axis=0), distinct)


def assert_nearest(labels: np.ndarray, colors: np.ndarray, image: np.ndarray) -> None:
    """Every pixel is on (one of) its nearest palette colours, measured without overflow or
    underflow (both scaled by the same exact power of two)."""
    scale = math.ldexp(1.0, power_of_two_exponent(image, colors))
    rows = pixels(image) * scale
    centres = colors.astype(np.float64) * scale
    distances = ((rows[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)
    chosen = distances[np.arange(len(rows)), labels.reshape(-1)]
    spread = max(float(np.ptp(rows)), float(np.ptp(centres)), 1e-300)
    assert np.all(chosen <= distances.min(axis=1) + 1e-9 * spread**2), "a pixel off its nearest"


def assert_result_looks_right(result, image: np.ndarray, k: int, *, dithered: bool) -> None:
    colors = result.palette.colors
    labels = np.asarray(result.labels)
    out = np.asarray(result.image)
    assert labels.shape == image.shape[:2] and labels.dtype.kind == "u"
    assert labels.min() >= 0 and labels.max() < len(colors)
    assert out.shape == image.shape and out.dtype == image.dtype
    np.testing.assert_array_equal(pixels(out), colors.astype(np.float64)[labels.reshape(-1)])
    assert result.palette.counts.sum() == labels.size
    np.testing.assert_array_equal(
        np.bincount(labels.reshape(-1), minlength=len(colors)), result.palette.counts
    )
    if not dithered:
        assert_nearest(labels, colors, image)
    # Metrics: finite, and the error of the returned image (computed at a safe scale).
    assert math.isfinite(result.mse) and result.mse >= 0
    assert not math.isnan(result.psnr) and (result.mse == 0 or math.isfinite(result.psnr))
    exponent = power_of_two_exponent(image)
    scale = math.ldexp(1.0, exponent)
    scaled_mse = float(np.mean((pixels(image) * scale - pixels(out) * scale) ** 2))
    expected = math.ldexp(scaled_mse, -2 * exponent)
    assert result.mse == pytest.approx(expected, rel=1e-6, abs=1e-300)
    assert_stats_look_right(result, image)


def assert_stats_look_right(result, image: np.ndarray) -> None:
    low, high = data_range(image)
    tolerance = slack(image)
    counts = result.palette.counts
    used = counts > 0
    for frame_axis in (None, 0, 1):
        stats = calling(result.cluster_stats, frame_axis=frame_axis)
        np.testing.assert_array_equal(stats["count"], counts)
        assert stats["fraction"].sum() == pytest.approx(1.0)
        for key, column in stats.items():
            if key.startswith("mean_"):
                assert np.isfinite(column[used]).all(), (key, column)
                assert column[used].min() >= low - tolerance, (key, column, low)
                assert column[used].max() <= high + tolerance, (key, column, high)
        rms = stats["rms_error"][used]
        assert np.isfinite(rms).all() and (rms >= 0).all(), rms
        if frame_axis is not None:
            np.testing.assert_array_equal(stats["frame_counts"].sum(axis=1), counts)


# ------------------------------------------------------------------------------ properties


@FAST
@given(images(), st.integers(1, 6), st.booleans())
def test_quantize_and_its_result_methods_over_the_float_range(image, k, dither):
    try:
        result = calling(quantize, image, k, dither=dither, random_state=0)
    except (ValueError, TypeError) as error:
        assert_refusal_names_the_range(error, image)
        return
    assert_palette_looks_right(result.palette.colors, image, k)
    assert_result_looks_right(result, image, k, dithered=dither)


@FAST
@given(images(), st.integers(1, 6))
def test_fit_palette_over_the_float_range(image, k):
    try:
        palette = calling(fit_palette, image, k, random_state=0)
    except (ValueError, TypeError) as error:
        assert_refusal_names_the_range(error, image)
        return
    assert_palette_looks_right(palette.colors, image, k)
    assert palette.counts.sum() == image.shape[0] * image.shape[1]


@FAST
@given(images(), st.booleans(), st.data())
def test_apply_palette_over_the_float_range(image, dither, data):
    """A palette of colours the image holds, or of its range's ends, repaints it."""
    low, high = data_range(image)
    rows = pixels(image)
    picked = data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=4))
    ends = np.array([[low]] if low == high else [[low], [high]])
    colors = rows[picked] if data.draw(st.booleans()) else ends
    colors = np.broadcast_to(colors, (len(colors), rows.shape[1])).astype(image.dtype)
    palette = Palette(colors, np.ones(len(colors), np.int64))
    try:
        result = calling(apply_palette, image, palette, dither=dither)
    except (ValueError, TypeError) as error:
        assert_refusal_names_the_range(error, image)
        return
    np.testing.assert_array_equal(result.palette.colors, colors)
    assert_result_looks_right(result, image, len(colors), dithered=dither)


@FAST
@given(images(channels=(1, 3)), st.integers(1, 4), st.data())
def test_estimator_over_the_float_range(image, n_clusters, data):
    from sklearn.exceptions import ConvergenceWarning

    from napari_kmeans_filter import KMeansQuantizer

    X = pixels(image).astype(image.dtype)
    assume(len(X) >= n_clusters)
    n_distinct = len(np.unique(X, axis=0))
    estimator = KMeansQuantizer(n_clusters=n_clusters, random_state=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            if n_distinct < n_clusters:  # as scikit-learn's KMeans says
                warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(X)
    except (ValueError, TypeError) as error:
        # Through the engine, so the refusal names its 'image' (X here).
        assert_refusal_names_the_range(error, image, name=error.parameter)
        return
    centres = estimator.cluster_centers_
    assert centres.shape == (n_clusters, X.shape[1])
    assert_palette_looks_right(np.unique(centres, axis=0), image, n_clusters)
    labels = calling(estimator.predict, X)
    np.testing.assert_array_equal(labels, estimator.labels_)
    assert_nearest(labels, centres, image)
    distances = calling(estimator.transform, X)
    assert distances.shape == (len(X), n_clusters)
    assert np.isfinite(distances).all() and (distances >= 0).all()
    score = calling(estimator.score, X)
    assert math.isfinite(score) and score <= 0
    assert math.isfinite(estimator.inertia_)
    assert -score == pytest.approx(estimator.inertia_, rel=1e-9, abs=1e-300)
    method = data.draw(st.sampled_from(["fit_predict", "fit_transform"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again = getattr(KMeansQuantizer(n_clusters=n_clusters, random_state=0), method)(X)
    assert np.isfinite(np.asarray(again, dtype=np.float64)).all()


@FAST
@given(
    hnp.arrays(
        np.int64,
        st.tuples(st.integers(2, 5), st.integers(2, 5), st.just(3)),
        elements=st.integers(-40, 40),
    ),
    st.sampled_from([np.float32, np.float64]),
    st.integers(1, 6),
    st.data(),
)
def test_scaling_by_a_power_of_two_scales_the_result(table_image, dtype, k, data):
    """quantize(image * 2**j) is quantize(image) * 2**j: same labels, scaled palette, same
    PSNR, while both stay normal numbers within the accepted range."""
    bounds = (-400, 400) if dtype is np.float64 else (-110, 110)
    j = data.draw(st.integers(*bounds))
    image = table_image.astype(dtype)
    scaled = (table_image * math.ldexp(1.0, j)).astype(dtype)
    reference = calling(quantize, image, k, random_state=0)
    result = calling(quantize, scaled, k, random_state=0)
    np.testing.assert_array_equal(result.labels, reference.labels)
    np.testing.assert_array_equal(
        result.palette.colors, (reference.palette.colors * dtype(math.ldexp(1.0, j)))
    )
    assert result.psnr == pytest.approx(reference.psnr, rel=1e-12)
    assert result.mse == pytest.approx(math.ldexp(reference.mse, 2 * j), rel=1e-12)


@pytest.mark.xfail(
    strict=True,
    reason="known: with k-means++ starts on this image, an odd power-of-two scale picks "
    "another start (a worse local optimum, MSE 2.10 against 1.73 per unit); even powers "
    "give the same result. Cause not yet found (found by the property above).",
)
def test_scaling_by_an_odd_power_of_two_keeps_the_labels():
    table = np.array([[[-2, 4, 4], [0, -1, 4], [4, -6, 4], [4, 4, 4], [4, 4, 4]], [[4, 4, 4]] * 5])
    reference = quantize(table.astype(np.float32), 2, random_state=0)
    scaled = quantize((table * 2.0).astype(np.float32), 2, random_state=0)
    np.testing.assert_array_equal(scaled.labels, reference.labels)


# ------------------------------------------------------------------- the tiny-spread edge

#: Squared differences of float64 values this close underflow (to subnormals or 0).
TINY = [5e-324, 1e-320, 2.2250738585072014e-308, 1e-300, 1e-200, 1e-160]


def tiny_image(magnitude: float, signs: str) -> np.ndarray:
    """Six distinct colours, ``magnitude`` apart."""
    table = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [3, 3, 3], [4, 1, 0], [2, 4, 4]], float)
    if signs == "mixed":
        table -= 2
    index = np.arange(24).reshape(4, 6) % len(table)
    return table[index] * magnitude


@pytest.mark.parametrize("signs", ["positive", "mixed"])
@pytest.mark.parametrize(
    "magnitude",
    TINY,
)
@pytest.mark.parametrize("function", ["quantize", "fit_palette", "apply_palette", "estimator"])
def test_tiny_spreads_give_a_fit_or_name_the_range(function, magnitude, signs):
    """Six colours within 1e-159 of each other at k=3: three colours back (each pixel on its
    nearest), or a refusal naming the range -- never one colour, a raw error or a warning
    (their squared distances underflow to 0 in float64)."""
    image = tiny_image(magnitude, signs)
    rows = pixels(image)
    assert len(np.unique(rows, axis=0)) == 6
    try:
        if function == "quantize":
            result = calling(quantize, image, 3, random_state=0)
            assert_palette_looks_right(result.palette.colors, image, 3)
            assert_result_looks_right(result, image, 3, dithered=False)
            colors = result.palette.colors
        elif function == "fit_palette":
            colors = calling(fit_palette, image, 3, random_state=0).colors
        elif function == "apply_palette":
            palette = Palette(rows[[0, 3]])
            result = calling(apply_palette, image, palette)
            assert_result_looks_right(result, image, 2, dithered=False)
            return
        else:
            from napari_kmeans_filter import KMeansQuantizer

            estimator = calling(KMeansQuantizer(n_clusters=3, random_state=0).fit, rows)
            colors = estimator.cluster_centers_
            assert_nearest(estimator.labels_, colors, image)
    except (ValueError, TypeError) as error:
        assert_refusal_names_the_range(error, image, name=getattr(error, "parameter", "image"))
        return
    assert len(np.unique(colors, axis=0)) == 3, colors
    assert_palette_looks_right(np.unique(colors, axis=0), image, 3)


@pytest.mark.parametrize("magnitude", [1e141, 1e200, 1e300])
@pytest.mark.parametrize("method", ["predict", "transform", "score"])
def test_estimator_refuses_rows_beyond_the_range_after_a_fit(method, magnitude):
    """Rows far beyond the fitted data: right (nearest labels, finite distances and score) or
    refused naming the range.  Beyond ~1e154 their squared distances overflow: every distance
    inf, every label 0."""
    from napari_kmeans_filter import KMeansQuantizer

    X = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [5.0, 5.0]])
    estimator = KMeansQuantizer(n_clusters=2, random_state=0).fit(X)
    far = np.array([[magnitude, 0.0], [-magnitude, 1.0]])
    try:
        out = calling(getattr(estimator, method), far)
    except (ValueError, TypeError) as error:
        assert "range" in str(error) and "X" in str(error), error
        return
    assert np.isfinite(np.asarray(out, dtype=np.float64)).all(), out
    if method == "predict":
        assert_nearest(out, estimator.cluster_centers_, far[:, None, :])


# ------------------------------------------------------------------------- weights' range

WEIGHT_MAGNITUDES = [5e-324, 1e-300, 1e-20, 1.0, 2.0**32, 1e10, 1e300, 1.7e308]


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("spread", ["constant", "mixed with 1"])
@pytest.mark.parametrize("magnitude", WEIGHT_MAGNITUDES)
def test_sample_weights_over_the_float_range(magnitude, spread, lazy):
    """Weights from subnormal to the largest float: only their ratios matter.  Constant
    weights give the unweighted result; others a result that looks right; lazy weights
    numpy's result, or (beyond 2**32, whose rescaling needs the whole array) a refusal naming
    sample_weight and the range -- never an overflow warning or a NaN."""
    da = pytest.importorskip("dask.array")
    image = (np.random.default_rng(3).random((12, 10, 3)) * np.array([1, 1e-3, 1e3])).round(2)
    weight = np.full(image.shape[:2], magnitude)
    if spread != "constant":
        weight[::3] = 1.0
    expected = calling(quantize, image, 4, sample_weight=weight, random_state=0)
    if spread == "constant":
        unweighted = calling(quantize, image, 4, random_state=0)
        np.testing.assert_array_equal(expected.labels, unweighted.labels)
        # Means weighted by a constant other than a power of two: equal to rounding.
        np.testing.assert_allclose(expected.palette.colors, unweighted.palette.colors, rtol=1e-12)
    assert_palette_looks_right(expected.palette.colors, image, 4)
    assert_result_looks_right(expected, image, 4, dithered=False)
    if not lazy:
        return
    try:
        result = calling(
            quantize,
            da.from_array(image, chunks=(6, 5, 3)),
            4,
            sample_weight=da.from_array(weight, chunks=(6, 5)),
            random_state=0,
        )
        labels = np.asarray(result.labels)
    except InvalidParameterError as error:
        assert error.parameter == "sample_weight" and magnitude > 2.0**32, error
        assert "2**32" in str(error) and "ratios" in str(error), error
        return
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_array_equal(result.palette.colors, expected.palette.colors)


# ---------------------------------------------------------------------------- lazy images


@pytest.mark.parametrize("dither", [False, True])
@pytest.mark.parametrize("magnitude", [5e-324, 1e-300, 1e-160, 1e-140, 1.0, 1e139, 1.5e140, 1e300])
def test_lazy_images_over_the_float_range_behave_as_numpy(magnitude, dither):
    """A dask image (with a zero-size chunk) of any magnitude: numpy's result, or the same
    refusal naming the range (the range is read from the histogram, chunk by chunk)."""
    da = pytest.importorskip("dask.array")
    table = np.array([[0, 1, 2], [3, 0, 1], [2, 2, 0], [1, 3, 3], [4, 4, 1], [0, 4, 2]], float)
    image = (table - 2)[np.arange(48).reshape(6, 8) % len(table)] * magnitude
    lazy = da.from_array(image, chunks=((3, 0, 3), 8, 3))
    twin = da.from_array(image, chunks=(3, 8, 3))  # dithering diffuses within chunks
    try:
        expected = calling(quantize, twin if dither else image, 3, dither=dither, random_state=0)
    except ValueError as eager:
        with pytest.raises(ValueError) as refused:
            calling(quantize, lazy, 3, dither=dither, random_state=0)
        assert str(refused.value) == str(eager), refused.value
        return
    result = calling(quantize, lazy, 3, dither=dither, random_state=0)
    np.testing.assert_array_equal(np.asarray(result.labels), np.asarray(expected.labels))
    np.testing.assert_array_equal(result.palette.colors, expected.palette.colors)
    assert result.mse == expected.mse
