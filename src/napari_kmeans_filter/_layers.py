"""Quantise napari layers and show the result as layers.

This is the one code path shared by the dock widget and napari's console::

    from napari_kmeans_filter import quantize_layer
    result = quantize_layer(viewer.layers["chelsea"], 16, viewer=viewer)

Importing this module imports napari; the package root only imports it lazily.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_info

from napari_kmeans_filter import apply_palette, quantize

if TYPE_CHECKING:
    import napari

    from napari_kmeans_filter import QuantizeResult

    # One result per level of a multiscale layer (level 0 = full resolution), one palette.
    LayerResult = QuantizeResult | Sequence[QuantizeResult]

ProgressCallback = Callable[[float, str], None]

#: Key of the bookkeeping dict in a result layer's ``metadata``.
METADATA_KEY = "napari_kmeans_filter"

#: The palette of a multiscale layer is fitted on the largest level with at most this many
#: pixels (or the smallest level if none is that small): enough pixels for a faithful
#: palette, few enough that the fit holds its data in memory.
MULTISCALE_FIT_MAX_PIXELS = 4_000_000

_CLUSTERS_ROLE = "clusters"
_IMAGE_ROLE = "image"


class MultiscaleResult(list):
    """The results of quantising a multiscale layer: one per level, largest first.

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


@dataclass(frozen=True)
class LayerSource:
    """What the quantisation reads from an image layer, captured on the GUI thread.

    Holding the arrays (not the layer) means a worker thread never touches the layer, and
    replacing the layer's data while a run is going on cannot change what that run sees.

    Attributes
    ----------
    name : str
        The layer's name when the run started.
    levels : tuple of array-like
        The layer's data: one array, or every level of a multiscale layer (largest first).
    multiscale : bool
        Whether ``levels`` are the levels of a multiscale layer.
    rgb : bool
        Whether the last axis holds colour channels.
    """

    name: str
    levels: tuple[Any, ...]
    multiscale: bool
    rgb: bool

    @property
    def channel_axis(self) -> int | None:
        """The ``channel_axis`` to pass to the core: -1 for RGB(A) layers, else None."""
        return -1 if self.rgb else None

    @property
    def n_pixels(self) -> int:
        """Number of pixels at full resolution (every T/Z/Y/X position counts once)."""
        return _pixel_count(self.levels[0], self.rgb)


def read_layer_source(layer: Any) -> LayerSource:
    """Check that a layer can be quantised and capture what the quantisation needs.

    Parameters
    ----------
    layer : napari.layers.Image
        The layer to quantise.

    Returns
    -------
    LayerSource
        The layer's arrays and how to read them.

    Raises
    ------
    ValueError
        With a message meant for the user: no layer, or a layer with fewer than 2 pixels.
    TypeError
        If ``layer`` is not an image layer.
    """
    if layer is None:
        raise ValueError("There is no image layer to quantise: open or select an image first.")
    if not isinstance(layer, Image):
        raise TypeError(
            f"Layer {layer.name!r} is a {type(layer).__name__} layer; "
            "k-means colour quantisation works on Image layers only."
        )
    levels = tuple(layer.data) if layer.multiscale else (layer.data,)
    source = LayerSource(
        name=layer.name, levels=levels, multiscale=bool(layer.multiscale), rgb=bool(layer.rgb)
    )
    if source.n_pixels < 2:
        raise ValueError(
            f"Layer {layer.name!r} has {source.n_pixels} pixel(s): "
            "k-means needs at least 2 pixels to find colours."
        )
    return source


