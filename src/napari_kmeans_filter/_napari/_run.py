"""Running: quantizing (or repainting) what was read from layers, off the GUI thread.

:func:`quantize_source` and :func:`apply_palette_source` run the core on a
:class:`~._read.LayerSource` (every level of a multiscale layer with one palette); :func:`run_job`
is what a run's or a preview's worker does: the work, then the layer data
(:func:`~._prepare.prepare_result`), stopping at the core's next progress report once asked to;
:func:`warm_up_layers` pays napari's first-use costs of a Run's layers ahead of it.
Nothing here touches a layer in a viewer.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image

from napari_kmeans_filter import Palette, apply_palette, quantize
from napari_kmeans_filter._contract import InvalidParameterError
from napari_kmeans_filter._progress import ProgressCallback, stage

from ._prepare import BOTH, PreparedResult, prepare_result
from ._read import LayerSource, read_layer_source, resample_nearest

if TYPE_CHECKING:
    from ._prepare import LayerResult

#: The palette of a multiscale layer is fitted on the largest level with at most this many
#: pixels (or the smallest level if none is that small): enough pixels for a faithful
#: palette, few enough that the fit holds its data in memory.
MULTISCALE_FIT_MAX_PIXELS = 4_000_000

#: Keyword parameters of the core's ``quantize``: console keywords are checked against
#: them before any work (a misspelt option would otherwise fail after the NaN check).
CORE_PARAMETERS = frozenset(inspect.signature(quantize).parameters)

#: Share of a run's progress for the core's work; preparing the layers takes the rest.
WORK_SHARE = 0.9


def quantize_source(
    source: LayerSource,
    n_colors: int | str = 8,
    *,
    progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> LayerResult:
    """Quantize what :func:`read_layer_source` captured. Safe to run off the GUI thread.

    Parameters
    ----------
    source : LayerSource
        The layers' arrays.
    n_colors : int or "auto"
        Number of colors to find (``"auto"`` with ``target_psnr``, if the core has it).
    progress : callable, optional
        ``progress(fraction, message)``, passed on to the core (its exceptions propagate).
    **kwargs
        Any other keyword of :func:`napari_kmeans_filter.quantize` (``color_space``,
        ``random_state``, ...). ``color_space`` other than ``"rgb"`` needs an RGB layer.

    Returns
    -------
    QuantizeResult or MultiscaleResult
        One result, or for a multiscale layer one per level (same order, same palette).

    Raises
    ------
    ValueError
        For a layer whose values are all NaN, a color space on a greyscale layer, an
        option the core does not have, or any parameter the core refuses.
    """
    color_space = kwargs.get("color_space", "rgb")
    if not source.rgb and color_space != "rgb":
        raise ValueError(
            f"color_space={color_space!r} needs an RGB layer; {source.name!r} is "
            "greyscale, so its values are clustered as they are (color_space='rgb')."
        )
    _check_core_has(kwargs)
    fit_level = _choose_fit_level(source) if source.multiscale else 0
    levels = source.levels
    _reject_all_nan(source.name, levels[fit_level])
    keywords = {**source.core_keywords(), **kwargs}
    if source.mask_factory is not None:
        keywords["mask"] = (
            resample_nearest(source.mask, source.spatial_shape(fit_level))
            if fit_level
            else source.mask
        )

    if not source.multiscale:
        result = quantize(levels[0], n_colors, progress=progress, **keywords)
        return result

    # Fitting is the expensive part, so it gets half the bar; applying the palette to the
    # other levels shares the other half by pixel count.
    fitted = quantize(levels[fit_level], n_colors, progress=_part(progress, 0.0, 0.5), **keywords)
    results = _apply_to_levels(source, fitted.palette, fit_level, fitted, progress, kwargs)
    return MultiscaleResult(results, fit_level)


def apply_palette_source(
    source: LayerSource,
    palette: Palette,
    *,
    progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> LayerResult:
    """Repaint what :func:`read_layer_source` captured with a given palette (worker-safe).

    Parameters
    ----------
    source : LayerSource
        The layers' arrays (a region mask, if any, is ignored: nothing is fitted).
    palette : Palette
        For example ``Palette.from_dict(layer.metadata["palette"])`` of another result.
    progress : callable, optional
        ``progress(fraction, message)``.
    **kwargs
        Other keywords of :func:`napari_kmeans_filter.apply_palette` (``dither``).

    Returns
    -------
    QuantizeResult or MultiscaleResult
    """
    _check_core_has(kwargs, apply_palette)
    results = _apply_to_levels(source, palette, None, None, progress, kwargs)
    return results[0] if not source.multiscale else MultiscaleResult(results, 0)


def _apply_to_levels(source, palette, skip_level, skip_result, progress, kwargs) -> list:
    levels = source.levels
    todo = [i for i in range(len(levels)) if i != skip_level]
    start_at = 0.5 if skip_level is not None else 0.0
    total = sum(math.prod(source.spatial_shape(i)) for i in todo) or 1
    apply_keywords = {k: v for k, v in kwargs.items() if k in ("dither",)}
    results: list[Any] = [skip_result] * len(levels)
    done = 0
    for index in todo:
        pixels = math.prod(source.spatial_shape(index))
        start = start_at + (1 - start_at) * done / total
        stop = start_at + (1 - start_at) * (done + pixels) / total
        results[index] = apply_palette(
            levels[index],
            palette,
            progress=_part(progress, start, stop),
            **source.core_keywords(),
            **apply_keywords,
        )
        done += pixels
    return results


def _check_core_has(kwargs: dict[str, Any], function: Callable = quantize) -> None:
    known = CORE_PARAMETERS if function is quantize else inspect.signature(function).parameters
    missing = sorted(k for k in kwargs if k not in known)
    if missing:
        raise ValueError(
            f"{function.__name__}() has no {', '.join(missing)} option; see "
            f"help(napari_kmeans_filter.{function.__name__})."
        )


class MultiscaleResult(list):
    """The results of quantizing a multiscale layer: one per level, largest first.

    Every level uses the palette fitted on level :attr:`fit_level`, whose result's
    ``params`` are the parameters of the fit.

    Parameters
    ----------
    level_results : iterable of QuantizeResult
        One result per level.
    fit_level : int
        Index of the level the palette was fitted on.
    """

    def __init__(self, level_results: Any, fit_level: int) -> None:
        super().__init__(level_results)
        self.fit_level = fit_level


def _part(progress: ProgressCallback | None, start: float, stop: float) -> ProgressCallback | None:
    """The core's ``progress(fraction, message)`` for one part of the run (mapped by ``stage``)."""
    if progress is None:
        return None
    return lambda fraction, message: stage(progress, start, stop, message)(fraction)


