"""The scikit-learn estimator over the quantisation engine: :class:`KMeansQuantizer`.

A drop-in for ``sklearn.cluster.KMeans`` (and ``dask_ml.cluster.KMeans``) in
code that treats every pixel as a sample: ``X`` is scikit-learn's
``(n_samples, n_features)``, each row one pixel of ``n_features`` channels,
and the fit is the one :func:`~napari_kmeans_filter.quantize` runs (the rows
are handed to it as an ``(n_samples, 1, n_features)`` image with
``channel_axis=-1``, no alpha).  Parameters are validated by scikit-learn from
constraints converted from the project's declared contract
(:mod:`._contract`), so the estimator accepts exactly what the functions do.

This module imports scikit-learn; ``import napari_kmeans_filter`` does not
import it (the package loads this module on first access to the class).
"""

from __future__ import annotations

import numbers
import warnings
from typing import ClassVar

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import _contract
from ._colorspace import rgb_unit_scale, to_fit_space
from ._quantize import quantize
from ._validation import (
    check_float_values,
    check_weights,
    checked_float_block,
    checked_weights,
    is_dask_array,
)

# Rows whose distances to every centre are held at once (rows x k x features
# float64: ~32 MB at k = 256, 16 features).
_CHUNK_VALUES = 2**22


def _known_rows(array):
    """A dask ``array`` with known, non-empty chunks along its rows (what scikit-learn's
    shape checks and dask's reductions over them need): unknown sizes are computed, as the
    row count must be known anyway, and empty chunks dropped."""
    if any(np.isnan(size) for size in array.chunks[0]):
        array = array.compute_chunk_sizes()
    if 0 in array.chunks[0] and array.shape[0] > 0:
        array = array.rechunk({0: tuple(size for size in array.chunks[0] if size)})
    return array


def _to_sklearn(constraint: _contract.Constraint):
    """One contract constraint as scikit-learn's ``_param_validation`` understands it."""
    if isinstance(constraint, _contract.Interval):
        kind = numbers.Integral if constraint.kind == "int" else numbers.Real
        # scikit-learn wants a missing bound's side open ("both" with no high is "left").
        left = constraint.low is not None and constraint.closed in ("both", "left")
        right = constraint.high is not None and constraint.closed in ("both", "right")
        closed = {(1, 1): "both", (1, 0): "left", (0, 1): "right", (0, 0): "neither"}[left, right]
        return Interval(kind, constraint.low, constraint.high, closed=closed)
    if isinstance(constraint, _contract.Options):
        return StrOptions(set(constraint.values))
    if isinstance(constraint, _contract.NoneValue):
        return None
    if isinstance(constraint, _contract.Boolean):
        return "boolean"
    if isinstance(constraint, _contract.ArrayLike):
        return "array-like"
    if isinstance(constraint, _contract.RandomStates):
        return np.random.RandomState  # a type: scikit-learn checks isinstance
    if isinstance(constraint, _contract.CallableValue):
        return callable
    raise TypeError(f"no scikit-learn equivalent for {constraint!r}")


def _constraints(name: str, *, without=()) -> list:
    converted = []
    for constraint in _contract.parameter(name).constraints:
        if isinstance(constraint, _contract.Options):
            values = tuple(v for v in constraint.values if v not in without)
            if not values:
                continue
            constraint = _contract.Options(values)
        converted.append(_to_sklearn(constraint))
        if isinstance(constraint, _contract.RandomStates):
            converted.append(np.random.Generator)
    return converted