def quantize_source(
    source: LayerSource,
    n_colors: int = 8,
    *,
    progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> LayerResult:
    """Quantise what :func:`read_layer_source` captured. Safe to run off the GUI thread.

    Parameters
    ----------
    source : LayerSource
        The layer's arrays.
    n_colors : int
        Number of colours to find.
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
        For a layer whose values are all NaN, a colour space on a greyscale layer, or any
        parameter the core refuses.
    """
    color_space = kwargs.get("color_space", "rgb")
    if not source.rgb and color_space != "rgb":
        raise ValueError(
            f"color_space={color_space!r} needs an RGB layer; layer {source.name!r} is "
            "greyscale, so its intensities are clustered as they are (color_space='rgb')."
        )
    fit_level = _choose_fit_level(source) if source.multiscale else 0
    _reject_all_nan(source.name, source.levels[fit_level])

    if not source.multiscale:
        result = quantize(
            source.levels[0],
            n_colors,
            channel_axis=source.channel_axis,
            progress=progress,
            **kwargs,
        )
        _warm_up_labels_colormap(len(result.palette))
        return result

    # Fitting is the expensive part, so it gets half the bar; applying the palette to the
    # other levels shares the other half by pixel count.
    fitted = quantize(
        source.levels[fit_level],
        n_colors,
        channel_axis=source.channel_axis,
        progress=_sub_progress(progress, 0.0, 0.5),
        **kwargs,
    )
    other_levels = [i for i in range(len(source.levels)) if i != fit_level]
    other_pixels = sum(_pixel_count(source.levels[i], source.rgb) for i in other_levels)
    results: list[QuantizeResult] = [fitted] * len(source.levels)
    done = 0
    for index in other_levels:
        level_pixels = _pixel_count(source.levels[index], source.rgb)
        start = 0.5 + 0.5 * done / other_pixels
        stop = 0.5 + 0.5 * (done + level_pixels) / other_pixels
        results[index] = apply_palette(
            source.levels[index],
            fitted.palette,
            channel_axis=source.channel_axis,
            progress=_sub_progress(progress, start, stop),
        )
        done += level_pixels
    _warm_up_labels_colormap(len(fitted.palette))
    if progress is not None:
        progress(1.0, "done")
    return MultiscaleResult(results, fit_level)


def add_result_layers(
    viewer: napari.viewer.Viewer, result: LayerResult, source_layer: Image
) -> tuple[Labels, Image]:
    """Show a quantisation result as a Labels layer and an Image layer in ``viewer``.

    The Labels layer ``"<source> clusters"`` holds one label per palette colour (label
    ``i + 1`` for palette entry ``i``: napari keeps 0 for the background) coloured with the
    palette, so it looks like the filtered image. The Image layer ``"<source> k=<k>"``
    holds the quantised colours, displayed like the source (RGB, or the source's colormap,
    contrast limits and gamma). Both carry the source's scale, translate, rotate, shear,
    affine and units, and ``metadata`` with the palette, the input's colour count, the
    error and the parameters used.

    Calling this again for the same source updates those two layers in place (data,
    colormap, name, metadata) instead of adding new ones. The source is never modified.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where to add or update the layers.
    result : QuantizeResult or sequence of QuantizeResult
        From :func:`napari_kmeans_filter.quantize` on ``source_layer.data`` (channel
        axis -1 for RGB layers), or from :func:`quantize_layer`: for a multiscale
        source, one result per level, largest first.
    source_layer : napari.layers.Image
        The layer that was quantised.

    Returns
    -------
    labels_layer : napari.layers.Labels
        The clusters.
    image_layer : napari.layers.Image
        The quantised image.
    """
    level_results = _as_level_results(result)
    _check_result_fits_source(level_results, source_layer)
    summary = level_results[0]
    palette = summary.palette
    n_palette_colors = len(palette)
    multiscale = len(level_results) > 1 or bool(source_layer.multiscale)

    labels_data = [_one_based_labels(r.labels, n_palette_colors) for r in level_results]
    image_data = [r.image for r in level_results]
    if not multiscale:
        labels_data, image_data = labels_data[0], image_data[0]

    colormap = DirectLabelColormap(
        color_dict=_label_color_dict(palette.colors, source_layer)  # type: ignore[arg-type]
    )
    metadata = _result_metadata(result, source_layer)
    placement = _placement_of(source_layer)
    labels_name = f"{source_layer.name} clusters"
    image_name = f"{source_layer.name} k={n_palette_colors}"
    image_display = {
        "contrast_limits": list(source_layer.contrast_limits),
        "gamma": source_layer.gamma,
    }
    if not source_layer.rgb:
        image_display["colormap"] = source_layer.colormap

    labels_layer = _find_result_layer(viewer, source_layer, _CLUSTERS_ROLE, Labels)
    image_layer = _find_result_layer(viewer, source_layer, _IMAGE_ROLE, Image)
    if labels_layer is not None and labels_layer in _EDITED_CLUSTERS:
        # The user painted on the clusters: keep their work, show the new result beside it.
        labels_layer.metadata = {
            key: value for key, value in labels_layer.metadata.items() if key != METADATA_KEY
        }
        show_info(
            f"{labels_layer.name!r} was edited, so it is kept as it is; "
            "the new clusters go to a new layer."
        )
        labels_layer = None

    if image_layer is None:
        image_layer = viewer.add_image(
            image_data,
            name=image_name,
            rgb=bool(source_layer.rgb),
            multiscale=multiscale,
            interpolation2d="nearest",
            metadata={**metadata, METADATA_KEY: _bookkeeping(source_layer, _IMAGE_ROLE)},
            **image_display,
            **placement,
        )
    else:
        image_layer.data = image_data
        for attribute, value in {**image_display, **placement}.items():
            setattr(image_layer, attribute, value)
        image_layer.name = image_name
        image_layer.metadata = {**metadata, METADATA_KEY: _bookkeeping(source_layer, _IMAGE_ROLE)}

    if labels_layer is None:
        labels_layer = viewer.add_labels(
            labels_data,
            name=labels_name,
            multiscale=multiscale,
            colormap=colormap,
            # Opaque, so the clusters look exactly like the quantised image.
            opacity=1.0,
            metadata={**metadata, METADATA_KEY: _bookkeeping(source_layer, _CLUSTERS_ROLE)},
            **placement,
        )
        labels_layer.events.paint.connect(partial(_mark_edited, labels_layer))
    else:
        labels_layer.data = labels_data
        labels_layer.colormap = colormap
        for attribute, value in placement.items():
            setattr(labels_layer, attribute, value)
        labels_layer.name = labels_name
        labels_layer.metadata = {
            **metadata,
            METADATA_KEY: _bookkeeping(source_layer, _CLUSTERS_ROLE),
        }
    return labels_layer, image_layer


def quantize_layer(
    layer: Image,
    n_colors: int = 8,
    *,
    viewer: napari.viewer.Viewer | None = None,
    **kwargs: Any,
) -> LayerResult:
    """Quantise an image layer's colours with k-means, optionally showing the result.

    The same as the dock widget, in one line for napari's console or a script::

        result = quantize_layer(viewer.layers["chelsea"], 16, viewer=viewer,
                                color_space="lab", random_state=1)

    Parameters
    ----------
    layer : napari.layers.Image
        The layer to quantise. RGB(A) layers are clustered by colour (channel axis -1),
        others by intensity; every T/Z position of a stack shares one palette. Multiscale
        layers are fitted on one level (see :data:`MULTISCALE_FIT_MAX_PIXELS`) and that
        palette is applied to every level. Dask-backed data stays lazy.
    n_colors : int
        Number of colours to find. If the layer has fewer distinct colours, all of them are
        used and an info notification says so.
    viewer : napari.viewer.Viewer, optional
        If given, the result is shown with :func:`add_result_layers`.
    **kwargs
        Any other keyword of :func:`napari_kmeans_filter.quantize`, e.g. ``color_space``
        (RGB layers only), ``random_state``, ``progress``.

    Returns
    -------
    QuantizeResult or MultiscaleResult
        The result; for a multiscale layer a list of one result per level, largest first.

    Raises
    ------
    ValueError, TypeError
        If the layer cannot be quantised (no layer, not an Image layer, fewer than 2 pixels,
        only NaN) or the core refuses a parameter. The layer is never modified.
    """
    source = read_layer_source(layer)
    result = quantize_source(source, n_colors, **kwargs)
    if viewer is not None:
        add_result_layers(viewer, result, layer)
    announce_result(result, n_colors, source.name)
    return result


def describe_result(result: LayerResult) -> str:
    """One line saying what a run found, e.g. ``"243 → 16 colours, PSNR 30.9 dB"``.

    Parameters
    ----------
    result : QuantizeResult or sequence of QuantizeResult
        For a multiscale layer, the full-resolution level is described.

    Returns
    -------
    str
        Distinct input colours, palette size and PSNR (``∞`` when nothing was lost).
    """
    summary = _as_level_results(result)[0]
    psnr = float(summary.psnr)
    psnr_text = "∞" if math.isinf(psnr) else f"{psnr:.1f}"
    return f"{summary.n_input_colors} → {len(summary.palette)} colours, PSNR {psnr_text} dB"


def announce_result(result: LayerResult, n_colors: int, layer_name: str) -> None:
    """Tell the user (info notification) when the layer had fewer colours than asked for.

    Parameters
    ----------
    result : QuantizeResult or sequence of QuantizeResult
        The result of quantising ``layer_name``.
    n_colors : int
        The number of colours that was asked for.
    layer_name : str
        Name of the quantised layer, for the message.
    """
    found = _as_level_results(result)[0].n_input_colors
    if found < n_colors:
        show_info(
            f"Layer {layer_name!r} has only {found} distinct colour(s), fewer than the "
            f"{n_colors} requested: using all {found}."
        )


def _as_level_results(result: LayerResult) -> list[QuantizeResult]:
    if isinstance(result, Sequence):
        return list(result)
    return [result]


def _pixel_count(array: Any, rgb: bool) -> int:
    spatial_shape = tuple(array.shape[:-1] if rgb else array.shape)
    return math.prod(int(n) for n in spatial_shape)


def _choose_fit_level(source: LayerSource) -> int:
    for index, level in enumerate(source.levels):
        if _pixel_count(level, source.rgb) <= MULTISCALE_FIT_MAX_PIXELS:
            return index
    return len(source.levels) - 1


def _reject_all_nan(layer_name: str, array: Any) -> None:
    # Only in-memory arrays: for dask data this would be a full extra pass over the data,
    # and the core refuses non-finite values anyway.
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.inexact):
        return
    if not np.isnan(array.flat[0]) or not np.isnan(array).all():
        return
    raise ValueError(f"Layer {layer_name!r} contains only NaN values: there are no colours.")


