"""The scikit-learn estimator (_estimator.py): scikit-learn's own checks, KMeans behaviour."""

from __future__ import annotations

import subprocess
import sys
import warnings

import dask.array as da
import numpy as np
import pytest
from skimage import data
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from napari_kmeans_filter import quantize
from napari_kmeans_filter._estimator import KMeansQuantizer

# scikit-learn checks that cannot pass, each with its reason.
_EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": (
        "the check's data has 30 features, beyond the engine's 16 channels (refused with a "
        "ValueError); the same equivalence at 10 features is "
        "test_integer_weights_equal_repeated_rows"
    ),
}


@parametrize_with_checks(
    [KMeansQuantizer(random_state=0)], expected_failed_checks=lambda estimator: _EXPECTED_FAILED
)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def cat_pixels():
    return data.chelsea().reshape(-1, 3)


def test_fit_equals_quantize_on_the_same_data_and_seed(cat_pixels):
    """The estimator is the engine: quantize's palette (of the float pixels) and labels."""
    km = KMeansQuantizer(n_clusters=5, random_state=0).fit(cat_pixels)
    result = quantize(
        cat_pixels.astype(np.float64)[:, None, :], 5, channel_axis=-1, alpha=False, random_state=0
    )
    np.testing.assert_array_equal(km.cluster_centers_, result.palette.colors)
    np.testing.assert_array_equal(km.labels_, result.labels.ravel())
    np.testing.assert_array_equal(km.predict(cat_pixels), km.labels_)
    assert km.inertia_ == pytest.approx(result.mse * cat_pixels.size, rel=1e-9)
    assert km.n_iter_ == result._best_run_iter <= result.n_iter
    assert km.cluster_centers_.dtype == np.float64


def test_integer_weights_equal_repeated_rows():
    """scikit-learn's sample-weight equivalence, within the engine's 16 channels."""
    rng = np.random.RandomState(0)
    X = rng.rand(15, 10)
    weights = rng.randint(0, 5, 15)
    weighted = KMeansQuantizer(3, random_state=0).fit(X, sample_weight=weights.astype(float))
    repeated = KMeansQuantizer(3, random_state=0).fit(np.repeat(X, weights, axis=0))
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_)
    assert weighted.inertia_ == pytest.approx(repeated.inertia_)
    np.testing.assert_array_equal(weighted.predict(X), repeated.predict(X))


def test_fewer_distinct_points_than_clusters_warns_and_repeats_centres():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 2.0]]), 4, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(3\) found smaller than"):
        km = KMeansQuantizer(n_clusters=5, random_state=0).fit(X)
    assert km.cluster_centers_.shape == (5, 2)
    assert len(np.unique(km.cluster_centers_, axis=0)) == 3
    assert km.inertia_ == 0.0
    assert set(km.labels_) == {0, 1, 2}


def test_fewer_samples_than_clusters_is_an_error():
    with pytest.raises(ValueError, match="n_samples=3 should be >= n_clusters=4"):
        KMeansQuantizer(n_clusters=4).fit(np.eye(3))


def test_more_features_than_the_engine_holds_is_a_clear_error():
    with pytest.raises(ValueError, match="at most 16 features"):
        KMeansQuantizer(n_clusters=2).fit(np.random.default_rng(0).random((20, 17)))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_clusters": 0}, "'n_clusters' parameter"),
        ({"n_clusters": "auto"}, "'n_clusters' parameter"),
        ({"n_clusters": 4097}, "'n_clusters' parameter"),
        ({"speed": 11}, "'speed' parameter"),
        ({"color_space": "hsv"}, "'color_space' parameter"),
        ({"tol": -1.0}, "'tol' parameter"),
        ({"max_iter": 0}, "'max_iter' parameter"),
        ({"init": "random"}, "'init' parameter"),
        ({"random_state": -1}, "'random_state' parameter"),
    ],
)
def test_parameters_follow_the_declared_contract(params, message):
    """Ranges come from _contract.py (n_clusters: the engine's 1..4096, without 'auto')."""
    with pytest.raises(ValueError, match=message):
        KMeansQuantizer(**params).fit(np.random.default_rng(0).random((20, 3)))


def test_generator_random_state_and_init_array():
    X = np.random.default_rng(0).random((50, 3))
    km = KMeansQuantizer(n_clusters=2, random_state=np.random.default_rng(1)).fit(X)
    assert km.cluster_centers_.shape == (2, 3)
    start = KMeansQuantizer(n_clusters=2, init=km.cluster_centers_, max_iter=5).fit(X)
    assert start.inertia_ <= km.inertia_ * (1 + 1e-9)
    with pytest.raises(ValueError, match="initial centers"):
        KMeansQuantizer(n_clusters=3, init=km.cluster_centers_).fit(X)