class KMeansQuantizer(
    ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator
):
    """K-means clustering of pixels (or any rows) by the colour-quantisation engine.

    Same interface as :class:`sklearn.cluster.KMeans`: ``fit``, ``predict``,
    ``fit_predict``, ``transform`` (distances to the centres), ``score``
    (negative inertia), ``get_feature_names_out`` (``kmeansquantizer0``, ...) and
    ``set_output``, and the fitted ``cluster_centers_``, ``labels_`` (int32),
    ``inertia_``, ``n_iter_``, ``n_features_in_``.  The fit is the one of
    :func:`~napari_kmeans_filter.quantize` on the same data and seed: a
    weighted k-means on the distinct rows (weighted by how often each occurs),
    seeded by k-means++ and refined by Lloyd iterations and centre swaps.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters, 1 to 4096 (the engine's limit).
    color_space : {"rgb", "lab", "oklab"}, default="rgb"
        Where distances are measured.  ``"rgb"``: in ``X``'s own units (plain
        k-means).  ``"lab"``/``"oklab"``: ``X`` must be RGB (3 features) in
        ``[0, 1]`` for floats or the full range of an integer dtype; centres
        are still reported in ``X``'s units, while ``transform``, ``score`` and
        ``inertia_`` measure in the perceptual space (so scores of different
        colour spaces are in different units: do not compare them in a grid
        search).  New rows beyond that range (a scaler fitted on other rows)
        are measured as the nearest RGB colour, clipped, with a warning.
    speed : int, default=4
        1 (most thorough) to 10 (fastest), pngquant's convention: how many
        starts, swaps and refinement iterations the engine spends.
    random_state : int, RandomState, Generator or None, default=None
        Seed of the k-means++ starts (None: fresh randomness, as scikit-learn).
    init : "k-means++" or array of shape (n_clusters, n_features), default="k-means++"
        How the fit starts; with an array, ``cluster_centers_[i]`` is the centre
        Lloyd reached from ``init[i]``, as in scikit-learn.
    max_iter : int, default=300
        Most Lloyd iterations per start.
    tol : float, default=1e-4
        Lloyd stops when the centres move less than ``tol`` times the data's
        mean variance (scikit-learn's definition).
    n_init : "auto" or int, default="auto"
        k-means++ starts; ``"auto"`` lets ``speed`` decide (more starts at
        small ``n_clusters``).  Ignored with an array ``init`` (one start).
    verbose : int, default=0
        Accepted for code written for :class:`sklearn.cluster.KMeans`; the
        engine prints nothing.
    copy_x : bool, default=True
        Accepted for the same reason; ``X`` is never modified either way.
    algorithm : {"lloyd", "elkan"}, default="lloyd"
        Accepted for the same reason; both give k-means, which the engine runs
        with its own exact Lloyd iterations (sorted neighbour lists; the
        centres do not depend on this choice).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The centres, float (float32 for float32 ``X``).  With fewer distinct
        rows than clusters, the last ones repeat earlier centres and a
        :class:`~sklearn.exceptions.ConvergenceWarning` says so (as
        scikit-learn's ``KMeans``).
    labels_ : ndarray of int32 (dask array for dask input) of shape (n_samples,)
        Index of the nearest centre of each training row (= ``predict(X)``;
        ties go to the lower index).
    inertia_ : float
        Sum of the (sample-weighted) squared distances to the nearest centre.
    n_iter_ : int
        Lloyd iterations of the run the centres come from, at most ``max_iter``, as
        scikit-learn counts them (the best of its ``n_init`` runs; cat, k = 8: 31 at
        ``max_iter=300``, where scikit-learn's KMeans takes 21). The centre swaps and
        refinement that polish that run are not counted (``QuantizeResult.n_iter``
        counts every iteration of every start). With an array ``init`` there is one
        run, and the count is scikit-learn's (27 and 27 on the cat, k = 8). 0 when
        the fit needs no iteration: one feature solved exactly, no more distinct rows
        than clusters.
    n_features_in_ : int
        Number of features (channels) seen in ``fit``, at most 16.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` had them.

    Notes
    -----
    ``X`` is converted to float64 (float32 stays float32) before the fit, so
    centres are the real-valued means as in scikit-learn; an integer image's
    palette (centres rounded to its dtype) is what
    :func:`~napari_kmeans_filter.fit_palette` returns.

    Dask arrays are accepted like ``dask_ml.cluster.KMeans``: the engine counts
    the distinct rows per chunk, ``labels_``, ``predict`` and ``transform``
    stay lazy, ``inertia_`` and ``score`` are computed.

    Examples
    --------
    >>> from skimage import data
    >>> from napari_kmeans_filter import KMeansQuantizer
    >>> image = data.chelsea()
    >>> pixels = image.reshape(-1, 3)
    >>> km = KMeansQuantizer(n_clusters=5, random_state=0).fit(pixels)
    >>> km.cluster_centers_[km.labels_].reshape(image.shape).shape
    (300, 451, 3)
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_clusters": _constraints("n_colors", without=("auto",)),
        "color_space": _constraints("color_space"),
        "speed": _constraints("speed"),
        "random_state": _constraints("random_state"),
        "init": _constraints("init"),
        "max_iter": _constraints("max_iter"),
        "tol": _constraints("tol"),
        "n_init": _constraints("n_init"),
        # scikit-learn's KMeans parameters that code written for it passes: accepted so that
        # it runs unchanged, without effect (the engine never modifies X, prints nothing and
        # runs its own exact Lloyd iterations; see the class docstring).
        "verbose": [Interval(numbers.Integral, 0, None, closed="left"), "boolean"],
        "copy_x": ["boolean"],
        "algorithm": [StrOptions({"lloyd", "elkan"})],
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        color_space="rgb",
        speed=4,
        random_state=None,
        init="k-means++",
        max_iter=300,
        tol=1e-4,
        n_init="auto",
        verbose=0,
        copy_x=True,
        algorithm="lloyd",
    ):
        self.n_clusters = n_clusters
        self.color_space = color_space
        self.speed = speed
        self.random_state = random_state
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.verbose = verbose
        self.copy_x = copy_x
        self.algorithm = algorithm

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Cluster the rows of ``X``.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
            Rows to cluster (pixels: one feature per channel), at most 16
            features.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight of each row (default 1).

        Returns
        -------
        self : KMeansQuantizer
        """
        weighted = sample_weight is not None
        if is_dask_array(X):
            dtype_in = X.dtype
            X, sample_weight = self._check_dask(X, sample_weight)
        else:
            dtype_in = getattr(X, "dtype", None)
            X = validate_data(self, X, dtype=[np.float64, np.float32], order="C")
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
            if weighted:
                # quantize's rule and message (scikit-learn's KMeans takes negative weights
                # without a word, and fits nonsense).
                check_weights(sample_weight)
            if X.size:
                # Refused as the engine would refuse the image, but naming X.
                check_float_values(float(X.min()), float(X.max()), "X")
        self._check_shape(X)
        # The fit space's units: lab/oklab read RGB in [0, scale], the full range of an
        # integer dtype (a float X is in [0, 1]); X itself is float from here on.
        self._scale = 1.0
        if self.color_space.lower() != "rgb":
            integral = isinstance(dtype_in, np.dtype) and dtype_in.kind in "ui"
            self._scale = rgb_unit_scale(dtype_in if integral else np.float64)
        init = self.init
        if not isinstance(init, str):
            init = np.asarray(init, dtype=np.float64) / self._scale
        fitted = X / self._scale if self._scale != 1.0 else X
        weight = sample_weight if weighted else None
        keep = None
        if weighted and not is_dask_array(X):
            # Rows of weight 0 take no part in the fit: the fit equals the one
            # without them (scikit-learn's sample-weight contract).
            keep = sample_weight > 0
            if keep.all():
                keep = None
            else:
                fitted, weight = fitted[keep], sample_weight[keep]
            if np.all(weight == 1.0):
                weight = None
        result = quantize(
            fitted[:, None, :],
            self.n_clusters,
            channel_axis=-1,
            alpha=False,
            color_space=self.color_space,
            speed=self.speed,
            sample_weight=None if weight is None else weight[:, None],
            init=init,
            max_iter=self.max_iter,
            tol=self.tol,
            n_init=self.n_init,
            random_state=self.random_state,
        )
        centres = np.asarray(result.palette.colors, dtype=np.float64) * self._scale
        n_found = len(centres)
        if n_found < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({n_found}) found smaller than "
                f"n_clusters ({self.n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
            # As scikit-learn's KMeans: n_clusters centres, some of them duplicates.
            centres = centres[np.arange(self.n_clusters) % n_found]
        self.cluster_centers_ = centres.astype(self._float_dtype(X))
        self.n_iter_ = int(result._best_run_iter)
        if is_dask_array(X):
            labels, distances = self._nearest(X)
        else:
            # The engine's labels are the nearest centres already (ties: the lower
            # index, as argmin); only rows left out of the fit are searched here.
            labels = np.empty(len(X), np.int32)
            engine = np.asarray(result.labels).reshape(-1)
            if keep is None:
                labels[:] = engine
            else:
                labels[keep] = engine
                labels[~keep] = self._nearest(X[~keep])[0]
            offsets = self._fit_space(X) - self._fit_space(self.cluster_centers_)[labels]
            distances = np.einsum("ij,ij->i", offsets, offsets)
        self.labels_ = labels
        self._n_features_out = self.n_clusters  # transform's columns: get_feature_names_out
        self.inertia_ = float(self._weighted_sum(distances, sample_weight))
        return self

    def _check_shape(self, X) -> None:
        n_samples, n_features = X.shape
        if n_features > _contract.MAX_CHANNELS:
            raise ValueError(
                f"{type(self).__name__} clusters at most {_contract.MAX_CHANNELS} features "
                f"(the engine's channel limit); X has {n_features}."
            )
        if n_samples < self.n_clusters:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}.")
        if not isinstance(self.init, str):
            init = np.asarray(self.init)
            if init.shape != (self.n_clusters, n_features):
                raise ValueError(
                    f"The shape of the initial centers {init.shape} does not match the number of "
                    f"clusters {self.n_clusters} and features {n_features}."
                )

    def _check_dask(self, X, sample_weight):
        """Validate a dask ``X`` without computing it (shape, dtype, features)."""
        import dask.array as da

        if X.ndim != 2:
            raise ValueError(f"Expected a 2-D dask array (n_samples, n_features), got {X.ndim}-D.")
        if X.dtype.kind not in "uif":
            raise ValueError(f"X must hold integers or floats, not {X.dtype}.")
        X = _known_rows(X)
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(
                f"Found array with shape {X.shape}: at least 1 sample and feature are required."
            )
        self.n_features_in_ = int(X.shape[1])
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        # Rows as features: one chunk along the features (the engine reads a pixel whole).
        X = X.rechunk({1: -1}).astype(np.float32 if X.dtype == np.float32 else np.float64)
        if sample_weight is None:
            sample_weight = da.ones(X.shape[0], chunks=(X.chunks[0],))
        else:
            sample_weight = da.asarray(sample_weight).astype(np.float64)
            if sample_weight.ndim == 1:
                sample_weight = _known_rows(sample_weight)
            if sample_weight.shape != (X.shape[0],):
                raise ValueError(
                    f"sample_weight.shape == {sample_weight.shape}, expected {(X.shape[0],)}!"
                )
            sample_weight = sample_weight.rechunk((X.chunks[0],))
        return X, sample_weight

    # -------------------------------------------------------------- predict

    def _float_dtype(self, X):
        return np.float32 if X.dtype == np.float32 else np.float64

    def _validated(self, X):
        check_is_fitted(self)
        if is_dask_array(X):
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[-1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
            X = _known_rows(X).rechunk({1: -1})
            X = X.astype(np.float32 if X.dtype == np.float32 else np.float64)
            # Squared distances of rows beyond +-1e140 overflow: refused as each block is computed.
            return X.map_blocks(checked_float_block, dtype=X.dtype)
        X = validate_data(self, X, dtype=[np.float64, np.float32], order="C", reset=False)
        return checked_float_block(X)

    def _fit_space(self, values):
        if self._scale == 1.0 and self.color_space.lower() == "rgb":
            return np.asarray(values, dtype=np.float64)
        return to_fit_space(
            np.asarray(values, np.float64) / self._scale, self.color_space.lower(), np.float64
        )

    def _in_gamut(self, block):
        """``block`` for a perceptual fit space: rows outside the RGB cube [0, scale] (new
        data a scaler fitted elsewhere maps a little beyond it) clipped to it, with a
        warning. Lab and OKLab are defined for RGB colours only; fit refuses such X."""
        if self.color_space.lower() == "rgb" or not block.size:
            return block
        low, high = float(block.min()), float(block.max())
        if low >= 0 and high <= self._scale:
            return block
        warnings.warn(
            f"X has values in [{low:g}, {high:g}], outside the RGB range [0, {self._scale:g}] "
            f"that color_space={self.color_space!r} converts: clipped to it to measure "
            "distances (X itself is not changed).",
            UserWarning,
            stacklevel=6,  # the caller of predict, transform or score
        )
        return np.clip(block, 0, self._scale)

    def _block_distances(self, block):
        """Squared distances of a block of rows to every centre, in the fit space."""
        points = self._fit_space(self._in_gamut(block))
        centres = self._fit_space(self.cluster_centers_)
        out = np.empty((len(points), len(centres)))
        step = max(1, _CHUNK_VALUES // max(1, centres.size))
        for start in range(0, len(points), step):
            # Differences, not |x|^2 - 2 x.c + |c|^2: no cancellation, and a row's
            # result does not depend on the rows around it.
            diff = points[start : start + step, None, :] - centres[None, :, :]
            np.einsum("ijk,ijk->ij", diff, diff, out=out[start : start + step])
        return out

    def _distances(self, X):
        if is_dask_array(X):
            k = len(self.cluster_centers_)
            return X.map_blocks(self._block_distances, chunks=(X.chunks[0], (k,)), dtype=np.float64)
        return self._block_distances(X)

    def _nearest(self, X):
        """Labels (int32, as scikit-learn's) and squared distances of the nearest centres."""
        distances = self._distances(X)
        return distances.argmin(axis=1).astype(np.int32), distances.min(axis=1)

    @staticmethod
    def _weighted_sum(values, sample_weight):
        total = (values * sample_weight).sum()
        return total.compute() if is_dask_array(total) else total

    def predict(self, X):
        """Index of the nearest centre of each row (ties: the lower index).

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of int32 (dask array for dask input) of shape (n_samples,)
        """
        return self._nearest(self._validated(X))[0]

    def transform(self, X):
        """Distances of every row to every centre (in the fit space).

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)

        Returns
        -------
        distances : ndarray (dask array for dask input) of shape (n_samples, n_clusters)
        """
        X = self._validated(X)
        return np.sqrt(self._distances(X)).astype(self._float_dtype(X), copy=False)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the (sample-weighted) sum of squared distances to the nearest centre.

        Distances are measured in the fit space: with ``color_space="lab"`` or ``"oklab"``
        in that space's units, so scores of estimators with different colour spaces cannot
        be compared (a grid search over ``color_space`` would pick by units, not fit).

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        score : float
        """
        X = self._validated(X)
        if is_dask_array(X):
            import dask.array as da

            if sample_weight is None:
                weight = da.ones(X.shape[0], chunks=(X.chunks[0],))
            else:
                weight = da.asarray(sample_weight).astype(np.float64)
                if weight.ndim == 1:
                    weight = _known_rows(weight)
                if weight.shape != (X.shape[0],):
                    raise ValueError(
                        f"sample_weight.shape == {weight.shape}, expected {(X.shape[0],)}!"
                    )
                # Refused as numpy weights are, as each block is computed.
                weight = weight.rechunk((X.chunks[0],)).map_blocks(
                    checked_weights, dtype=np.float64
                )
        else:
            weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
            if sample_weight is not None:
                check_weights(weight)
        return -float(self._weighted_sum(self._nearest(X)[1], weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
