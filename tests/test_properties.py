"""Property tests (hypothesis) of the core contract over shapes, dtypes, channel layouts and k.

Images are drawn as `colours[index]` from a small random colour table so that repeated
colours, "fewer distinct colours than k" and dtype extremes all come up often.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from napari_kmeans_filter import quantize

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64]
EXACT_DTYPES = [np.uint8, np.uint16, np.int16]
FAST = settings(
    max_examples=50,
    deadline=None,
    # The same examples on every machine and run: CI must not fail by chance.
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No "explain" phase: it re-runs failing examples many times and only adds line numbers.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)


def values(dtype: np.dtype, *, positive: bool = False):
    """All values of an int dtype (extremes included); moderate finite floats."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return st.integers(1 if positive else int(info.min), int(info.max))
    width = dtype.itemsize * 8
    if positive:  # alpha
        return st.floats(0.0625, 1.0, width=width)
    # Tiny magnitudes become 0: an image whose values all lie within 1e-140 of each other
    # but are not equal is refused by contract (squared distances underflow), which
    # test_float_range.py checks; here the images must be accepted.
    return st.floats(-1e4, 1e4, width=width, allow_subnormal=False).map(
        lambda v: 0.0 if abs(v) < 1e-100 else v
    )


@dataclass
class Case:
    image: np.ndarray
    layout: str  # "grey" (channel_axis None/-1 on 2-D), "colour" (C on the last axis), "rgba"
    channel_axis: int | None
    k: int

    @property
    def colour(self) -> np.ndarray:
        """The colour channels as (..., C) (alpha excluded)."""
        if self.layout == "grey":
            return self.image[..., None]
        return self.image[..., :3] if self.layout == "rgba" else self.image

    @property
    def alpha(self) -> np.ndarray | None:
        return self.image[..., 3] if self.layout == "rgba" else None

    @property
    def distinct(self) -> np.ndarray:
        c = self.colour
        return np.unique(c.reshape(-1, c.shape[-1]), axis=0)