def test_an_init_array_keeps_its_order_as_scikit_learn_does(cat_pixels):
    """Centre i is the one Lloyd reached from init[i]: code that names clusters through
    init (background first) gets scikit-learn's labels, not the engine's dark-to-light order."""
    X = np.array([[0.0, 0], [0.1, 0], [10, 10], [10.1, 10]])
    start = np.array([[10.0, 10], [0, 0]])
    np.testing.assert_array_equal(
        KMeansQuantizer(2, init=start, n_init=1).fit(X).labels_,
        KMeans(2, init=start, n_init=1).fit(X).labels_,
    )
    pixels = cat_pixels.astype(np.float64)
    start = pixels[np.random.default_rng(0).choice(len(pixels), 8, replace=False)]
    ours = KMeansQuantizer(8, init=start, n_init=1).fit(pixels)
    theirs = KMeans(8, init=start, n_init=1, algorithm="lloyd").fit(pixels)
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, atol=1e-6)
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)


def test_lab_on_integer_pixels_reports_centres_in_pixel_units(cat_pixels):
    """lab/oklab read integer RGB on its dtype's full range; centres come back in its units."""
    km = KMeansQuantizer(n_clusters=4, color_space="lab", random_state=0).fit(cat_pixels)
    assert km.cluster_centers_.min() >= 0 and km.cluster_centers_.max() <= 255
    assert km.cluster_centers_.max() > 100  # not in [0, 1]
    np.testing.assert_array_equal(km.predict(cat_pixels), km.labels_)


def test_dask_input_stays_lazy_and_equals_numpy(cat_pixels):
    lazy = da.from_array(cat_pixels, chunks=(20000, 3))
    numpy_fit = KMeansQuantizer(n_clusters=5, random_state=0).fit(cat_pixels)
    dask_fit = KMeansQuantizer(n_clusters=5, random_state=0).fit(lazy)
    assert isinstance(dask_fit.labels_, da.Array)
    np.testing.assert_allclose(dask_fit.cluster_centers_, numpy_fit.cluster_centers_)
    assert dask_fit.inertia_ == pytest.approx(numpy_fit.inertia_)
    labels = dask_fit.predict(lazy)
    assert isinstance(labels, da.Array) and isinstance(dask_fit.transform(lazy), da.Array)
    np.testing.assert_array_equal(labels.compute(), numpy_fit.labels_)
    assert dask_fit.score(lazy) == pytest.approx(-numpy_fit.inertia_)
    with pytest.raises(ValueError, match="features"):
        dask_fit.predict(lazy[:, :2])


def test_pipeline_and_grid_search():
    """What the estimator is for: a step of a Pipeline, tuned by GridSearchCV on score."""
    X = np.random.default_rng(0).random((200, 3)) * 255
    pipe = make_pipeline(MinMaxScaler(), KMeansQuantizer(random_state=0))
    search = GridSearchCV(pipe, {"kmeansquantizer__n_clusters": [2, 6]}, cv=2).fit(X)
    # More clusters always fit better: score is the negative inertia.
    assert search.best_params_ == {"kmeansquantizer__n_clusters": 6}