def _choose_fit_level(source: LayerSource) -> int:
    for index in range(len(source.channels[0])):
        if math.prod(source.spatial_shape(index)) <= MULTISCALE_FIT_MAX_PIXELS:
            return index
    return len(source.channels[0]) - 1


def _reject_all_nan(layer_name: str, array: Any) -> None:
    # Only in-memory arrays: for dask data this would be a full extra pass over the data,
    # and the core refuses non-finite values anyway.
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.inexact):
        return
    if not np.isnan(array.flat[0]) or not np.isnan(array).all():
        return
    raise ValueError(f"Layer {layer_name!r} contains only NaN values: there are no colors.")


# --------------------------------------------------------------------------------------
# One run or preview, as a worker does it
# --------------------------------------------------------------------------------------


class RunCancelled(Exception):
    """Raised inside the worker (from the progress callback) when the run must stop."""


@dataclass(frozen=True)
class Job:
    """One quantization (or palette application) to run, fully described.

    Attributes
    ----------
    source : LayerSource
        What was read from the layers.
    layers : tuple of napari.layers.Image
        The source layers themselves (for placing and naming the result on the GUI thread).
    n_colors : int or "auto"
    keywords : dict
        Other keywords of the core (``color_space``, ``dither``, ...).
    palette : Palette or None
        Repaint with this palette instead of fitting one.
    palette_origin : str
        Where ``palette`` came from (a layer's or a file's name): names the result.
    outputs : tuple of str
        Which result layers to make.
    preview : bool
        A quick preview (image layer only, fastest setting, current slice).
    """

    source: LayerSource
    layers: tuple[Image, ...]
    n_colors: int | str = 8
    keywords: dict = field(default_factory=dict)
    palette: Palette | None = None
    palette_origin: str = ""
    outputs: tuple[str, ...] = BOTH
    preview: bool = False


