"""Public API: fit a k-colour palette to an image and repaint images with it.

``quantize``, ``fit_palette`` and ``apply_palette`` and the types they return.
The work is done by one pipeline, the same for numpy and dask input:

* :mod:`._layout` -- the image as channel-last pixels (and back);
* :mod:`._histogram` -- the exact colour histogram (per chunk, merged);
* :mod:`._fit` -- histogram -> palette: how the palette is fitted;
* :mod:`._paint` -- palette -> labels and image, by lookup.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import _contract as contract
from . import _validation as check
from ._colorspace import check_fit_range
from ._contract import default
from ._fit import PointSet, assign_rows, fit_fewest, fit_histogram
from ._histogram import image_histogram, release_freed_memory
from ._layout import layout_of
from ._metrics import MeanDeltaE, psnr
from ._options import FitOptions, fit_options
from ._paint import BYTE_SEARCH_MAX_K, paint_bytes, paint_image, searching_pays
from ._progress import ProgressCallback, stage


@dataclass(frozen=True, eq=False)
class Palette:
    """The colours of a quantised image.

    Attributes
    ----------
    colors : ndarray, shape (n, C)
        The palette colours in the image's own units and dtype (``C`` excludes
        alpha): any fixed colours first, then sorted by luminance (darkest
        first); with an ``init`` array, in its order (colour i started from
        ``init[i]``; two that end equal are one, at the first's place).
    counts : ndarray of int64, shape (n,)
        Number of pixels of the fitted (or repainted) image with each colour.
    color_space : str
        The space in which nearest colours are measured: ``"rgb"`` (the image's
        own units), ``"lab"`` or ``"oklab"``.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_kmeans_filter import Palette
    >>> palette = Palette(np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8))
    >>> len(palette)
    2
    >>> Palette.from_dict(palette.to_dict()).colors.tolist()
    [[0, 0, 0], [255, 255, 255]]
    """

    colors: np.ndarray
    counts: np.ndarray = field(default=None)
    color_space: str = "rgb"

    def __post_init__(self):
        colors = np.asarray(self.colors)
        if colors.ndim == 1:
            colors = colors[:, np.newaxis]
        if colors.ndim != 2 or colors.shape[0] == 0:
            raise ValueError(
                "The 'colors' of a Palette must be a non-empty (n, channels) array. "
                f"Got shape {colors.shape}."
            )
        if colors.dtype.kind not in "uif":
            raise TypeError(f"The 'colors' of a Palette must be numeric. Got dtype {colors.dtype}.")
        if colors.dtype.kind == "f" and not np.all(np.isfinite(colors)):
            raise ValueError("The 'colors' of a Palette must be finite (no NaN or inf).")
        counts = self.counts
        counts = (
            np.zeros(colors.shape[0], np.int64) if counts is None else np.asarray(counts, np.int64)
        )
        if np.any(counts < 0):
            raise ValueError("The 'counts' of a Palette must not be negative.")
        if counts.shape != (colors.shape[0],):
            raise ValueError(
                f"The 'counts' of a Palette must have shape ({colors.shape[0]},). "
                f"Got {counts.shape}."
            )
        color_space = check.check_color_space(self.color_space, colors.shape[1])
        colors = colors.copy()
        colors.flags.writeable = False
        counts.flags.writeable = False
        object.__setattr__(self, "colors", colors)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "color_space", color_space)

    def __len__(self) -> int:
        return int(self.colors.shape[0])

    def __repr__(self) -> str:
        return (
            f"Palette(n_colors={len(self)}, channels={self.colors.shape[1]}, "
            f"dtype={self.colors.dtype}, color_space={self.color_space!r})"
        )

    def to_dict(self) -> dict:
        """A JSON-serialisable description, read back by :meth:`from_dict`."""
        return {
            "colors": self.colors.tolist(),
            "counts": self.counts.tolist(),
            "dtype": str(self.colors.dtype),
            "color_space": self.color_space,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Palette:
        """Build a palette from the output of :meth:`to_dict`."""
        if not isinstance(data, dict) or "colors" not in data:
            raise ValueError("A palette description must be a dict with a 'colors' entry.")
        try:
            dtype = np.dtype(data.get("dtype", "float64"))
            values = np.asarray(data["colors"], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Invalid palette colours or dtype: {error}") from error
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            if values.size and (values.min() < info.min or values.max() > info.max):
                raise ValueError(
                    f"Palette colours must lie in [{info.min}, {info.max}] for dtype {dtype}; "
                    f"got values in [{values.min():g}, {values.max():g}]."
                )
            if not np.array_equal(values, np.round(values)):
                raise ValueError(f"Palette colours must be integers for dtype {dtype}.")
        elif dtype.kind != "f":
            raise ValueError(f"A palette's dtype must be numeric. Got {dtype}.")
        try:
            colors = np.asarray(data["colors"], dtype=dtype)
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"Invalid palette colours or dtype: {error}") from error
        return cls(colors, data.get("counts"), data.get("color_space", "rgb"))


@dataclass(frozen=True, eq=False)
class QuantizeResult:
    """What :func:`quantize` and :func:`apply_palette` return.

    Attributes
    ----------
    labels : ndarray or dask array of uint8/uint16
        Palette index of every pixel; the image's shape without its channel
        axis. Label 0 is the first palette colour. Fully transparent pixels
        (alpha 0) get the label of the colour they are repainted with, but
        count nowhere (``palette.counts``, ``cluster_stats``, ``mse``); the
        alpha kept in ``image`` tells them apart. (napari's clusters layer
        numbers colours 1..k and gives them 0, its background.)
    image : ndarray or dask array
        The quantised image: same shape and dtype as the input, colour channels
        equal to ``palette.colors[labels]``, alpha (if any) copied unchanged.
    palette : Palette
        The colours and their visible pixel counts in this image.
    n_input_colors : int
        Distinct colours of the visible pixels of the input (over the colour
        channels).
    mse, psnr : float
        Mean squared error of ``image`` against the input over the colour
        channels of the visible pixels (alpha > 0), and the peak
        signal-to-noise ratio in dB, ``10 log10(peak**2 / mse)``. The peak is
        255 for 8-bit integer images and the data's own range (max - min of
        the visible colour values) for every other dtype, whose bit depth is
        not known: the same picture stored as uint8, float in [0, 1] or 12-bit
        values in uint16 reads the same when its values span that range (black
        to white), and lower in the other dtypes when they do not.
    n_iter : int
        Lloyd iterations run (over all starts); 0 when no clustering was needed.
    params : dict
        The parameters used, JSON-serialisable, to reproduce the result.
    error_curve : dict or None
        With ``n_colors='auto'``: every number of colours fitted while
        searching (``"n_colors"``, sorted), the ``"psnr"`` (and
        ``"delta_e"``) of each, and whether the targets were ``"reached"``.
        The chosen number is ``len(palette)``.
    thresholds : ndarray of float64, shape (len(palette) - 1,), or None
        One-channel results only (greyscale, a single channel), undithered:
        ``thresholds[i]`` is the largest visible input value whose colour is one
        of the ``i + 1`` darkest palette colours, as
        :func:`skimage.filters.threshold_multiotsu` returns its thresholds (the
        last value of the lower class). A value equal to a threshold belongs to
        the *lower* class: ``np.digitize(image, thresholds, right=True)`` gives
        each pixel's class in order of its colour, and
        ``np.argsort(palette.colors[:, 0], kind="stable")[classes]`` its label.
        A colour no pixel has repeats the previous threshold (``-inf`` before
        any value). For one channel the classes are runs of values, and without
        ``init`` the fit is the global k-means optimum (see :func:`quantize`),
        so these are the optimal multi-level thresholds: equal to
        ``threshold_multiotsu``'s for real-valued centres (float images); an
        integer image's best integer palette can move one by a level (camera,
        2 classes: 103 here, 102 from multi-Otsu). None for colour images and
        dithered results (whose labels no threshold describes).
    """

    labels: Any
    image: Any
    palette: Palette
    n_input_colors: int
    mse: float
    psnr: float
    n_iter: int
    params: dict
    error_curve: dict | None = None
    thresholds: np.ndarray | None = None
    _color_sums: np.ndarray = field(default=None, repr=False)
    _squared_errors: np.ndarray = field(default=None, repr=False)
    # Where alpha is in ``image`` (an axis and index), or None: what cluster_stats needs to
    # count visible pixels, kept here rather than read back from ``params``.
    _alpha_axis: int | None = field(default=None, repr=False)
    # Lloyd iterations of the start the palette comes from (at most max_iter): the
    # estimator's n_iter_, as scikit-learn counts it; n_iter counts every start.
    _best_run_iter: int = field(default=0, repr=False)

    def __repr__(self) -> str:
        # Short, as Palette's: typing `result` in a console must not print every pixel.
        lazy = " (lazy)" if check.is_dask_array(self.labels) else ""
        return (
            f"QuantizeResult(labels={self.labels.dtype}{tuple(self.labels.shape)}{lazy}, "
            f"image={self.image.dtype}{tuple(self.image.shape)}, palette={self.palette!r}, "
            f"n_input_colors={self.n_input_colors}, psnr={self.psnr:.2f})"
        )

    def cluster_stats(self, frame_axis: int | None = None) -> dict[str, np.ndarray]:
        """Per-cluster statistics, one row per palette entry in label order.

        Parameters
        ----------
        frame_axis : int, optional
            An axis of ``labels`` (e.g. 0 for a (T, Y, X) stack) along which
            to count each cluster's pixels frame by frame.

        Returns
        -------
        dict of str to ndarray
            Equal-length columns: ``"label"`` (int64), ``"count"`` (visible
            pixels, int64), ``"fraction"`` (of the visible pixels),
            ``"mean_0"``, ``"mean_1"``, ... (mean input colour of the
            cluster's pixels per colour channel, NaN for an empty cluster),
            ``"rms_error"`` (root mean squared distance of those pixels to the
            palette colour, per channel, in the image's units) and, with
            ``frame_axis``, ``"frame_counts"``: an int64 array of shape
            (n_colors, n_frames), each cluster's visible pixels per frame.
            Dask results are computed for ``frame_counts``.

        Raises
        ------
        ValueError
            If ``frame_axis`` is not an axis of ``labels``.
        """
        counts = self.palette.counts.astype(np.int64)
        total = counts.sum()
        denominator = np.where(counts > 0, counts, 1).astype(np.float64)
        stats = {
            "label": np.arange(len(counts), dtype=np.int64),
            "count": counts,
            "fraction": counts / total if total else np.zeros(len(counts)),
        }
        n_channels = self.palette.colors.shape[1]
        for channel in range(n_channels):
            mean = self._color_sums[:, channel] / denominator
            stats[f"mean_{channel}"] = np.where(counts > 0, mean, np.nan)
        rms = np.sqrt(self._squared_errors / (denominator * n_channels))
        stats["rms_error"] = np.where(counts > 0, rms, np.nan)
        if frame_axis is not None:
            stats["frame_counts"] = self._frame_counts(frame_axis)
        return stats

    def _frame_counts(self, frame_axis) -> np.ndarray:
        ndim = self.labels.ndim
        contract.validate("frame_axis", frame_axis)
        if frame_axis is None or not -ndim <= frame_axis < ndim:
            raise contract.invalid(
                "frame_axis",
                f"be an int in the range [{-ndim}, {ndim - 1}] for labels of shape "
                f"{self.labels.shape}",
                frame_axis,
            )
        lazy = check.is_dask_array(self.labels)
        if lazy and any(math.isnan(size) for size in self.labels.shape):
            raise contract.invalid(
                "frame_axis",
                "be used on labels of known shape",
                frame_axis,
                "The result's dask arrays have unknown chunk sizes: call "
                "compute_chunk_sizes() on the input first.",
            )
        xp = __import__("dask.array", fromlist=["array"]) if lazy else np
        k = len(self.palette)
        n_frames = self.labels.shape[frame_axis]
        frame = xp.arange(n_frames).reshape(
            [-1 if a == frame_axis % ndim else 1 for a in range(ndim)]
        )
        index = (self.labels.astype(np.int64) + frame * k).ravel()
        weights = None
        if self._alpha_axis is not None:
            alpha = xp.take(self.image, -1, axis=self._alpha_axis)
            weights = (alpha > 0).ravel()
        counts = xp.bincount(index, weights=weights, minlength=n_frames * k)
        if lazy:
            counts = counts.compute()
        return np.asarray(counts).astype(np.int64).reshape(n_frames, k).T


def _visible_range(histogram, encoding) -> tuple[float, float]:
    """Smallest and largest colour value of the visible pixels (float images only).

    The histogram has refused NaN and infinity already (per chunk for dask); values too
    large or too close together for squared distances in float64 are refused here.
    """
    colors = encoding.decode(histogram.codes)
    visible = colors[histogram.pixel_counts > 0]
    if not visible.size:
        return math.nan, math.nan
    low, high = float(visible.min()), float(visible.max())
    check.check_float_values(low, high)
    return low, high


def _check_palette_units(palette, colors, layout, low, high) -> None:
    low, high = float(low), float(high)
    check.check_colors_in_data_range(colors, "palette", layout.dtype, low, high)
    if palette.color_space != "rgb":
        check.check_rgb_unit_range("palette", palette.color_space, layout.dtype, low, high)


def _counted(layout, options: FitOptions, progress):
    """The image's histogram, its index, and the fit settings every k shares."""
    # Colours and targets in other units than a float image's values are refused before any
    # work for numpy input (one min/max pass, only when such a value is given), and for dask
    # input as soon as the histogram has seen every chunk (before the fit and any output).
    check_units = layout.dtype.kind == "f" and options.carries_units
    if check_units and not layout.is_dask:
        colors = layout.data[..., : layout.n_color_channels]
        options.check_units(layout.dtype, float(np.nanmin(colors)), float(np.nanmax(colors)))
    histogram, index = image_histogram(layout, stage(progress, 0.0, 0.3, "counting colors"))
    check.check_votes(
        float(np.sum(histogram.weights)), layout.mask is not None, layout.sample_weight is not None
    )
    if layout.sample_weight is not None and histogram.votes is not None:
        # Only the weights' ratios matter: at a scale where their products with squared
        # distances neither overflow nor turn subnormal (numpy weights are so already; lazy
        # ones are known only now).
        histogram = replace(histogram, votes=check.rescaled_weights(histogram.votes))
    if layout.dtype.kind == "f":
        low, high = _visible_range(histogram, layout.encoding)
        if check_units and layout.is_dask:
            options.check_units(layout.dtype, low, high)
    common = {
        "color_space": options.color_space,
        "speed": options.speed,
        "fixed_colors": options.fixed_colors,
        "n_init": options.n_init,
        "max_iter": options.max_iter,
        "tol": options.tol,
        "seed": options.seed,
    }
    return histogram, index, common


def _fit(layout, options: FitOptions, progress):
    """Histogram and palette: everything quantize and fit_palette need."""
    histogram, index, common = _counted(layout, options, progress)
    curve = None
    if options.n_colors == "auto":
        fewest = fit_fewest(
            histogram,
            layout.encoding,
            target_psnr=options.target_psnr,
            target_delta_e=options.target_delta_e,
            max_colors=contract.MAX_N_COLORS,
            report=stage(progress, 0.3, 0.9, "finding the fewest colors"),
            **common,
        )
        fitted, curve = fewest.fit, fewest.curve
        if not curve["reached"]:
            warnings.warn(
                f"The target ({_targets_text(options)}) is not reached with "
                f"{len(fitted.colors)} colours: PSNR {curve['psnr'][-1]:.1f} dB"
                + (f", mean CIEDE2000 {curve['delta_e'][-1]:.2f}" if "delta_e" in curve else "")
                + "; returning that fit.",
                UserWarning,
                stacklevel=3,
            )
    else:
        fitted = fit_histogram(
            histogram,
            layout.encoding,
            options.n_colors,
            init=options.init_colors,
            report=stage(progress, 0.3, 0.9, "fitting k-means"),
            **common,
        )
    if layout.is_dask:
        release_freed_memory()  # the fit's temporaries, before the labels are computed
    return histogram, index, fitted, curve


def _thresholds(layout, histogram, assignment, colors) -> np.ndarray | None:
    """The class thresholds of a one-channel result (see ``QuantizeResult.thresholds``),
    read from the labels the histogram's values got: 1-D nearest colours, and the
    exact fit's optimal partition, are runs of values."""
    if layout.n_color_channels != 1:
        return None
    visible = histogram.pixel_counts > 0
    values = layout.encoding.decode(histogram.codes[visible])[:, 0].astype(np.float64)
    rank = np.empty(len(colors), np.intp)
    rank[np.argsort(np.asarray(colors)[:, 0], kind="stable")] = np.arange(len(colors))
    largest = np.full(len(colors), -np.inf)
    np.maximum.at(largest, rank[assignment.row_labels[visible]], values)
    thresholds = np.maximum.accumulate(largest)[:-1]
    thresholds.flags.writeable = False
    return thresholds


def _targets_text(options: FitOptions) -> str:
    parts = []
    if options.target_psnr is not None:
        parts.append(f"target_psnr={options.target_psnr:g} dB")
    if options.target_delta_e is not None:
        parts.append(f"target_delta_e={options.target_delta_e:g}")
    return ", ".join(parts)


def _result(
    layout,
    histogram,
    index,
    colors,
    counts,
    assignment,
    n_iter,
    color_space,
    dither,
    params,
    curve=None,
):
    labels, image, stats = paint_image(layout, histogram, index, assignment, colors, dither)
    color_sums, squared_errors = assignment.color_sums, assignment.squared_errors
    if stats is not None:
        counts, color_sums, squared_errors = stats
    n_visible = int(histogram.pixel_counts.sum())
    mse = float(squared_errors.sum()) / max(n_visible * layout.n_color_channels, 1)
    alpha_axis = None
    if layout.has_alpha:
        ndim = len(layout.original_shape)
        alpha_axis = ndim - 1 if layout.channel_axis is None else layout.channel_axis
    return QuantizeResult(
        labels=labels,
        image=image,
        palette=Palette(colors, counts, color_space),
        n_input_colors=int(np.count_nonzero(histogram.pixel_counts)),
        mse=mse,
        psnr=psnr(mse, layout.dtype, assignment.value_range),
        n_iter=n_iter,
        params=params,
        error_curve=curve,
        thresholds=None if dither else _thresholds(layout, histogram, assignment, colors),
        _color_sums=color_sums,
        _squared_errors=squared_errors,
        _alpha_axis=alpha_axis,
    )


def quantize(
    image,
    n_colors: int | str = default("n_colors"),
    *,
    channel_axis: int | None = default("channel_axis"),
    color_space: str = default("color_space"),
    alpha: bool | None = default("alpha"),
    speed: int = default("speed"),
    mask=None,
    sample_weight=None,
    fixed_colors=None,
    dither: bool | float = default("dither"),
    target_psnr: float | None = None,
    target_delta_e: float | None = None,
    n_init: int | str = default("n_init"),
    init=default("init"),
    max_iter: int = default("max_iter"),
    tol: float = default("tol"),
    random_state=default("random_state"),
    progress: ProgressCallback | None = default("progress"),
) -> QuantizeResult:
    """Recreate an image with at most ``n_colors`` colours by k-means clustering.

    Every pixel is a point in colour space; k-means finds the ``n_colors``
    colours that best describe the image (least squared error), and each pixel
    is repainted with the colour of its cluster.  The fit is exact k-means on
    every pixel, computed on the image's colour histogram (distinct colours
    weighted by their pixel counts).

    Parameters
    ----------
    image : array_like or dask array
        RGB/RGBA photo, greyscale image, or nD stack; integer or float dtype,
        any byte order. Never modified. Dask input gives lazy dask ``labels``
        and ``image``.
    n_colors : int or 'auto', optional
        Number of colours, 1 to ``MAX_N_COLORS`` (4096). If the image has fewer
        distinct colours, all of them are returned. 'auto': the fewest colours
        whose result reaches ``target_psnr`` and/or ``target_delta_e`` (see
        Notes); ``result.error_curve`` tells what was tried.
    channel_axis : int or None, optional
        Axis holding the colour channels; None for intensity images (every
        element is a pixel). 2-D images are always greyscale. All other axes
        (T, Z, Y, X, ...) share one palette.
    color_space : {'rgb', 'lab', 'oklab'}, optional
        Where distances are measured. 'rgb' uses the image's own units (least
        MSE); 'lab' (CIELAB via scikit-image) and 'oklab' (Ottosson) are
        perceptual, for 3-channel images. The palette is always returned in the
        image's units.
    alpha : bool or None, optional
        Whether the last channel is alpha. None: yes when there are 4 channels
        on the last axis. Alpha is copied to the output unchanged; fully
        transparent pixels (alpha 0, or below it for signed and float alpha) do
        not take part in the fit, the error or the palette counts.
    speed : int, optional
        1 (most thorough) to 10 (fastest), pngquant's convention; 4 by default.
        Chooses how far the colours are reduced before the fit, and how many
        k-means++ starts, swap trials and refinement iterations are spent.
        10 is meant for live previews.
    mask : array_like of bool, optional
        The image's spatial shape (the image without its channel axis), numpy
        or dask. Only pixels where it is True take part in the fit; every
        pixel is repainted.
    sample_weight : array_like of float, optional
        The image's spatial shape; non-negative weight of every pixel in the
        fit (an importance map, as libimagequant's). Combined with ``mask``
        and alpha by multiplication. Only their ratios matter: weights whose
        maximum lies outside [2**-32, 2**32] are rescaled exactly (dask
        weights above 2**32 are refused, their maximum being known only once
        computed).
    fixed_colors : array_like, shape (m, C), optional
        Colours in the image's units that appear in the palette exactly, as its
        first ``m`` entries in the given order, and never move (even with no
        pixel); they count towards ``n_colors``: the other ``n_colors - m``
        colours are fitted around them. ``m <= n_colors``.
    dither : bool or float, optional
        Floyd-Steinberg error diffusion (serpentine) when repainting: False
        (default), True (full strength) or a level in [0, 1], the share of
        each pixel's error passed on (libimagequant's dithering level). It
        changes ``labels`` and ``image`` (still ``palette.colors[labels]``),
        not the palette; errors diffuse within each 2-D plane (the last two
        spatial axes) in the image's units, and, for dask input, within each
        chunk (seams may show at chunk borders).
    target_psnr : float, optional
        With ``n_colors='auto'``: the PSNR (dB, see ``QuantizeResult.psnr``)
        the result must reach, in (0, 200] -- pngquant's ``--quality`` in
        other units. About 30 dB is a visible but faithful posterisation,
        40 dB hard to tell from the original. With ``dither``, targets are
        judged on the undithered repaint: dithering lowers the PSNR by design
        (it trades per-pixel error for smooth gradients).
    target_delta_e : float, optional
        With ``n_colors='auto'``, RGB images only: the mean CIEDE2000 colour
        difference over the visible pixels the result may have at most, in
        (0, 100] (about 1 is the smallest difference an observer sees side by
        side). Colours are read as sRGB scaled by the dtype's full intensity
        (255 for uint8, 1.0 for floats).
    n_init : int or 'auto', optional
        Number of k-means++ starts; the best is kept. 'auto' lets ``speed``
        decide (8 at the default speed for up to 16 colours, fewer as
        ``n_colors`` grows).
    init : 'k-means++' or array of shape (n_colors, C), optional
        Starting colours in the image's units (colours in other units are
        refused); with an array, plain weighted Lloyd runs from it on every
        distinct colour to convergence, an empty cluster taking the colour
        farthest from its centre (scikit-learn's relocation): the same centres
        as ``sklearn.cluster.KMeans(init=init, n_init=1)`` on every pixel, and
        in init's order.  Not with ``fixed_colors`` (every colour moves).
    max_iter : int, optional
        Maximum Lloyd iterations per start.
    tol : float, optional
        Lloyd stops when the centres move less than ``tol`` times the data's
        variance (scikit-learn's definition), or when no pixel changes cluster.
    random_state : int, RandomState, Generator or None, optional
        Seed of the k-means++ starts; the same seed gives the same result.
        The integer seed actually used is ``result.params["random_state"]``.
    progress : callable, optional
        ``progress(fraction, message)`` is called as the work advances; an
        exception raised by it aborts the call (nothing is returned).

    Returns
    -------
    QuantizeResult
        ``labels``, ``image``, ``palette``, ``n_input_colors``, ``mse``,
        ``psnr``, ``n_iter``, ``params`` and ``cluster_stats()``.

    Raises
    ------
    ValueError, TypeError
        For an invalid parameter, before any work; the message names it and
        its accepted range (the contract in ``_contract.py``). Colours and
        targets in other units than a float image's values are refused too,
        before any work for numpy input, and for dask input once the colour
        histogram has been counted (before the fit and any output).
        So are float images with values beyond +-1e140, or spread over less
        than 1e-140 (max - min, not all equal): their squared colour
        distances would overflow or underflow float64.

    Notes
    -----
    With ``n_colors='auto'`` the colour histogram is computed once and
    k = 2, 4, 8, ... are fitted until one reaches the targets; bisection
    between the last k that missed and the first that reached then finds a k
    whose fit reaches them while the fit with k - 1 colours does not. If even
    4096 colours miss, that fit is returned with a ``UserWarning``.

    With one colour channel and no ``init``, the palette is the exact global
    optimum of k-means over the values the output can hold (integers for
    integer images): dynamic programming over the weighted histogram [4]_,
    sped up by divide and conquer [5]_, or for integer images by a penalty per
    class searched exactly (``_exact1d.py``), where its work fits its budget
    (integer images without fixed colours or fractional weights at any k; uint8
    and 12-bit data always; uint16 otherwise up to k = 512; floats up to ~1.6 M
    distinct values at k = 16; beyond, the heuristic fit).

    The histogram is exact for every dtype: 8- and 16-bit integers are packed
    into integer codes (counted in a direct table when they have at most 24
    bits), other dtypes use the bytes of each pixel, counted by sorting.
    Pixels get their label through a lookup on their code, never through a
    distance computation per pixel. How the palette is fitted -- grid
    reduction, greedy k-means++ [1]_, sort-means Lloyd iterations [2]_, swap
    search [3]_ -- is described in ``napari_kmeans_filter/_fit.py``.

    References
    ----------
    .. [1] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of
       careful seeding", SODA 2007.
    .. [2] M. E. Celebi, "Improving the performance of k-means for color
       quantization", Image and Vision Computing 29(4), 2011.
    .. [3] T. Kanungo et al., "A local search approximation algorithm for
       k-means clustering", Computational Geometry 28, 2004.
    .. [4] H. Wang and M. Song, "Ckmeans.1d.dp: optimal k-means clustering in
       one dimension by dynamic programming", The R Journal 3(2), 2011.
    .. [5] A. Grønlund et al., "Fast exact k-means, k-medians and Bregman
       divergence clustering in 1D", arXiv:1701.07204, 2017.

    Examples
    --------
    >>> from skimage import data
    >>> from napari_kmeans_filter import quantize
    >>> result = quantize(data.chelsea(), n_colors=8)
    >>> result.image.shape, len(result.palette) <= 8
    ((300, 451, 3), True)
    >>> int(result.labels.max()) < len(result.palette)
    True
    """
    contract.validate("progress", progress)
    layout = layout_of(image, channel_axis, alpha, mask, sample_weight)
    options = fit_options(
        layout,
        n_colors=n_colors,
        color_space=color_space,
        speed=speed,
        init=init,
        fixed_colors=fixed_colors,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        dither=dither,
        target_psnr=target_psnr,
        target_delta_e=target_delta_e,
    )
    histogram, index, fitted, curve = _fit(layout, options, progress)
    result = _result(
        layout,
        histogram,
        index,
        fitted.colors,
        fitted.counts,
        fitted.assignment,
        fitted.n_iter,
        options.color_space,
        options.dither,
        options.params(layout.channel_axis, layout.has_alpha),
        curve,
    )
    result = replace(result, _best_run_iter=fitted.best_run_iter)
    if progress is not None:
        progress(1.0, "done")
    return result


def fit_palette(
    image,
    n_colors: int | str = default("n_colors"),
    *,
    channel_axis: int | None = default("channel_axis"),
    color_space: str = default("color_space"),
    alpha: bool | None = default("alpha"),
    speed: int = default("speed"),
    mask=None,
    sample_weight=None,
    fixed_colors=None,
    target_psnr: float | None = None,
    target_delta_e: float | None = None,
    n_init: int | str = default("n_init"),
    init=default("init"),
    max_iter: int = default("max_iter"),
    tol: float = default("tol"),
    random_state=default("random_state"),
    progress: ProgressCallback | None = default("progress"),
) -> Palette:
    """Find the ``n_colors`` colours that best describe an image.

    Same parameters as :func:`quantize`; returns only the palette, to repaint
    other images (frames, slices, photos) with :func:`apply_palette`.

    Returns
    -------
    Palette
        Colours in the image's units and dtype (fixed colours first, the rest
        sorted dark to light, or in ``init``'s order), with the visible pixel
        count of each in ``image``.

    Examples
    --------
    >>> from skimage import data
    >>> from napari_kmeans_filter import apply_palette, fit_palette
    >>> palette = fit_palette(data.chelsea(), n_colors=5)
    >>> recoloured = apply_palette(data.astronaut(), palette)
    >>> len(recoloured.palette) == len(palette)
    True
    """
    contract.validate("progress", progress)
    layout = layout_of(image, channel_axis, alpha, mask, sample_weight)
    options = fit_options(
        layout,
        n_colors=n_colors,
        color_space=color_space,
        speed=speed,
        init=init,
        fixed_colors=fixed_colors,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        target_psnr=target_psnr,
        target_delta_e=target_delta_e,
    )
    _, _, fitted, _ = _fit(layout, options, progress)
    if progress is not None:
        progress(1.0, "done")
    return Palette(fitted.colors, fitted.counts, options.color_space)


def apply_palette(
    image,
    palette: Palette,
    *,
    channel_axis: int | None = default("channel_axis"),
    alpha: bool | None = default("alpha"),
    dither: bool | float = default("dither"),
    progress: ProgressCallback | None = default("progress"),
) -> QuantizeResult:
    """Repaint an image with the nearest colours of a given palette.

    Parameters
    ----------
    image : array_like or dask array
        Same kinds of image as :func:`quantize`, with as many colour channels
        as the palette. Never modified.
    palette : Palette
        For example from :func:`fit_palette` on another image. Distances are
        measured in ``palette.color_space``. Its colours must be in the
        image's units: a float palette for a float image; for an integer image
        an integer palette of the same dtype, or of a wider integer dtype
        (e.g. int64 from a list) whose values lie in the image dtype's range.
    channel_axis, alpha, dither, progress
        As in :func:`quantize`.

    Returns
    -------
    QuantizeResult
        Labels index ``palette.colors`` in its given order; ``result.palette``
        has the same colours (in the image's dtype) with this image's visible
        pixel counts (possibly 0).

    Raises
    ------
    ValueError
        When the palette's channels or units do not match the image (e.g. a
        uint8 palette for a uint16 image: its colours would all be near black).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_kmeans_filter import Palette, apply_palette
    >>> bw = Palette(np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8))
    >>> image = np.array([[[10, 20, 30], [200, 220, 250]]], dtype=np.uint8)
    >>> apply_palette(image, bw).labels.tolist()
    [[0, 1]]
    """
    contract.validate("palette", palette)
    contract.validate("progress", progress)
    level = contract.dither_level(dither)
    layout = layout_of(image, channel_axis, alpha)
    colors = check.check_palette_for_image(palette.colors, layout.n_color_channels, layout.dtype)
    if layout.dtype.kind == "f" and not layout.is_dask:
        values = layout.data[..., : layout.n_color_channels]
        _check_palette_units(palette, colors, layout, np.nanmin(values), np.nanmax(values))
    params = {
        "palette": palette.to_dict(),
        "channel_axis": layout.channel_axis,
        "alpha": bool(layout.has_alpha),
        "dither": level if level > 0 else False,
    }
    bytes_rgb = (
        layout.encoding.dense
        and layout.n_color_channels == 3
        and not (layout.is_dask or layout.has_alpha)
        and len(colors) <= BYTE_SEARCH_MAX_K
    )
    searched = level == 1 or (
        level == 0 and palette.color_space == "rgb" and bytes_rgb and searching_pays(layout.data)
    )
    if searched and bytes_rgb:
        if layout.dtype.kind == "i" and palette.color_space != "rgb":
            # As the histogram's rows are checked (assign_rows): int8 may hold negatives.
            check_fit_range(layout.data.min(), layout.data.max(), palette.color_space, layout.dtype)
        # 8-bit RGB dithering finds every label, counts the statistics and marks the
        # distinct colours itself: no histogram (CPU, 2 MP noisy photo at k = 16: 139 -> 53 ms
        # with dither_rgb_cells; the cat 8.7 -> 4.2 ms). Undithered, the same search finds
        # each pixel's nearest RGB colour: a histogram of a photo's colours and the nearest
        # colour of each took longer on photos (2 MP mosaic, k = 16 / 256: 80 / 114 -> 21 /
        # 31 ms), not on images of few colours (searching_pays).
        labels, painted, counts, sums, squared, n_colors = paint_bytes(layout.data, colors, level)
        mse = float(squared.sum()) / max(layout.n_pixels * 3, 1)
        if progress is not None:
            progress(1.0, "done")
        return QuantizeResult(
            labels=labels,
            image=layout.restore(painted),
            palette=Palette(colors, counts, palette.color_space),
            n_input_colors=n_colors,
            mse=mse,
            psnr=psnr(mse, layout.dtype, math.nan),  # 8-bit: the peak is 255
            n_iter=0,
            params=params,
            _color_sums=sums,
            _squared_errors=squared,
        )
    histogram, index = image_histogram(layout, stage(progress, 0.0, 0.8, "counting colors"))
    if layout.dtype.kind == "f":
        low, high = _visible_range(histogram, layout.encoding)
        if layout.is_dask:
            _check_palette_units(palette, colors, layout, low, high)
    # RGB dithering without alpha finds every label itself and counts its own statistics
    # (_paint.Ditherer): the rows need no nearest-colour search, only the value range.
    own_labels = bool(level) and layout.n_color_channels == 3 and not layout.has_alpha
    assignment = assign_rows(
        histogram, layout.encoding, colors, palette.color_space, search=not own_labels
    )
    counts = np.bincount(
        assignment.row_labels, weights=histogram.pixel_counts, minlength=len(colors)
    ).astype(np.int64)
    result = _result(
        layout,
        histogram,
        index,
        colors,
        counts,
        assignment,
        0,
        palette.color_space,
        level,
        params,
    )
    if progress is not None:
        progress(1.0, "done")
    return result


def error_curve(
    image,
    ks,
    *,
    delta_e: bool = False,
    channel_axis: int | None = default("channel_axis"),
    color_space: str = default("color_space"),
    alpha: bool | None = default("alpha"),
    speed: int = default("speed"),
    mask=None,
    sample_weight=None,
    fixed_colors=None,
    random_state=default("random_state"),
    progress: ProgressCallback | None = default("progress"),
) -> dict:
    """The error of the fit at each number of colours in ``ks``: the curve to choose k by.

    The histogram is counted once and each k is fitted on it as :func:`quantize` fits
    (same parameters, same result for the same k), then measured as ``n_colors='auto'``
    measures its tries. What the dock's k plot draws; ``QuantizeResult.error_curve`` is
    the same curve over the ks an auto search tried.

    Parameters
    ----------
    image, channel_axis, color_space, alpha, speed, mask, sample_weight, fixed_colors, \
random_state, progress
        As for :func:`quantize`. ``progress`` may raise to stop between fits.
    ks : iterable of int
        The numbers of colours, each a valid ``n_colors``; fitted in increasing order.
        Those above the image's distinct colours (plus fixed colours) are left out: their
        fit would repaint the image exactly.
    delta_e : bool, optional
        Also measure the mean CIEDE2000 of each fit (colour images only).

    Returns
    -------
    dict
        ``"n_colors"``: the ks fitted, sorted; ``"psnr"``: each fit's PSNR in dB (as
        ``QuantizeResult.psnr``); with ``delta_e``, ``"delta_e"``: each fit's mean
        CIEDE2000 over the visible pixels.

    Raises
    ------
    ValueError, TypeError
        As :func:`quantize`, before any work; ``ks`` naming the bad k.
    """
    contract.validate("progress", progress)
    ks = list(ks)
    if "auto" in ks:
        raise contract.invalid("ks", "hold numbers of colours, not 'auto'", ks)
    ks = sorted({int(contract.validate("n_colors", k)) for k in ks})
    if not ks:
        raise contract.invalid("ks", "hold at least one number of colours", ks)
    layout = layout_of(image, channel_axis, alpha, mask, sample_weight)
    if delta_e and layout.n_color_channels != 3:
        raise contract.invalid(
            "delta_e",
            "be False for images without three colour channels",
            delta_e,
            "CIEDE2000 compares RGB colours.",
        )
    options = fit_options(
        layout,
        n_colors=ks[-1],
        color_space=color_space,
        speed=speed,
        fixed_colors=fixed_colors,
        init=default("init"),
        n_init=default("n_init"),
        max_iter=default("max_iter"),
        tol=default("tol"),
        random_state=random_state,
    )
    histogram, _, common = _counted(layout, options, progress)
    n_visible = float(histogram.pixel_counts.sum())
    n_fixed = 0 if options.fixed_colors is None else len(options.fixed_colors)
    lossless = int(np.count_nonzero(histogram.weights > 0)) + n_fixed
    ks = [k for k in ks if k <= max(lossless, ks[0])]
    voters = histogram.weights > 0
    points = PointSet(
        histogram,
        layout.encoding,
        options.color_space,
        None if np.all(voters) else np.flatnonzero(voters),
    )
    meter = MeanDeltaE(histogram, layout.encoding) if delta_e else None
    curve: dict = {"n_colors": [], "psnr": []}
    if delta_e:
        curve["delta_e"] = []
    for number, k in enumerate(ks):
        fitted = fit_histogram(histogram, layout.encoding, k, points=points, **common)
        mse = fitted.assignment.squared_error / max(n_visible * layout.n_color_channels, 1)
        curve["n_colors"].append(k)
        curve["psnr"].append(psnr(mse, layout.dtype, fitted.assignment.value_range))
        if meter is not None:
            curve["delta_e"].append(float(meter(fitted.colors, fitted.assignment.row_labels)))
        if progress is not None:
            progress(0.3 + 0.7 * (number + 1) / len(ks), f"fitted {k} colors")
    return curve