@st.composite
def cases(draw, *, dtypes=DTYPES, channels=(None, 1, 2, 3, 4), alpha_zero=False, max_k=10) -> Case:
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    n_channels = draw(st.sampled_from(channels))  # None = greyscale, 4 = RGBA
    leading = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))  # T, Z
    shape = (*leading, draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    n_colour = {None: 1, 4: 3}.get(n_channels, n_channels)

    table = draw(hnp.arrays(dtype, (draw(st.integers(1, 12)), n_colour), elements=values(dtype)))
    index = draw(hnp.arrays(np.intp, shape, elements=st.integers(0, len(table) - 1)))
    pixels = table[index]
    if n_channels is None:
        image = pixels[..., 0]
        # A 2-D array is always greyscale, whatever channel_axis says.
        channel_axis = draw(st.sampled_from([None, -1])) if image.ndim == 2 else None
        layout = "grey"
    elif n_channels == 4:
        alpha = draw(hnp.arrays(dtype, shape, elements=values(dtype, positive=True)))
        if alpha_zero:
            transparent = draw(hnp.arrays(bool, shape))
            transparent.flat[draw(st.integers(0, transparent.size - 1))] = False  # one votes
            alpha[transparent] = 0
        image = np.concatenate([pixels, alpha[..., None]], axis=-1)
        channel_axis, layout = -1, "rgba"
    else:
        image, channel_axis, layout = pixels, -1, "colour"
    return Case(image, layout, channel_axis, draw(st.integers(1, max_k)))


def run(case: Case, image=None, **kwargs):
    """quantize() with warnings turned into errors: valid input must not warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return quantize(
            case.image if image is None else image, case.k, channel_axis=case.channel_axis, **kwargs
        )


def result_colour(case: Case, out: np.ndarray) -> np.ndarray:
    if case.layout == "grey":
        return out[..., None]
    return out[..., :3] if case.layout == "rgba" else out


@FAST
@given(cases())
def test_core_invariants(case):
    image = case.image
    original = image.copy()
    image.flags.writeable = False  # read-only input must be accepted ...
    res = run(case)
    np.testing.assert_array_equal(image, original)  # ... and never modified
    pal, distinct = res.palette, case.distinct
    n = len(pal)

    # Palette: at most k colours, all distinct, no empty cluster, every pixel counted once.
    assert 1 <= n <= min(case.k, len(distinct))
    assert pal.colors.shape == (n, distinct.shape[1])
    assert pal.colors.dtype == image.dtype
    assert len(np.unique(pal.colors, axis=0)) == n, pal.colors
    assert pal.counts.dtype == np.int64
    assert np.all(pal.counts > 0)
    assert pal.counts.sum() == case.colour[..., 0].size

    # Labels: spatial shape, smallest unsigned dtype, every label used, counts agree.
    assert res.labels.shape == case.colour.shape[:-1]
    assert res.labels.dtype == np.min_scalar_type(n - 1)
    assert res.labels.dtype.kind == "u"
    np.testing.assert_array_equal(np.bincount(res.labels.ravel(), minlength=n), pal.counts)

    # Image: same shape/dtype, colour channels looked up from the palette, alpha copied.
    assert res.image.shape == image.shape and res.image.dtype == image.dtype
    np.testing.assert_array_equal(result_colour(case, res.image), pal.colors[res.labels])
    if case.alpha is not None:
        np.testing.assert_array_equal(res.image[..., 3], case.alpha)

    if case.layout == "grey":  # label 0 darkest: grey levels strictly increasing
        assert np.all(np.diff(pal.colors[:, 0].astype(np.float64)) > 0), pal.colors[:, 0]


@FAST
@given(cases())
def test_mse_is_the_error_of_the_returned_image(case):
    res = run(case)
    diff = case.colour.astype(np.float64) - result_colour(case, res.image).astype(np.float64)
    assert res.mse == pytest.approx(np.mean(diff**2), rel=1e-9, abs=1e-300)


@FAST
@given(cases())
def test_few_colours_come_back_exactly(case):
    """n_input_colors counts the distinct input colours; with no more of them than k, the
    palette is exactly those colours and the image comes back unchanged."""
    res = run(case)
    distinct = case.distinct
    assert res.n_input_colors == len(distinct)
    if len(distinct) <= case.k:
        np.testing.assert_array_equal(np.unique(res.palette.colors, axis=0), distinct)
        np.testing.assert_array_equal(res.image, case.image)
        assert res.mse == 0


@FAST
@given(cases(), st.integers(0, 2**32 - 1))
def test_same_random_state_same_result(case, seed):
    a = run(case, random_state=seed)
    b = run(case, random_state=seed)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.palette.colors, b.palette.colors)
    np.testing.assert_array_equal(a.palette.counts, b.palette.counts)
    assert a.mse == b.mse and a.n_iter == b.n_iter


@FAST
@given(cases())
def test_quantising_twice_changes_nothing(case):
    first = run(case)
    second = run(case, image=first.image)
    np.testing.assert_array_equal(second.image, first.image)
    np.testing.assert_array_equal(second.palette.colors, first.palette.colors)
    np.testing.assert_array_equal(second.palette.counts, first.palette.counts)
    np.testing.assert_array_equal(second.labels, first.labels)


@FAST
@given(cases(), st.data())
def test_channel_axis_position_does_not_matter(case, data):
    if case.layout == "grey":
        # (..., Y, X) greyscale == (..., Y, X, 1) single-channel colour.
        moved, axis = case.image[..., None], -1
        back = moved[..., 0]
    else:
        axis = data.draw(st.integers(0, case.image.ndim - 1))
        moved = np.moveaxis(case.image, -1, axis)
        back = None
    ref = run(case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # alpha is only auto-detected on the last axis; say so when it moved.
        alpha = True if case.layout == "rgba" else None
        res = quantize(moved, case.k, channel_axis=axis, alpha=alpha)
    np.testing.assert_array_equal(res.palette.colors, ref.palette.colors)
    np.testing.assert_array_equal(res.labels, ref.labels)
    got = res.image[..., 0] if back is not None else np.moveaxis(res.image, axis, -1)
    np.testing.assert_array_equal(got, ref.image)


@FAST
# Exactly-encoded dtypes only: float / wide-int exactness is test_few_colours_come_back_exactly's.
@given(cases(dtypes=EXACT_DTYPES, channels=(4,), alpha_zero=True))
def test_transparent_pixels_do_not_vote(case):
    """With k >= the number of visible colours the palette is exactly the visible colours:
    a colour that only occurs under alpha == 0 must not be in it."""
    visible = case.colour[case.alpha != 0]
    distinct_visible = np.unique(visible, axis=0)
    k = len(distinct_visible)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = quantize(case.image, k)
    np.testing.assert_array_equal(np.unique(res.palette.colors, axis=0), distinct_visible)
    np.testing.assert_array_equal(res.image[..., 3], case.alpha)
    np.testing.assert_array_equal(res.image[..., :3], res.palette.colors[res.labels])
    # Visible pixels are reproduced exactly.
    np.testing.assert_array_equal(res.image[case.alpha != 0], case.image[case.alpha != 0])
