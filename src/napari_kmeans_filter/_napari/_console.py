"""The console API: quantize a layer and show the result in one line, as the dock widget does.

::

    from napari_kmeans_filter import quantize_layer
    result = quantize_layer(viewer.layers["chelsea"], 16, viewer=viewer)

Importing this module imports napari; the package root imports it lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_info

from ._prepare import as_level_results, prepare_result
from ._read import LayerSource, as_layer_list, read_layer_source
from ._run import quantize_source
from ._show import show_result

if TYPE_CHECKING:
    import napari

    from napari_kmeans_filter import QuantizeResult

    from ._prepare import LayerResult


def add_result_layers(
    viewer: napari.viewer.Viewer,
    result: LayerResult,
    source_layer: Image | Sequence[Image],
) -> tuple[Labels, Image]:
    """Show a quantization result as a Labels layer and an Image layer in ``viewer``.

    The Labels layer ``"<source> clusters"`` holds one label per palette color (label
    ``i + 1`` for palette entry ``i``; label 0, transparent, where the source's alpha is 0)
    colored with the palette as the source displays it, so it looks like the quantized
    image; its ``features`` hold one row per label (pixel count, fraction, mean color, RMS
    error) when the core provides them. The Image layer ``"<source> k=<k>"`` holds the
    quantized values, displayed like the source (RGB, or the source's colormap, contrast
    limits, gamma and blending). Both carry the source's scale, translate, rotate, shear,
    affine and units, and ``metadata`` with the palette, the input's color count, the
    error and the parameters used.

    Calling this again for the same source updates those layers in place (data,
    colormap, name, metadata) instead of adding new ones. The source is never modified.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where to add or update the layers.
    result : QuantizeResult or sequence of QuantizeResult
        From :func:`napari_kmeans_filter.quantize` on ``source_layer.data`` (channel
        axis -1 for RGB layers), or from :func:`quantize_layer`: for a multiscale
        source, one result per level, largest first.
    source_layer : napari.layers.Image or sequence of them
        The layer that was quantized; for layers clustered jointly, all of them in the
        order of the result's channels (then one image layer per source is shown, and the
        first is returned).

    Returns
    -------
    labels_layer : napari.layers.Labels
        The clusters.
    image_layer : napari.layers.Image
        The quantized image (of the first source layer).

    Raises
    ------
    ValueError
        If the result was not made from ``source_layer`` (other shape or level count).
    """
    layers = as_layer_list(source_layer)
    source = read_layer_source(layers)
    level_results = as_level_results(result)
    _check_result_fits_source(level_results, source)
    shown = show_result(viewer, prepare_result(result, source), layers)
    return shown.clusters, shown.images[0]


def quantize_layer(
    layer: Image | Sequence[Image],
    n_colors: int | str = 8,
    *,
    viewer: napari.viewer.Viewer | None = None,
    **kwargs: Any,
) -> LayerResult:
    """Quantize an image layer's colors with k-means, optionally showing the result.

    The same as the dock widget, in one line for napari's console or a script::

        result = quantize_layer(viewer.layers["chelsea"], 16, viewer=viewer,
                                color_space="lab", random_state=1)

    Parameters
    ----------
    layer : napari.layers.Image or sequence of them
        The layer to quantize. RGB(A) layers are clustered by color (channel axis -1),
        others by intensity; several greyscale layers of the same shape are clustered
        jointly (one value per layer at every pixel). Every T/Z position of a stack shares
        one palette. Multiscale layers are fitted on one level (see
        :data:`MULTISCALE_FIT_MAX_PIXELS`) and that palette is applied to every level.
        Dask-backed data stays lazy.
    n_colors : int
        Number of colors to find. If the layer has fewer distinct colors, all of them are
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
        If the layer cannot be quantized (no layer, not an Image layer, fewer than 2 pixels,
        only NaN) or the core refuses a parameter. The layer is never modified.
    """
    layers = as_layer_list(layer)
    source = read_layer_source(layers)
    result = quantize_source(source, n_colors, **kwargs)
    if viewer is not None:
        show_result(viewer, prepare_result(result, source), layers)
    announce_result(result, n_colors, source.name)
    return result


def describe_result(result: LayerResult) -> str:
    """One line saying what a run found, e.g. ``"243 → 16 colors, PSNR 30.9 dB"``.

    Parameters
    ----------
    result : QuantizeResult or sequence of QuantizeResult
        For a multiscale layer, the full-resolution level is described.

    Returns
    -------
    str
        Distinct input colors, palette size and PSNR (``∞`` when nothing was lost); for
        ``n_colors="auto"``, whether the target was reached.
    """
    level_results = as_level_results(result)
    summary = level_results[0]
    psnr = float(summary.psnr)
    psnr_text = "∞" if math.isinf(psnr) else f"{psnr:.1f}"
    kept = len(summary.palette)
    text = f"{summary.n_input_colors} → {kept} color{'' if kept == 1 else 's'}, PSNR {psnr_text} dB"
    fitted = level_results[getattr(result, "fit_level", 0)]
    curve = getattr(fitted, "error_curve", None)
    if curve is not None:
        targets = []
        if fitted.params.get("target_psnr") is not None:
            targets.append(f"{fitted.params['target_psnr']:g} dB")
        if fitted.params.get("target_delta_e") is not None:
            targets.append(f"ΔE {fitted.params['target_delta_e']:g}")
        target = " and ".join(targets)
        if fitted.params.get("dither"):
            target += " before dithering"  # the target is judged on the undithered fit
        text += f" (fewest for {target})" if curve.get("reached") else f" ({target} not reached)"
    return text


def announce_result(result: LayerResult, n_colors: int | str, layer_name: str) -> None:
    """Tell the user (info notification) when the layer had fewer colors than asked for.

    Parameters
    ----------
    result : QuantizeResult or sequence of QuantizeResult
        The result of quantizing ``layer_name``.
    n_colors : int or str
        The number of colors that was asked for (nothing is said for ``"auto"``).
    layer_name : str
        Name of the quantized layer, for the message.
    """
    if not isinstance(n_colors, int | np.integer):
        return
    found = as_level_results(result)[0].n_input_colors
    if found < n_colors:
        show_info(
            f"Layer {layer_name!r} has only {found} distinct color(s), fewer than the "
            f"{n_colors} requested: using all {found}."
        )


def _check_result_fits_source(level_results: list[QuantizeResult], source: LayerSource) -> None:
    """Refuse, before anything is added, a result that was not made from the source."""
    n_levels = len(source.channels[0])
    if len(level_results) != n_levels:
        raise ValueError(
            f"The result has {len(level_results)} level(s) but layer {source.name!r} has "
            f"{n_levels}; for a multiscale layer use quantize_layer(layer, ...), which "
            "quantizes every level."
        )
    for level, level_result in enumerate(level_results):
        expected = source.spatial_shape(level)
        if tuple(level_result.labels.shape) != expected:
            raise ValueError(
                f"The result's labels have shape {tuple(level_result.labels.shape)} but level "
                f"{level} of layer {source.name!r} has pixels of shape {expected}; was "
                "the result made from this layer (channel_axis=-1 for RGB layers)?"
            )