def _sub_progress(
    progress: ProgressCallback | None, start: float, stop: float
) -> ProgressCallback | None:
    """Map a step's own 0..1 progress onto the [start, stop] part of the whole run."""
    if progress is None:
        return None

    def step_progress(fraction: float, message: str) -> None:
        progress(start + (stop - start) * float(fraction), message)

    return step_progress


def _labels_dtype(n_palette_colors: int) -> np.dtype:
    return np.dtype(np.uint8 if n_palette_colors < 256 else np.uint16)


def _warm_up_labels_colormap(n_palette_colors: int) -> None:
    """Compile napari's direct-colormap kernels for our labels dtype, off the GUI thread.

    napari JIT-compiles (numba) the function that paints labels through a
    DirectLabelColormap the first time it meets a dtype and memory layout; that takes
    seconds, and would otherwise freeze the viewer when the result layers are added.
    Contiguous and strided 2-D arrays cover the slices and thumbnails napari paints.
    """
    transparent = np.zeros(4)
    colormap = DirectLabelColormap(color_dict={None: transparent, 0: transparent, 1: np.ones(4)})
    tiny = np.ones((4, 4), dtype=_labels_dtype(n_palette_colors))
    colormap.map(tiny)
    colormap.map(tiny[::2, ::2])


def _one_based_labels(labels: Any, n_palette_colors: int) -> Any:
    # Palette entry i becomes label i + 1 because napari draws label 0 as background.
    dtype = _labels_dtype(n_palette_colors)
    shifted = labels.astype(dtype, copy=True)
    if isinstance(shifted, np.ndarray):
        shifted += 1
        return shifted
    return shifted + dtype.type(1)  # dask: stays lazy