def test_feature_names_output_containers_and_label_dtype_as_kmeans():
    """What code written for scikit-learn's KMeans relies on beyond fit and predict: the
    transform's feature names (class name + index), ``set_output`` (a pandas DataFrame from a
    pipeline), and int32 labels from ``labels_``, ``predict`` and ``fit_predict``."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    X = rng.random((200, 3))
    ours = KMeansQuantizer(n_clusters=4, random_state=0)
    theirs = KMeans(n_clusters=4, n_init=1, random_state=0)
    for estimator, prefix in ((ours, "kmeansquantizer"), (theirs, "kmeans")):
        pipeline = make_pipeline(MinMaxScaler(), estimator).set_output(transform="pandas")
        frame = pipeline.fit_transform(X)
        names = [f"{prefix}{i}" for i in range(4)]
        assert list(frame.columns) == names
        assert list(pipeline.get_feature_names_out()) == names
        np.testing.assert_allclose(
            frame.to_numpy(), estimator.transform(MinMaxScaler().fit_transform(X))
        )
        assert estimator.labels_.dtype == np.int32
        assert estimator.predict(X).dtype == np.int32
        assert estimator.fit_predict(X).dtype == np.int32
    lazy = da.from_array(X, chunks=50)
    assert KMeansQuantizer(n_clusters=4, random_state=0).fit(lazy).labels_.dtype == np.int32


def test_importing_the_package_does_not_import_scikit_learn():
    code = "import sys, napari_kmeans_filter; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_warning_on_a_plain_fit(cat_pixels):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KMeansQuantizer(n_clusters=3, random_state=0).fit(cat_pixels)


def test_every_kmeans_parameter_is_accepted_so_kmeans_code_runs_unchanged():
    """Code written for sklearn.cluster.KMeans passes its parameters by name (n_init,
    verbose, copy_x, algorithm too): the estimator takes every one KMeans has, with KMeans's
    defaults, and fits."""
    from sklearn.cluster import KMeans

    from napari_kmeans_filter import KMeansQuantizer

    params = KMeans(n_clusters=4, random_state=0).get_params()
    ours = KMeansQuantizer().get_params()
    assert set(params) <= set(ours)
    for name, value in KMeans().get_params().items():
        assert ours[name] == value or name in ("random_state",), name
    pixels = data.chelsea()[::4, ::4].reshape(-1, 3)
    fitted = KMeansQuantizer(**params).fit(pixels)
    assert fitted.cluster_centers_.shape == (4, 3)
    many = KMeansQuantizer(**{**params, "n_init": 10, "algorithm": "elkan", "verbose": 1})
    assert many.fit(pixels).inertia_ <= fitted.inertia_ * 1.01


@pytest.mark.parametrize("max_iter", [1, 5, 300])
def test_n_iter_counts_the_best_run_as_scikit_learn_does(max_iter):
    """At most max_iter: the iterations of the run the centres come from, not of every
    start, swap and refinement (716 on the cat at max_iter=300 before)."""
    X = data.chelsea().reshape(-1, 3).astype(np.float64)
    fitted = KMeansQuantizer(n_clusters=8, random_state=0, max_iter=max_iter).fit(X)
    assert 1 <= fitted.n_iter_ <= max_iter


@pytest.mark.parametrize("weights", [[-1.0, 1, 1, 1], [np.nan, 1, 1, 1], [0.0, 0, 0, 0]])
def test_bad_sample_weights_get_quantizes_message(weights):
    """Negative weights were taken without a word (the fit left their rows out, the inertia
    counted them): refused as quantize refuses them, in fit and in score."""
    X = np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7], [0.5, 0.5, 0.5], [0.2, 0.2, 0.9]])
    weights = np.repeat(weights, 25)
    X = np.repeat(X, 25, axis=0)
    # All 0: scikit-learn's own check says it first ("Sample weights must contain ...").
    with pytest.raises(ValueError, match=r"(?i)sample.weight"):
        KMeansQuantizer(n_clusters=2, random_state=0).fit(X, sample_weight=weights)
    if np.isfinite(weights).all() and weights.min() < 0:
        fitted = KMeansQuantizer(n_clusters=2, random_state=0).fit(X)
        with pytest.raises(ValueError, match=r"'sample_weight' .* \[0, inf\)"):
            fitted.score(X, sample_weight=weights)


def test_lab_predicts_new_rows_a_little_outside_the_rgb_range_with_a_warning():
    """A scaler fitted on training rows maps held-out rows slightly beyond [0, 1]: predict,
    transform and score measure them as the nearest RGB colour (clipped), with a warning,
    so a grid search over color_space scores every candidate."""
    rng = np.random.default_rng(0)
    X = rng.random((600, 3))
    km = KMeansQuantizer(n_clusters=4, color_space="lab", random_state=0).fit(X)
    new = X[:50].copy()
    new[0, 0], new[1, 1] = -0.02, 1.03
    with pytest.warns(UserWarning, match=r"outside the RGB range \[0, 1\].*clipped"):
        labels = km.predict(new)
    np.testing.assert_array_equal(labels, km.predict(np.clip(new, 0, 1)))
    assert new[0, 0] == -0.02  # the caller's array is not changed
    with pytest.warns(UserWarning):
        assert np.isfinite(km.score(new))
    pipeline = make_pipeline(MinMaxScaler(), KMeansQuantizer(n_clusters=2, random_state=0))
    search = GridSearchCV(pipeline, {"kmeansquantizer__color_space": ["rgb", "lab"]}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        search.fit(rng.random((90, 3)) * 0.8 + 0.1)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_lazy_bad_weights_in_score_get_the_same_message():
    """Dask weights in score are checked as their blocks are computed, as fit checks them."""
    X = np.random.default_rng(1).random((400, 3))
    fitted = KMeansQuantizer(n_clusters=3, random_state=0).fit(X)
    weights = np.ones(400)
    weights[7] = -1.0
    with pytest.raises(ValueError, match=r"'sample_weight' .* \[0, inf\)"):
        fitted.score(da.from_array(X, chunks=100), sample_weight=da.from_array(weights, chunks=100))
    good = fitted.score(da.from_array(X, chunks=100), sample_weight=da.ones(400, chunks=100))
    assert good == pytest.approx(fitted.score(X))