@dataclass(frozen=True)
class Outcome:
    """What the worker hands back: a prepared result, a user-facing error, or a cancellation.

    The worker returns expected failures instead of raising them: napari turns a raised
    exception into an error notification with a traceback, which is right for bugs but not
    for "this layer has no colors".
    """

    prepared: PreparedResult | None = None
    error: Exception | None = None
    cancelled: bool = False


def run_job(
    job: Job, should_stop: Callable[[], bool], report: ProgressCallback | None = None
) -> Outcome:
    """The worker's job: quantize (or repaint), then prepare the layer data.

    ``should_stop()`` is checked at every progress report of the core; when it says so, the
    run ends there (the core aborts when its progress callback raises).
    """

    def progress(fraction: float, message: str) -> None:
        if should_stop():
            raise RunCancelled
        if report is not None:
            report(fraction, message)

    work = _part(progress, 0.0, WORK_SHARE)
    source = job.source
    try:
        if job.palette is not None:
            result = apply_palette_source(source, job.palette, progress=work, **job.keywords)
        else:
            result = quantize_source(source, job.n_colors, progress=work, **job.keywords)
        progress(WORK_SHARE, "preparing layers")
        prepared = prepare_result(
            result,
            source,
            outputs=job.outputs,
            preview=job.preview,
            build_layers=True,
            applied_from=job.palette_origin if job.palette is not None else None,
        )
    except RunCancelled:
        return Outcome(cancelled=True)
    except (InvalidParameterError, TypeError, ValueError, MemoryError) as exc:
        return Outcome(error=exc)
    if should_stop():
        return Outcome(cancelled=True)
    return Outcome(prepared=prepared)


def warm_up_layers() -> None:
    """Pay napari's first-use costs of a result's layers now, without adding any to a viewer.

    The first Run would otherwise wait for them in "preparing layers": napari compiles
    (numba) the function that maps labels through a DirectLabelColormap the first time it
    meets each labels dtype, and a Labels layer's first ``features`` table imports pandas
    (0.5-0.9 s; a viewer does not import it). The dock calls this in a background thread
    when it opens, after the core's own kernels, so this prepares (as a Run does, with
    :func:`~._prepare.prepare_result`, layers built) the result of a tiny RGB image at k = 8 (uint8
    labels) and k = 300 (uint16 labels); the layers are dropped. Each colormap is also
    mapped for the other labels dtype (see :func:`~._prepare._labels_colormap`), so the kernels for
    all four pairs of labels dtype and colormap size are compiled here.

    Measured by opening the dock, waiting for the warm-up thread and pressing Run on the
    cat (k = 8), a fresh process each: "preparing layers" took 3.1-3.7 s with no warm-up,
    0.2-0.35 s with the colormaps alone, and 0.05-0.1 s with this.
    """
    # 24 x 24 pixels, every one a colour of its own: enough for k = 300.
    values = np.arange(24 * 24)
    rgb = np.stack([values % 24 * 10, values // 24 * 10, values % 7 * 30], axis=-1)
    layer = Image(rgb.reshape(24, 24, 3).astype(np.uint8), rgb=True, name="warm-up")
    source = read_layer_source(layer)
    for n_colors in (8, 300):  # uint8 labels (k < 255), uint16 labels (k >= 255)
        result = quantize_source(source, n_colors, random_state=0, speed=10)
        prepare_result(result, source, build_layers=True)