def _display_rgba(colors: np.ndarray, source_layer: Image) -> np.ndarray:
    """RGBA in [0, 1] of palette colours, as the source layer displays those values."""
    colors = np.asarray(colors, dtype=np.float64)
    if colors.ndim == 1:
        colors = colors[:, np.newaxis]
    low, high = (float(limit) for limit in source_layer.contrast_limits)
    span = high - low if high > low else 1.0
    scaled = np.clip((colors - low) / span, 0.0, 1.0) ** float(source_layer.gamma)
    if source_layer.rgb:
        rgb = scaled[:, :3]
        return np.column_stack([rgb, np.ones(len(rgb))])
    # Greyscale: the layer's own colormap turns intensity into colour (grey for "gray").
    return np.asarray(source_layer.colormap.map(scaled[:, 0]), dtype=np.float64)


def _label_color_dict(colors: np.ndarray, source_layer: Image) -> dict[int | None, Any]:
    transparent = np.zeros(4)
    color_dict: dict[int | None, Any] = {None: transparent, 0: transparent}
    for index, rgba in enumerate(_display_rgba(colors, source_layer)):
        color_dict[index + 1] = rgba
    return color_dict


def _placement_of(layer: Image) -> dict[str, Any]:
    """The keywords that put a new layer exactly on top of ``layer``."""
    return {
        "scale": np.asarray(layer.scale),
        "translate": np.asarray(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": np.asarray(layer.affine.affine_matrix),
        "units": layer.units,
        "axis_labels": layer.axis_labels,
    }


def _to_builtin(value: Any) -> Any:
    """Python scalars for numpy scalars, so metadata stays JSON-able."""
    return value.item() if isinstance(value, np.generic) else value


def _result_metadata(result: LayerResult, source_layer: Image) -> dict[str, Any]:
    level_results = _as_level_results(result)
    fit_level = getattr(result, "fit_level", 0)
    summary = level_results[0]
    metadata: dict[str, Any] = {
        "source_layer": source_layer.name,
        "palette": summary.palette.to_dict(),
        "n_input_colors": _to_builtin(summary.n_input_colors),
        "mse": _to_builtin(summary.mse),
        "psnr": _to_builtin(summary.psnr),
        "params": dict(level_results[fit_level].params),
        # Layer data = palette index + 1, since napari draws label 0 as background.
        "label_offset": 1,
    }
    if len(level_results) > 1:
        metadata["multiscale_fit_level"] = fit_level
    return metadata


def _bookkeeping(source_layer: Image, role: str) -> dict[str, str]:
    return {"role": role, "source_id": str(source_layer.unique_id)}


# Clusters layers the user has painted on (weak: removed layers drop out).
_EDITED_CLUSTERS: weakref.WeakSet = weakref.WeakSet()


def _mark_edited(layer: Labels, _event: Any = None) -> None:
    _EDITED_CLUSTERS.add(layer)


def _check_result_fits_source(level_results: list[QuantizeResult], source_layer: Image) -> None:
    """Refuse, before anything is added, a result that was not made from ``source_layer``."""
    levels = list(source_layer.data) if source_layer.multiscale else [source_layer.data]
    if len(level_results) != len(levels):
        raise ValueError(
            f"The result has {len(level_results)} level(s) but layer {source_layer.name!r} has "
            f"{len(levels)}; for a multiscale layer use quantize_layer(layer, ...), which "
            "quantises every level."
        )
    for level, (level_result, data) in enumerate(zip(level_results, levels, strict=True)):
        expected = tuple(data.shape[:-1] if source_layer.rgb else data.shape)
        if tuple(level_result.labels.shape) != expected:
            raise ValueError(
                f"The result's labels have shape {tuple(level_result.labels.shape)} but level "
                f"{level} of layer {source_layer.name!r} has pixels of shape {expected}; was "
                "the result made from this layer (channel_axis=-1 for RGB layers)?"
            )


def _find_result_layer(
    viewer: napari.viewer.Viewer, source_layer: Image, role: str, layer_type: type
) -> Any:
    wanted = _bookkeeping(source_layer, role)
    for layer in viewer.layers:
        if isinstance(layer, layer_type) and layer.metadata.get(METADATA_KEY) == wanted:
            return layer
    return None


def is_result_layer(layer: Any) -> bool:
    """Whether ``layer`` was made by :func:`add_result_layers`.

    Parameters
    ----------
    layer : napari.layers.Layer
        Any layer.

    Returns
    -------
    bool
        True for the Labels and Image layers that show a quantisation result.
    """
    return METADATA_KEY in getattr(layer, "metadata", {})
