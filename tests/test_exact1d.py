"""The exact 1-D k-means (_exact1d.py): global optimum, thresholds, exact sums."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from skimage import data
from skimage.filters import threshold_multiotsu

from napari_kmeans_filter._exact1d import affordable, evaluations, fit, fit_points, table_bytes


def _exhaustive(values, weights, k, fixed=(), integer=False):
    """Minimum over every labelling of the values (not only contiguous runs)."""
    fixed = list(fixed)
    n_free = k - len(fixed)
    best = np.inf
    for labels in itertools.product(range(k), repeat=len(values)):
        labels = np.array(labels)
        cost = 0.0
        for label in range(k):
            member = labels == label
            if not member.any():
                continue
            x, w = values[member], weights[member]
            if label < n_free:
                centre = np.average(x, weights=w)
                if integer:
                    centre = np.floor(centre + 0.5)  # either neighbour of a tie costs the same
            else:
                centre = fixed[label - n_free]
            cost += float(np.sum(w * (x - centre) ** 2))
        best = min(best, cost)
    return best


def _histogram(rng, n_levels, float_weights):
    values = np.sort(rng.choice(40, n_levels, replace=False)).astype(np.float64)
    weights = rng.integers(1, 30, n_levels)
    if float_weights:
        weights = weights * rng.uniform(0.1, 3.0, n_levels)
    return values, weights


def _cost_of(result, values, weights):
    return float(np.sum(weights * (values - result.centres[result.labels]) ** 2))


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("method", ["full", "dc"])
def test_equals_exhaustive_search(integer, method):
    """On small random histograms the programme's cost is the minimum over all
    k^L labellings, for real and integer centres, both programmes, with and
    without fixed values (one or two, possibly outside the data)."""
    rng = np.random.default_rng(7 + integer)
    for trial in range(60):
        n_levels = int(rng.integers(1, 7))
        values, weights = _histogram(rng, n_levels, float_weights=trial % 3 == 0)
        k = int(rng.integers(1, 5))
        n_fixed = int(rng.integers(0, min(k, 2) + 1)) if trial % 2 else 0
        fixed = np.sort(rng.choice(np.arange(-5, 46), n_fixed, replace=False)).astype(float)
        result = fit(values, weights, k, fixed=fixed, integer_centres=integer, method=method)
        expected = _exhaustive(values, weights, min(k, n_levels + n_fixed), fixed, integer)
        assert result.cost == pytest.approx(expected, rel=1e-12, abs=1e-9)
        assert _cost_of(result, values, weights) == pytest.approx(expected, rel=1e-12, abs=1e-9)
        assert set(fixed) <= set(result.centres[result.fixed])
        if integer:
            assert np.all(result.centres == np.round(result.centres))


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("float_weights", [False, True])
def test_divide_and_conquer_equals_the_full_programme(integer, float_weights):
    """The monotone-argmin speed-up (and Knuth's bound between rows) is exact for
    real and integer centres (the integer cost satisfies the quadrangle inequality
    too; see the module notes)."""
    rng = np.random.default_rng(3)
    for n_levels, k in [(300, 2), (300, 7), (600, 40), (200, 150)]:
        values = np.sort(rng.choice(5000, n_levels, replace=False)).astype(np.float64)
        weights = rng.integers(1, 1000, n_levels) ** 2
        if float_weights:
            weights = weights * rng.uniform(0.5, 2.0, n_levels)
        full = fit(values, weights, k, integer_centres=integer, method="full")
        fast = fit(values, weights, k, integer_centres=integer, method="dc")
        assert fast.cost == pytest.approx(full.cost, rel=1e-12)
        # A flat histogram of consecutive levels: ties everywhere.
        flat = np.arange(n_levels, dtype=np.float64), np.ones(n_levels)
        full = fit(*flat, k, integer_centres=integer, method="full")
        assert fit(*flat, k, integer_centres=integer, method="dc").cost == full.cost


@pytest.mark.parametrize("integer", [False, True])
def test_centres_close_to_the_number_of_values(integer):
    """Rows are windowed to the ends a row can have (k close to L: a few wide) and
    k >= L with no fixed values is every value its own centre: the same optimum as
    the plain programme, with and without fixed values, ties everywhere too."""
    rng = np.random.default_rng(4)
    values = np.sort(rng.choice(2000, 150, replace=False)).astype(np.float64)
    weights = rng.integers(1, 50, 150)
    for k, fixed in [(149, ()), (145, ()), (110, ()), (148, (3.0, 1000.0)), (151, (7.0,))]:
        full = fit(values, weights, k, fixed=fixed, integer_centres=integer, method="full")
        fast = fit(values, weights, k, fixed=fixed, integer_centres=integer, method="dc")
        assert fast.cost == pytest.approx(full.cost, rel=1e-12, abs=1e-9)
        assert _cost_of(fast, values, weights) == pytest.approx(full.cost, rel=1e-12, abs=1e-9)
        flat = np.arange(150.0), np.ones(150)
        full = fit(*flat, k, fixed=fixed, integer_centres=integer, method="full")
        assert fit(*flat, k, fixed=fixed, integer_centres=integer).cost == full.cost
    every = fit(values, weights, 150, integer_centres=integer)
    np.testing.assert_array_equal(every.centres, values)
    np.testing.assert_array_equal(every.labels, np.arange(150))
    np.testing.assert_array_equal(every.thresholds, values[:-1])
    assert every.cost == 0.0 and not every.fixed.any()


def test_float_histogram_beyond_the_old_table_budget():
    """20 000 distinct float values at k = 19 990: the old table (5 bytes x k x L, 2 GB)
    was past the budget; windowed rows need 11 ends each (0.9 MB).  The same optimum as
    the plain programme over those rows, and 10 free centres' worth of merges: the cost
    is that of the cheapest way to merge 20 000 values into 19 990 runs."""
    rng = np.random.default_rng(9)
    values = np.cumsum(rng.uniform(0.5, 1.5, 20_000))
    weights = rng.uniform(0.1, 5.0, 20_000)
    assert 5 * 19_990 * 20_000 > 2**28 and table_bytes(20_000, 19_990) < 2**20
    fast = fit(values, weights, 19_990)
    full = fit(values, weights, 19_990, method="full")
    assert fast.cost == pytest.approx(full.cost, rel=1e-12)
    assert _cost_of(fast, values, weights) == pytest.approx(fast.cost, rel=1e-9)
    assert len(fast.centres) == 19_990


def test_penalised_programme_equals_the_rows():
    """Integer data, integer centres, no fixed values: the penalty-per-run programme
    (bisection over the penalty, then, where the optimum with the fewest runs has
    fewer than k and the one with the most has more, the two spliced) gives the
    plain programme's optimum with exactly k runs, ties everywhere included."""
    rng = np.random.default_rng(12)
    for trial in range(300):  # ~50 of them need the splice (flat histograms)
        n_levels = int(rng.integers(2, 50))
        values = np.sort(rng.choice(300, n_levels, replace=False)).astype(np.float64)
        weights = rng.integers(1, 30, n_levels)
        if trial % 4 == 0:  # flat: many partitions of equal cost
            values, weights = np.arange(n_levels, dtype=np.float64), np.ones(n_levels, int)
        k = int(rng.integers(1, n_levels))
        full = fit(values, weights, k, integer_centres=True, method="full")
        fast = fit(values, weights, k, integer_centres=True, method="lagrangian")
        assert fast.cost == full.cost
        assert len(fast.centres) == k and np.all(np.diff(fast.centres) > 0)
        assert _cost_of(fast, values, weights) == full.cost
    # Small enough for the exhaustive search too.
    values, weights = np.array([0.0, 1, 2, 3, 4, 5]), np.array([1, 1, 1, 1, 1, 1])
    for k in range(1, 6):
        result = fit(values, weights, k, integer_centres=True, method="lagrangian")
        assert result.cost == pytest.approx(_exhaustive(values, weights, k, integer=True))


def test_penalised_programme_on_12_bit_data_at_large_k():
    """4096 levels at k = 1000: the rows and the penalised programme agree; auto picks
    the penalised one where it is cheaper (k in the hundreds and more on uint16)."""
    rng = np.random.default_rng(13)
    values = np.arange(4096, dtype=np.float64)
    weights = rng.multinomial(3_000_000, rng.dirichlet(np.ones(4096)))
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    rows = fit(values, weights, 1000, integer_centres=True, method="dc")
    penalised = fit(values, weights, 1000, integer_centres=True, method="lagrangian")
    assert penalised.cost == rows.cost
    assert evaluations(65536, 4096) > 2**29 and affordable(65536, 4096, integer=True)
    assert not affordable(65536, 4096, n_fixed=1, integer=True)
    with pytest.raises(ValueError, match="lagrangian"):
        fit(values, weights, 10, method="lagrangian")  # real centres
    with pytest.raises(ValueError, match="lagrangian"):
        fit(values, weights, 10, fixed=[5.0], integer_centres=True, method="lagrangian")


def test_auto_takes_the_penalised_programme_where_cheaper():
    """16-bit-like data at k = 300: auto runs the penalised programme (fewer evaluations
    than the rows), with the rows' optimum, centres, classes and thresholds."""
    from napari_kmeans_filter import _exact1d

    rng = np.random.default_rng(14)
    values = np.sort(rng.choice(65536, 20_000, replace=False)).astype(np.float64)
    weights = rng.integers(1, 200, values.size)
    assert _exact1d._lagrangian_work(values.size, 16) < evaluations(values.size, 300)
    calls = []
    original = _exact1d._lagrangian
    try:
        _exact1d._lagrangian = lambda *args: calls.append(1) or original(*args)
        result = fit(values, weights, 300, integer_centres=True)
    finally:
        _exact1d._lagrangian = original
    assert calls
    rows = fit(values, weights, 300, integer_centres=True, method="dc")
    assert result.cost == rows.cost == _cost_of(result, values, weights)
    np.testing.assert_array_equal(
        np.searchsorted(result.thresholds, values, side="left"), result.labels
    )
    assert np.all(result.centres == np.round(result.centres))


@pytest.mark.parametrize("name", ["camera", "moon", "coins"])
@pytest.mark.parametrize("classes", [2, 3, 4, 5])
def test_thresholds_equal_threshold_multiotsu(name, classes):
    """Multi-Otsu maximises the between-class variance of the 256-bin histogram,
    i.e. minimises the within-class squared error with real centres: same classes,
    same thresholds (the last value of each lower class)."""
    image = getattr(data, name)()
    values, counts = np.unique(image, return_counts=True)
    result = fit(values, counts, classes)
    np.testing.assert_array_equal(result.thresholds, threshold_multiotsu(image, classes))


def test_thresholds_classify_ties_to_the_lower_class():
    rng = np.random.default_rng(0)
    values, weights = _histogram(rng, 30, float_weights=False)
    result = fit(values, weights, 5, fixed=[100.0])  # the fixed class is empty, last
    np.testing.assert_array_equal(
        np.searchsorted(result.thresholds, values, side="left"), result.labels
    )
    assert result.thresholds[-1] == values[-1]


def _lloyd(values, weights, centres, integer, n_iter=100):
    for _ in range(n_iter):
        labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        new = centres.copy()
        for label in range(len(centres)):
            member = labels == label
            if member.any():
                new[label] = np.average(values[member], weights=weights[member])
        if integer:
            new = np.floor(new + 0.5)
        if np.array_equal(new, centres):
            break
        centres = new
    labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
    return float(np.sum(weights * (values - centres[labels]) ** 2))


@pytest.mark.parametrize("integer", [False, True])
def test_never_above_lloyd_from_any_start(integer):
    """Lloyd from random starts (and from the optimum's own centres) never ends
    below the programme's cost."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        values = np.sort(rng.choice(256, 120, replace=False)).astype(np.float64)
        weights = rng.integers(1, 500, 120)
        k = int(rng.integers(2, 12))
        result = fit(values, weights, k, integer_centres=integer)
        for _ in range(10):
            start = np.sort(rng.choice(values, k, replace=False))
            assert _lloyd(values, weights, start, integer) >= result.cost * (1 - 1e-12)
        assert _lloyd(values, weights, result.centres, integer) == pytest.approx(
            result.cost, rel=1e-12
        )


def test_integer_optimum_can_differ_from_the_rounded_real_one():
    """Rounding the real-valued optimum's centres is not the integer optimum."""
    rng = np.random.default_rng(5)
    found = 0
    for _ in range(200):
        values, weights = _histogram(rng, 12, float_weights=False)
        real = fit(values, weights, 4)
        integer = fit(values, weights, 4, integer_centres=True)
        assert integer.cost >= real.cost
        rounded = np.rint(real.centres)
        labels = np.argmin(np.abs(values[:, None] - rounded[None, :]), axis=1)
        rounded_cost = float(np.sum(weights * (values - rounded[labels]) ** 2))
        assert integer.cost <= rounded_cost
        found += integer.cost < rounded_cost
    assert found > 0


def test_sums_are_exact_on_12_megapixels_of_uint16():
    """Sum of x^2 over 12 MP of bright uint16 is ~5e16 > 2^53: the costs must still
    be exact (integer centres: an integer; k=1 real: S2 - S1^2/W to the last bit)."""
    rng = np.random.default_rng(0)
    values = np.arange(60000, 65536, dtype=np.float64)
    counts = rng.multinomial(12_000_000, np.full(values.size, 1 / values.size))
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    x = [int(v) for v in values]
    w = [int(c) for c in counts]

    one = fit(values, counts, 1)
    s1 = sum(a * b for a, b in zip(w, x, strict=True))
    s2 = sum(b * a * a for a, b in zip(x, w, strict=True))
    assert s2 > 2**53  # float64 prefix sums would round here
    exact = Fraction(s2) - Fraction(s1 * s1, sum(w))
    assert one.cost == float(exact)

    result = fit(values, counts, 6, integer_centres=True)
    centres = [int(c) for c in result.centres]
    cost = sum(
        b * (a - centres[label]) ** 2 for a, b, label in zip(x, w, result.labels, strict=True)
    )
    assert result.cost == float(cost)
    assert result.cost == fit(values, counts, 6, integer_centres=True, method="full").cost


def test_more_centres_than_values_and_zero_weights():
    values = np.array([1.0, 2.0, 5.0])
    result = fit(values, [3, 0, 2], 4)
    np.testing.assert_array_equal(result.centres, [1.0, 5.0])  # weight 0 is no value
    assert result.cost == 0.0


@pytest.mark.parametrize(
    ("values", "weights", "k", "message"),
    [
        ([2.0, 1.0], [1, 1], 2, "sorted"),
        ([1.0, np.nan], [1, 1], 2, "finite"),
        ([1.0, 2.0], [1, -1], 2, "non-negative"),
        ([1.0, 2.0], [1, 1], 0, "positive integer"),
        ([1.0, 2.0], [1], 2, "same length"),
    ],
)
def test_bad_input_is_refused(values, weights, k, message):
    with pytest.raises(ValueError, match=message):
        fit(values, weights, k)


def test_table_bytes_is_what_the_programme_allocates():
    # int32 starts, rows windowed to the L - n + 1 ends a row of q runs can have
    assert table_bytes(65536, 256) == 4 * 257 * 65281  # uint16, k = 256: 67 MB
    assert table_bytes(3, 8, n_fixed=2) == 5 * 4 * 3 * 1  # free runs capped at L; + int8 kind
    assert table_bytes(256, 255) == 4 * 256 * 2
    assert table_bytes(4096, 4096) == 0  # every value its own centre: no table
    assert affordable(256, 255) and affordable(65536, 256) and affordable(4096, 4096)
    assert not affordable(65536, 4096) and not affordable(10_000_000, 16)
    # Rows a few ends wide: k close to L is cheap in time and memory.
    assert affordable(65536, 65_000) and affordable(65536, 70_000) and affordable(10**6, 10**6)
    assert evaluations(65536, 256) == pytest.approx(256 * 65281 * np.log2(65281))


def test_fit_points_takes_any_order_and_puts_fixed_values_first():
    """The engine's shape: unsorted distinct values, fixed centres first in the given
    order, the rest ascending; each value labelled with its class; weight 0 -> nearest."""
    rng = np.random.default_rng(2)
    values = rng.permutation(np.arange(0.0, 200.0, 3.0))
    weights = rng.integers(0, 9, values.size)
    centres, labels, result = fit_points(
        values, weights, 6, fixed=[250.0, 10.0], integer_centres=True
    )
    assert list(centres[:2]) == [250.0, 10.0]
    assert np.all(np.diff(centres[2:]) > 0)
    positive = weights > 0
    expected = fit(
        np.sort(values[positive]),
        weights[positive][np.argsort(values[positive])],
        6,
        fixed=[10.0, 250.0],
        integer_centres=True,
    )
    assert result.cost == expected.cost
    cost = float(np.sum(weights * (values - centres[labels]) ** 2))
    assert cost == result.cost
    nearest = np.abs(values[:, None] - centres[None, :]).min(axis=1)
    np.testing.assert_array_equal(np.abs(values - centres[labels]), nearest)


@pytest.mark.parametrize("name", ["camera", "moon", "coins"])
@pytest.mark.parametrize("k", [4, 16])
def test_quantize_returns_the_greyscale_optimum(name, k):
    # Before the exact programme was wired in, the heuristic fit was 1.2-2.6 % above it at k=16.
    from napari_kmeans_filter import quantize

    image = getattr(data, name)()
    values, counts = np.unique(image, return_counts=True)
    optimum = fit(values.astype(np.float64), counts, k, integer_centres=True)
    result = quantize(image, k)
    assert result.mse * image.size == pytest.approx(optimum.cost, rel=1e-9)
    assert result.n_iter == 0


def _classes_from_thresholds(result, image):
    """Labels rebuilt from the result's thresholds, as its docstring says to."""
    classes = np.digitize(image, result.thresholds, right=True)
    return np.argsort(result.palette.colors[:, 0], kind="stable")[classes]


@pytest.mark.parametrize(
    "image",
    [
        data.camera(),
        data.moon(),
        (data.coins().astype(np.uint16) * 257 + 3),
        data.camera().astype(np.float32) / 255,
    ],
    ids=["camera", "moon", "coins-uint16", "camera-float"],
)
@pytest.mark.parametrize("k", [2, 5, 16])
def test_result_thresholds_reproduce_the_labels(image, k):
    from napari_kmeans_filter import apply_palette, quantize

    result = quantize(image, k)
    assert result.thresholds.shape == (len(result.palette) - 1,)
    assert np.all(np.diff(result.thresholds) >= 0)
    np.testing.assert_array_equal(_classes_from_thresholds(result, image), result.labels)
    # A palette applied to another image: its thresholds describe that image's classes.
    other = apply_palette(image[::-1, ::3], result.palette)
    np.testing.assert_array_equal(_classes_from_thresholds(other, image[::-1, ::3]), other.labels)


def test_result_thresholds_with_fixed_colours_mask_and_dask_input():
    import dask.array as da

    from napari_kmeans_filter import quantize

    image = data.camera()
    mask = np.zeros(image.shape, bool)
    mask[100:400, 50:450] = True
    result = quantize(image, 5, fixed_colors=[[200]], mask=mask)
    assert result.palette.colors[0, 0] == 200  # fixed colours come first: not in order
    rebuilt = _classes_from_thresholds(result, image)
    np.testing.assert_array_equal(rebuilt[mask], result.labels[mask])
    # Thresholds are read from the visible (masked-in) values only.
    inside = quantize(image[100:400, 50:450], 5, fixed_colors=[[200]])
    np.testing.assert_array_equal(result.thresholds, inside.thresholds)
    lazy = quantize(da.from_array(image, chunks=128), 5, fixed_colors=[[200]], mask=mask)
    np.testing.assert_array_equal(lazy.thresholds, result.thresholds)


def test_result_thresholds_are_the_integer_optimum_classes():
    """Integer images get integer centres, whose optimal partition can move a threshold
    by a level from multi-Otsu's real-valued one (camera, 2 classes: 103 against 102);
    with real centres (a float image of the same values) they are multi-Otsu's."""
    from napari_kmeans_filter import quantize

    image = data.camera()
    assert quantize(image, 2).thresholds.tolist() == [103.0]
    real = quantize(image.astype(np.float64), 4).thresholds
    np.testing.assert_array_equal(real, threshold_multiotsu(image, 4))


def test_result_thresholds_are_none_for_colour_and_dithered_results():
    from napari_kmeans_filter import quantize

    assert quantize(data.astronaut()[::4, ::4], 4).thresholds is None
    assert quantize(data.camera()[::4, ::4], 4, dither=True).thresholds is None
