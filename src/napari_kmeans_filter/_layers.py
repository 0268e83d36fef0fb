"""Quantize napari layers and show the results as layers.

This is the one code path shared by the dock widget and napari's console::

    from napari_kmeans_filter import quantize_layer
    result = quantize_layer(viewer.layers["chelsea"], 16, viewer=viewer)

The work is split by thread: :func:`read_layer_source` runs on the GUI thread and only
captures arrays and display settings; :func:`quantize_source`, :func:`apply_palette_source`
and :func:`prepare_result` may run on a worker thread (they never touch a layer); and
:func:`show_result` runs on the GUI thread again and only hands ready arrays to layers.

Importing this module imports napari; the package root only imports it lazily.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_info

from napari_kmeans_filter import Palette, apply_palette, quantize

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

#: Which result layers to create: the Labels layer of clusters and/or the quantized image.
CLUSTERS = "clusters"
IMAGE = "image"
BOTH = (CLUSTERS, IMAGE)

#: Keyword parameters of the core's ``quantize``: console keywords are checked against
#: them before any work (a misspelt option would otherwise fail after the NaN check).
CORE_PARAMETERS = frozenset(inspect.signature(quantize).parameters)


# --------------------------------------------------------------------------------------
# What a run reads from the layers (GUI thread)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerDisplay:
    """How a source layer turns its values into colors on screen, captured on the GUI thread.

    Attributes
    ----------
    name : str
        The layer's name.
    rgb : bool
        Whether the layer is RGB(A).
    contrast_limits : tuple of float
        Values shown as the darkest and brightest colors.
    gamma : float
        The layer's gamma.
    colormap : napari.utils.Colormap or None
        The colormap of a greyscale layer (None for RGB).
    blending : str
        The layer's blending mode (``"additive"`` for channels opened with
        ``channel_axis``, ``"translucent"`` by default).
    """

    name: str
    rgb: bool
    contrast_limits: tuple[float, float]
    gamma: float
    colormap: Any
    blending: str

    @classmethod
    def of(cls, layer: Image) -> LayerDisplay:
        """Capture the display settings of ``layer``."""
        return cls(
            name=layer.name,
            rgb=bool(layer.rgb),
            contrast_limits=tuple(float(v) for v in layer.contrast_limits),
            gamma=float(layer.gamma),
            colormap=None if layer.rgb else layer.colormap,
            blending=str(layer.blending),
        )


@dataclass(frozen=True)
class Window:
    """Where the quantized part lies in the source layer's data (full-resolution) coordinates.

    Data index ``j`` of the result along an axis is source index ``start + j * step``.
    The whole layer is ``start = 0, step = 1`` on every axis.

    Attributes
    ----------
    start : tuple of int
        First source index along each spatial axis.
    step : tuple of float
        Source pixels per result pixel along each spatial axis (above 1 for a downsampled
        preview or a coarse pyramid level).
    """

    start: tuple[int, ...]
    step: tuple[float, ...]

    @classmethod
    def whole(cls, ndim: int) -> Window:
        return cls((0,) * ndim, (1.0,) * ndim)

    @property
    def is_whole(self) -> bool:
        return not any(self.start) and all(s == 1 for s in self.step)


@dataclass(frozen=True)
class SliceRequest:
    """The viewer's current slice: its world point and the world axes on screen.

    Attributes
    ----------
    point : tuple of float
        ``viewer.dims.point``.
    displayed : tuple of int
        ``viewer.dims.displayed``: world axes shown on the canvas; every other axis is
        fixed at ``point``.
    """

    point: tuple[float, ...]
    displayed: tuple[int, ...]

    @classmethod
    def of(cls, viewer: napari.viewer.Viewer) -> SliceRequest:
        return cls(tuple(viewer.dims.point), tuple(viewer.dims.displayed))


@dataclass(frozen=True, eq=False)
class LayerSource:
    """What a run reads from one or more image layers, captured on the GUI thread.

    Holding the arrays (not the layers) means a worker thread never touches a layer, and
    replacing a layer's data while a run is going on cannot change what that run sees.

    Attributes
    ----------
    channels : tuple of tuple of array-like
        Per source layer, its levels (one array, or every level of a multiscale layer,
        largest first), possibly cut to the current slice or downsampled (see ``window``).
    displays : tuple of LayerDisplay
        Per source layer, how it shows its values.
    layer_ids : tuple of str
        Per source layer, its ``unique_id`` (result layers remember their sources by it).
    multiscale : bool
        Whether ``channels`` hold the levels of multiscale layers.
    window : Window
        Where level 0 lies in the source layers' full-resolution data.
    placement : dict
        Scale, translate, rotate, shear, affine, units and axis labels that put a result
        exactly on the quantized part of the first source layer.
    mask_factory : callable or None
        Makes the mask of the pixels that vote in the fit (spatial shape of level 0);
        None for all pixels. Rasterizing a region is left to the first use of
        :attr:`mask`, on the worker thread.
    """

    channels: tuple[tuple[Any, ...], ...]
    displays: tuple[LayerDisplay, ...]
    layer_ids: tuple[str, ...]
    multiscale: bool
    window: Window
    placement: dict = field(default_factory=dict)
    mask_factory: Callable[[], Any] | None = None
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(d.name for d in self.displays))

    @cached_property
    def mask(self) -> Any:
        """Pixels that vote in the fit (spatial shape of level 0), or None for all."""
        return None if self.mask_factory is None else self.mask_factory()

    @property
    def name(self) -> str:
        """The source's name for messages and result layers: ``"DAPI + GFP"`` when joint."""
        return " + ".join(self.names)

    @property
    def joint(self) -> bool:
        """Whether several greyscale layers are clustered together as channels."""
        return len(self.channels) > 1

    @property
    def rgb(self) -> bool:
        """Whether the (single) source layer is RGB(A)."""
        return self.displays[0].rgb

    @cached_property
    def levels(self) -> tuple[Any, ...]:
        """The arrays handed to the core: joint layers stacked on a last channel axis.

        Stacking copies in-memory data, so it happens here, on first use (in the worker),
        not when the source is captured.
        """
        if not self.joint:
            return self.channels[0]
        stacked = []
        for level in zip(*self.channels, strict=True):
            if any(_is_dask(a) for a in level):
                import dask.array as da

                stacked.append(da.stack([da.asarray(a) for a in level], axis=-1))
            else:
                stacked.append(np.stack([np.asarray(a) for a in level], axis=-1))
        return tuple(stacked)

    def core_keywords(self) -> dict[str, Any]:
        """``channel_axis`` (and for joint channels ``alpha=False``) for the core."""
        if self.joint:
            # Four stacked channels must not be mistaken for RGBA.
            return {"channel_axis": -1, "alpha": False}
        return {"channel_axis": -1 if self.rgb else None}

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.channels[0][0].dtype)

    @property
    def has_alpha(self) -> bool:
        return self.rgb and int(self.channels[0][0].shape[-1]) == 4

    def spatial_shape(self, level: int = 0) -> tuple[int, ...]:
        shape = tuple(int(n) for n in self.channels[0][level].shape)
        return shape[:-1] if self.rgb else shape

    @property
    def n_pixels(self) -> int:
        """Number of pixels of level 0 (every T/Z/Y/X position counts once)."""
        return math.prod(self.spatial_shape())


def read_layer_source(
    layers: Image | Sequence[Image],
    *,
    current_slice: SliceRequest | None = None,
    max_pixels: int | None = None,
    region: Shapes | Labels | None = None,
) -> LayerSource:
    """Check that layers can be quantized and capture what the quantization needs.

    Parameters
    ----------
    layers : napari.layers.Image or sequence of them
        One layer, or several greyscale layers of the same shape and dtype to cluster
        jointly (each pixel is one point with a value per layer, e.g. DAPI and GFP).
    current_slice : SliceRequest, optional
        Only the slice the viewer shows (every axis not on screen fixed at its current
        position); the result keeps those axes with length 1 and sits on that slice.
    max_pixels : int, optional
        Downsample (a coarser pyramid level, then a regular stride over the axes on
        screen) to at most about this many pixels: for a quick preview.
    region : napari.layers.Shapes or napari.layers.Labels, optional
        Only the pixels inside the shapes (or labelled > 0) vote in the fit; every pixel
        is still painted.

    Returns
    -------
    LayerSource

    Raises
    ------
    ValueError
        With a message meant for the user: no layer, fewer than 2 pixels, layers that
        cannot be clustered together, or an empty region.
    TypeError
        If a layer is not an image layer.
    """
    layers = _as_layer_list(layers)
    _check_joint_layers(layers)
    first = layers[0]
    full_shape = _layer_spatial_shape(first)
    levels_per_layer = [
        tuple(layer.data) if layer.multiscale else (layer.data,) for layer in layers
    ]
    fixed = _fixed_indices(first, current_slice) if current_slice is not None else {}
    full_mask = _region_mask_factory(region, first, full_shape) if region is not None else None
    mask_factory = None
    rgb = bool(first.rgb)

    if max_pixels is not None:
        chosen, window = _preview_selection(levels_per_layer[0], rgb, fixed, max_pixels)
        level_index, index = chosen
        channels = tuple((_cut(levels[level_index], index, rgb),) for levels in levels_per_layer)
        multiscale = False
        if full_mask is not None:
            preview_levels = levels_per_layer[0]

            def mask_factory() -> Any:
                return _cut_mask(full_mask(), full_shape, level_index, preview_levels, rgb, index)
    else:
        shape0 = full_shape
        index_per_level = [
            _level_index(fixed, shape0, _spatial(level.shape, rgb)) for level in levels_per_layer[0]
        ]
        channels = tuple(
            tuple(_cut(level, index_per_level[i], rgb) for i, level in enumerate(levels))
            for levels in levels_per_layer
        )
        multiscale = bool(first.multiscale)
        start = tuple(fixed.get(axis, 0) for axis in range(len(shape0)))
        window = Window(start, (1.0,) * len(shape0))
        if full_mask is not None and fixed:
            slice_index = index_per_level[0]

            def mask_factory() -> Any:
                return full_mask()[slice_index]

        elif full_mask is not None:
            mask_factory = full_mask

    source = LayerSource(
        channels=channels,
        displays=tuple(LayerDisplay.of(layer) for layer in layers),
        layer_ids=tuple(str(layer.unique_id) for layer in layers),
        multiscale=multiscale,
        window=window,
        placement=_placement_of(first, window),
        mask_factory=mask_factory,
    )
    if source.n_pixels < 2:
        raise ValueError(
            f"Layer {source.name!r} has {source.n_pixels} pixel(s) here: "
            "k-means needs at least 2 pixels to find colors."
        )
    return source


def _as_layer_list(layers: Any) -> list[Image]:
    if layers is None or (isinstance(layers, Sequence) and len(layers) == 0):
        raise ValueError("There is no image layer to quantize: open or select an image first.")
    layers = list(layers) if isinstance(layers, Sequence) else [layers]
    for layer in layers:
        if not isinstance(layer, Image):
            raise TypeError(
                f"Layer {getattr(layer, 'name', layer)!r} is a {type(layer).__name__} layer; "
                "k-means color quantization works on Image layers only."
            )
    return layers


def _check_joint_layers(layers: list[Image]) -> None:
    if len(layers) == 1:
        return
    names = ", ".join(repr(layer.name) for layer in layers)
    if any(layer.rgb for layer in layers):
        raise ValueError(
            f"Layers {names}: only greyscale layers can be clustered together as channels; "
            "an RGB layer already has its colors."
        )
    shapes = {_level_shapes(layer) for layer in layers}
    if len(shapes) > 1:
        raise ValueError(
            f"Layers {names} have different shapes {sorted(shapes)}: layers clustered "
            "together must have the same shape (one value per layer at every pixel)."
        )
    dtypes = {np.dtype(layer.dtype) for layer in layers}
    if len(dtypes) > 1:
        raise ValueError(
            f"Layers {names} have different dtypes ({', '.join(sorted(map(str, dtypes)))}): "
            "layers clustered together must share one dtype."
        )


def _level_shapes(layer: Image) -> tuple[tuple[int, ...], ...]:
    levels = layer.data if layer.multiscale else [layer.data]
    return tuple(tuple(int(n) for n in level.shape) for level in levels)


def _spatial(shape: Sequence[int], rgb: bool) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    return shape[:-1] if rgb else shape


def _layer_spatial_shape(layer: Image) -> tuple[int, ...]:
    level0 = layer.data[0] if layer.multiscale else layer.data
    return _spatial(level0.shape, bool(layer.rgb))


def _fixed_indices(layer: Image, request: SliceRequest) -> dict[int, int]:
    """Data index of the current slice along every layer axis that is not on screen."""
    shape = _layer_spatial_shape(layer)
    ndim = len(shape)
    offset = len(request.point) - ndim  # layers are aligned on their last axes
    displayed = {axis - offset for axis in request.displayed}
    coords = layer.world_to_data(request.point)
    return {
        axis: int(np.clip(np.round(coords[axis]), 0, shape[axis] - 1))
        for axis in range(ndim)
        if axis not in displayed
    }


def _level_index(
    fixed: dict[int, int], shape0: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[slice, ...]:
    """Index of one pyramid level: fixed axes cut to their (scaled) slice, others whole."""
    index = []
    for axis, n in enumerate(shape):
        if axis in fixed:
            i = min(fixed[axis] * n // shape0[axis], n - 1)
            index.append(slice(i, i + 1))
        else:
            index.append(slice(None))
    return tuple(index)


def _cut(array: Any, index: tuple[slice, ...], rgb: bool) -> Any:
    if all(s == slice(None) for s in index):
        return array
    return array[index + ((slice(None),) if rgb else ())]


def _preview_selection(
    levels: tuple[Any, ...], rgb: bool, fixed: dict[int, int], max_pixels: int
) -> tuple[tuple[int, tuple[slice, ...]], Window]:
    """The pyramid level and strided index giving at most about ``max_pixels`` pixels."""
    shape0 = _spatial(levels[0].shape, rgb)
    free_axes = [axis for axis in range(len(shape0)) if axis not in fixed]
    chosen_level = len(levels) - 1
    for number, level in enumerate(levels):
        shape = _spatial(level.shape, rgb)
        if math.prod(shape[axis] for axis in free_axes) <= max_pixels:
            chosen_level = number
            break
    shape = _spatial(levels[chosen_level].shape, rgb)
    n_free = math.prod(shape[axis] for axis in free_axes)
    stride = max(1, math.ceil((n_free / max_pixels) ** (1 / max(len(free_axes), 1))))
    index = list(_level_index(fixed, shape0, shape))
    for axis in free_axes:
        index[axis] = slice(None, None, stride)
    start = tuple(fixed.get(axis, 0) for axis in range(len(shape0)))
    step = tuple(
        1.0 if axis in fixed else shape0[axis] / shape[axis] * stride for axis in range(len(shape0))
    )
    return (chosen_level, tuple(index)), Window(start, step)


def _cut_mask(
    mask: Any,
    shape0: tuple[int, ...],
    level_index: int,
    levels: tuple[Any, ...],
    rgb: bool,
    index: tuple[slice, ...],
) -> Any:
    if level_index:
        mask = _resample_nearest(mask, _spatial(levels[level_index].shape, rgb))
    return mask[index]


def _resample_nearest(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resampling of a mask to a pyramid level's shape."""
    mask = np.asarray(mask)
    if mask.shape == tuple(shape):
        return mask
    grids = [np.arange(n) * m // n for n, m in zip(shape, mask.shape, strict=True)]
    return mask[np.ix_(*grids)]


def _region_mask(region: Any, image: Image, shape: tuple[int, ...]) -> Any:
    """Boolean mask of ``image``'s pixels inside a Shapes layer or labelled in a Labels layer."""
    return _region_mask_factory(region, image, shape)()


def _region_mask_factory(region: Any, image: Image, shape: tuple[int, ...]) -> Callable[[], Any]:
    """Read a region layer now (GUI thread); rasterize it when the mask is first needed.

    Shapes are moved into ``image``'s data coordinates through world coordinates (so
    differently scaled or translated layers line up) and rasterized by napari's own
    ``Shapes.to_masks``; a Labels region is its labels > 0. A region with fewer axes than
    the image selects the same pixels along the image's leading axes (every frame).
    """
    if isinstance(region, Shapes):
        if region.nshapes == 0:
            raise ValueError(f"Region layer {region.name!r} has no shapes: draw a region first.")
        ndim = min(region.ndim, len(shape))
        vertices = [
            np.asarray(
                [image.world_to_data(region.data_to_world(v))[-ndim:] for v in shape_vertices],
                dtype=float,
            )
            for shape_vertices in region.data
        ]
        shape_types = list(region.shape_type)

        def rasterize() -> Any:
            in_image = Shapes(vertices, shape_type=shape_types, ndim=ndim)
            return in_image.to_masks(mask_shape=shape[-ndim:]).any(axis=0)

    elif isinstance(region, Labels):
        data = region.data[0] if region.multiscale else region.data
        ndim = data.ndim
        if ndim > len(shape) or tuple(data.shape) != tuple(shape[-ndim:]):
            raise ValueError(
                f"Region layer {region.name!r} has shape {tuple(data.shape)}, which does not "
                f"match the image's pixels {shape}: a region Labels layer must have the "
                "image's shape (or its last axes)."
            )

        def rasterize() -> Any:
            return data > 0

    else:
        raise TypeError(f"A region must be a Shapes or Labels layer; got {type(region).__name__}.")
    region_name, image_name = region.name, image.name

    def make_mask() -> Any:
        mask = rasterize()
        if len(mask.shape) < len(shape):
            if _is_dask(mask):
                import dask.array as da

                mask = da.broadcast_to(mask, shape)
            else:
                mask = np.broadcast_to(mask, shape)
        if not _is_dask(mask) and not mask.any():
            raise ValueError(
                f"Region layer {region_name!r} covers no pixel of {image_name!r}: "
                "draw the region over the image."
            )
        return mask

    return make_mask


# --------------------------------------------------------------------------------------
# The work (safe on a worker thread: no layer is touched)
# --------------------------------------------------------------------------------------


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
            _resample_nearest(source.mask, source.spatial_shape(fit_level))
            if fit_level
            else source.mask
        )

    if not source.multiscale:
        result = quantize(levels[0], n_colors, progress=progress, **keywords)
        return result

    # Fitting is the expensive part, so it gets half the bar; applying the palette to the
    # other levels shares the other half by pixel count.
    fitted = quantize(
        levels[fit_level], n_colors, progress=_sub_progress(progress, 0.0, 0.5), **keywords
    )
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
            progress=_sub_progress(progress, start, stop),
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


@dataclass(frozen=True, eq=False)
class PreparedResult:
    """A result turned into layers, ready to hand over on the GUI thread.

    Everything expensive (label shifting and masking, contiguous copies, colors and their
    compiled colormap kernels, the per-cluster table, and the new layers themselves with
    their thumbnails) is done by :func:`prepare_result`, off the GUI thread, so that
    showing a result is only inserting layers or handing arrays to existing ones.

    Attributes
    ----------
    result : QuantizeResult or MultiscaleResult
        The core's result.
    source : LayerSource
        What was quantized.
    outputs : tuple of str
        Which result layers to show (``"clusters"``, ``"image"``).
    preview : bool
        Whether this is a quick preview (image layers only, named "... (preview)").
    labels_data : array-like or list of array-like
        Clusters layer data: palette index + 1, and 0 where the source is transparent.
    image_data : list
        Per source layer, its quantized values (one array, or one per level).
    swatches : ndarray, shape (k, 4)
        RGBA in [0, 1] of every palette color as the source layers display it.
    colormap : DirectLabelColormap or None
        The clusters layer's colormap (label i + 1 = swatch i, label 0 transparent), if
        the clusters are shown.
    features : dict of ndarray or None
        One row per label for the clusters layer's ``features`` (None if the core has no
        per-cluster statistics).
    metadata : dict
        JSON-able description of the result for the layers' ``metadata``.
    new_clusters : napari.layers.Labels or None
        A ready clusters layer, used if the viewer has none for this source yet.
    new_images : list of napari.layers.Image
        Ready image layers, one per source layer, likewise.
    """

    result: Any
    source: LayerSource
    outputs: tuple[str, ...]
    preview: bool
    labels_data: Any
    image_data: list
    swatches: np.ndarray
    colormap: DirectLabelColormap | None
    features: dict | None
    metadata: dict
    new_clusters: Labels | None = None
    new_images: list = field(default_factory=list)

    @property
    def palette(self) -> Palette:
        return _as_level_results(self.result)[0].palette

    @property
    def n_colors(self) -> int:
        return len(self.palette)

    @property
    def group(self) -> str:
        """The sources' ids, as result layers remember them."""
        return "+".join(self.source.layer_ids)

    @property
    def clusters_name(self) -> str:
        return f"{self.source.name} clusters"

    def image_name(self, channel: int) -> str:
        suffix = " (preview)" if self.preview else ""
        return f"{self.source.names[channel]} k={self.n_colors}{suffix}"

    def clusters_blending(self) -> str:
        # Clusters of additive channels add up like their sources instead of hiding the
        # channels under them; otherwise they are opaque, to look like the quantized image.
        blendings = {display.blending for display in self.source.displays}
        return "additive" if blendings == {"additive"} else "translucent"

    def clusters_metadata(self) -> dict:
        return {**self.metadata, METADATA_KEY: _bookkeeping(self.group, CLUSTERS)}

    def image_bookkeeping(self, channel: int) -> dict:
        return _bookkeeping(self.group, IMAGE, channel if self.source.joint else None)

    def image_metadata(self, channel: int) -> dict:
        info = {**self.image_bookkeeping(channel), "preview": self.preview}
        return {**self.metadata, METADATA_KEY: info}

    def image_display(self, channel: int) -> dict[str, Any]:
        display = self.source.displays[channel]
        keywords: dict[str, Any] = {
            "contrast_limits": list(display.contrast_limits),
            "gamma": display.gamma,
            "blending": display.blending,
        }
        if not display.rgb:
            keywords["colormap"] = display.colormap
        return keywords

    def make_clusters_layer(self) -> Labels:
        """A new clusters layer for this result (safe off the GUI thread)."""
        return Labels(
            self.labels_data,
            name=self.clusters_name,
            multiscale=self.source.multiscale,
            colormap=self.colormap,
            opacity=1.0,
            blending=self.clusters_blending(),
            features=self.features if self.features is not None else {},
            metadata=self.clusters_metadata(),
            **self.source.placement,
        )

    def make_image_layer(self, channel: int) -> Image:
        """A new image layer for source layer ``channel`` (safe off the GUI thread)."""
        return Image(
            self.image_data[channel],
            name=self.image_name(channel),
            rgb=self.source.displays[channel].rgb,
            multiscale=self.source.multiscale,
            interpolation2d="nearest",
            metadata=self.image_metadata(channel),
            **self.image_display(channel),
            **self.source.placement,
        )


def prepare_result(
    result: LayerResult,
    source: LayerSource,
    *,
    outputs: Sequence[str] = BOTH,
    preview: bool = False,
    build_layers: bool = False,
) -> PreparedResult:
    """Turn a core result into layer data, colors and a per-cluster table (worker-safe).

    Parameters
    ----------
    result : QuantizeResult or MultiscaleResult
        From :func:`quantize_source` or :func:`apply_palette_source` on ``source``.
    source : LayerSource
        What was quantized.
    outputs : sequence of {"clusters", "image"}
        Which result layers will be shown.
    preview : bool
        A quick preview: image layers only, no per-cluster table.
    build_layers : bool
        Also build the new layers here (on a worker thread: creating a napari layer
        slices its data and draws its thumbnail, which would otherwise block the GUI).

    Returns
    -------
    PreparedResult
    """
    outputs = (IMAGE,) if preview else tuple(outputs)
    level_results = _as_level_results(result)
    palette = level_results[0].palette
    n_palette_colors = len(palette)
    labels = []
    if CLUSTERS in outputs:
        for level, level_result in enumerate(level_results):
            alpha = source.levels[level][..., 3] if source.has_alpha else None
            labels.append(_one_based_labels(level_result.labels, n_palette_colors, alpha))
    images = []
    for channel in range(len(source.channels)):
        per_level = []
        for level_result in level_results:
            data = level_result.image[..., channel] if source.joint else level_result.image
            per_level.append(data if _is_dask(data) else np.ascontiguousarray(data))
        images.append(per_level if source.multiscale else per_level[0])
    swatches = _display_rgba(palette.colors, source.displays)
    with_features = CLUSTERS in outputs
    prepared = PreparedResult(
        result=result,
        source=source,
        outputs=outputs,
        preview=preview,
        labels_data=(labels if source.multiscale else labels[0]) if labels else None,
        image_data=images,
        swatches=swatches,
        colormap=(
            _labels_colormap(swatches, _labels_dtype(n_palette_colors))
            if CLUSTERS in outputs
            else None
        ),
        features=_features_table(level_results[0], source) if with_features else None,
        metadata=_result_metadata(result, source),
    )
    if build_layers:
        if CLUSTERS in outputs:
            object.__setattr__(prepared, "new_clusters", prepared.make_clusters_layer())
        if IMAGE in outputs:
            object.__setattr__(
                prepared,
                "new_images",
                [prepared.make_image_layer(c) for c in range(len(source.channels))],
            )
    return prepared


def _features_table(result: QuantizeResult, source: LayerSource) -> dict:
    """The clusters layer's ``features``: the core's per-cluster statistics, one row per label.

    The core numbers clusters from 0 (palette order); the layer shows them as labels from
    1, so ``label`` (and napari's ``index`` column, which maps label values to rows) is
    the palette index + 1. The core's per-channel means (``mean_0``, ``mean_1``...) are
    named after what the channels are: ``mean_r``, ``mean_g``, ``mean_b`` for RGB(A),
    ``mean_<layer name>`` for layers clustered together, ``mean`` for one greyscale layer.
    For a stack (more than two spatial axes) in memory, ``count_0``, ``count_1``... are
    each cluster's pixels in every index of the first axis (a time point or a slice):
    the area of each color class over time. Dask-backed stacks get no per-frame counts,
    which would compute the whole stack.
    """
    shape = source.spatial_shape()
    frame_axis = None
    if len(shape) > 2 and shape[0] > 1 and not _is_dask(result.labels):
        frame_axis = 0
    stats = result.cluster_stats(frame_axis=frame_axis)
    table = {name: np.asarray(column) for name, column in stats.items()}
    labels = np.asarray(table.pop("label"), dtype=np.int64) + 1
    frame_counts = table.pop("frame_counts", None)
    if source.joint:
        channel_names = [f"mean_{name}" for name in source.names]
    elif source.rgb:
        channel_names = ["mean_r", "mean_g", "mean_b"]
    else:
        channel_names = ["mean"]
    renamed = {f"mean_{channel}": name for channel, name in enumerate(channel_names)}
    table = {renamed.get(name, name): column for name, column in table.items()}
    if frame_counts is not None:
        start = source.window.start[0]
        for frame, column in enumerate(np.asarray(frame_counts).T):
            table[f"count_{start + frame}"] = column
    return {"index": labels, "label": labels, **table}


# --------------------------------------------------------------------------------------
# Showing a result (GUI thread)
# --------------------------------------------------------------------------------------


@dataclass
class ResultLayers:
    """The layers showing one result: the clusters (or None) and one image per source."""

    clusters: Labels | None
    images: list[Image]


def show_result(
    viewer: napari.viewer.Viewer, prepared: PreparedResult, source_layers: Sequence[Image]
) -> ResultLayers:
    """Add (or update in place) the layers showing a prepared result.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where the layers go.
    prepared : PreparedResult
        From :func:`prepare_result`.
    source_layers : sequence of napari.layers.Image
        The layers that were quantized, in the order of ``prepared.source``.

    Returns
    -------
    ResultLayers
    """
    steps = show_result_steps(viewer, prepared, source_layers)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def show_result_steps(
    viewer: napari.viewer.Viewer, prepared: PreparedResult, source_layers: Sequence[Image]
) -> Generator[None, None, ResultLayers]:
    """:func:`show_result` one layer at a time: a generator that yields after each layer.

    Inserting a layer builds its visuals on the GUI thread; a caller that lets the event
    loop run between steps (the widget does) keeps every freeze to one layer's worth.
    The generator's return value (``StopIteration.value``) is the :class:`ResultLayers`.
    """
    image_layers = []
    if IMAGE in prepared.outputs:
        for channel in range(len(source_layers)):
            image_layers.append(_show_image(viewer, prepared, channel))
            yield
    if not prepared.preview:
        _remove_previews(viewer, prepared.group)  # what a Run did not take over
    clusters_layer = None
    if CLUSTERS in prepared.outputs:
        clusters_layer = _show_clusters(viewer, prepared)
    return ResultLayers(clusters_layer, image_layers)


def _show_clusters(viewer: napari.viewer.Viewer, prepared: PreparedResult) -> Labels:
    bookkeeping = _bookkeeping(prepared.group, CLUSTERS)
    layer = _find_result_layer(viewer, bookkeeping, Labels)
    if layer is not None and layer in _EDITED_CLUSTERS:
        # The user painted on the clusters: keep their work, show the new result beside it.
        layer.metadata = {k: v for k, v in layer.metadata.items() if k != METADATA_KEY}
        show_info(
            f"{layer.name!r} was edited, so it is kept as it is; "
            "the new clusters go to a new layer."
        )
        layer = None
    if layer is not None and bool(layer.multiscale) != prepared.source.multiscale:
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        layer = prepared.new_clusters or prepared.make_clusters_layer()
        viewer.layers.append(layer)
        layer.events.paint.connect(partial(_mark_edited, layer))
        return layer
    layer.data = prepared.labels_data
    layer.colormap = prepared.colormap
    layer.features = prepared.features if prepared.features is not None else {}
    _update_attributes(
        layer, {"blending": prepared.clusters_blending(), **prepared.source.placement}
    )
    layer.name = prepared.clusters_name
    layer.metadata = prepared.clusters_metadata()
    return layer


def _show_image(viewer: napari.viewer.Viewer, prepared: PreparedResult, channel: int) -> Image:
    # A preview only ever updates a preview layer: a Run's result is the user's, kept
    # until the next Run. A Run updates its earlier result, else takes over the preview.
    wanted = prepared.image_bookkeeping(channel)
    layer = _find_result_layer(viewer, wanted, Image, preview=prepared.preview)
    if layer is None and not prepared.preview:
        layer = _find_result_layer(viewer, wanted, Image, preview=True)
    placement = prepared.source.placement
    if layer is not None and (
        bool(layer.multiscale) != prepared.source.multiscale
        or layer.ndim != len(placement["scale"])
    ):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        new_images = prepared.new_images
        layer = new_images[channel] if new_images else prepared.make_image_layer(channel)
        viewer.layers.append(layer)
        return layer
    layer.data = prepared.image_data[channel]
    _update_attributes(layer, {**prepared.image_display(channel), **placement})
    layer.name = prepared.image_name(channel)
    layer.metadata = prepared.image_metadata(channel)
    return layer


def _update_attributes(layer: Any, values: dict[str, Any]) -> None:
    """Set only the attributes that differ: every change makes napari redraw the layer."""
    for attribute, value in values.items():
        current = getattr(layer, attribute)
        if attribute == "colormap":
            same = getattr(current, "name", None) == getattr(value, "name", value)
        elif isinstance(value, np.ndarray | list | tuple):
            try:
                same = np.array_equal(
                    np.asarray(current, dtype=float), np.asarray(value, dtype=float)
                )
            except (TypeError, ValueError):
                same = current == value
        else:
            same = current == value
        if not same:
            setattr(layer, attribute, value)


def _remove_previews(viewer: napari.viewer.Viewer, group: str) -> None:
    for layer in list(viewer.layers):
        info = layer.metadata.get(METADATA_KEY, {})
        if info.get("source_id") == group and info.get("preview"):
            viewer.layers.remove(layer)


def remove_previews(viewer: napari.viewer.Viewer, source_layers: Sequence[Image]) -> None:
    """Remove the preview image layers of these sources (results of Run are kept)."""
    _remove_previews(viewer, "+".join(str(layer.unique_id) for layer in source_layers))


# --------------------------------------------------------------------------------------
# Public helpers for the console and scripts
# --------------------------------------------------------------------------------------


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
    layers = _as_layer_list(source_layer)
    source = read_layer_source(layers)
    level_results = _as_level_results(result)
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
    layers = _as_layer_list(layer)
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
    level_results = _as_level_results(result)
    summary = level_results[0]
    psnr = float(summary.psnr)
    psnr_text = "∞" if math.isinf(psnr) else f"{psnr:.1f}"
    text = f"{summary.n_input_colors} → {len(summary.palette)} colors, PSNR {psnr_text} dB"
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
    found = _as_level_results(result)[0].n_input_colors
    if found < n_colors:
        show_info(
            f"Layer {layer_name!r} has only {found} distinct color(s), fewer than the "
            f"{n_colors} requested: using all {found}."
        )


def result_palette(layer: Any) -> Palette | None:
    """The palette stored in a result layer's ``metadata``, or None for other layers."""
    if not is_result_layer(layer) or "palette" not in layer.metadata:
        return None
    return Palette.from_dict(layer.metadata["palette"])


def is_result_layer(layer: Any) -> bool:
    """Whether ``layer`` was made by :func:`add_result_layers` (or the widget).

    Parameters
    ----------
    layer : napari.layers.Layer
        Any layer.

    Returns
    -------
    bool
        True for the Labels and Image layers that show a quantization result.
    """
    return METADATA_KEY in getattr(layer, "metadata", {})


def find_clusters_layer(
    viewer: napari.viewer.Viewer, source_layers: Sequence[Image]
) -> Labels | None:
    """The clusters layer of these source layers, if there is one."""
    group = "+".join(str(layer.unique_id) for layer in source_layers)
    return _find_result_layer(viewer, _bookkeeping(group, CLUSTERS), Labels)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _is_dask(array: Any) -> bool:
    return type(array).__module__.split(".")[0] == "dask"


def _as_level_results(result: LayerResult) -> list[QuantizeResult]:
    if isinstance(result, Sequence):
        return list(result)
    return [result]


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


def _labels_colormap(swatches: np.ndarray, labels_dtype: np.dtype) -> DirectLabelColormap:
    """The clusters layer's colormap, with napari's numba kernels for it compiled already.

    napari compiles (numba) the function that paints labels through a DirectLabelColormap
    for each labels dtype, texture dtype (uint8 up to 254 distinct colors, then uint16)
    and memory layout it meets; that takes a second or more, and would otherwise freeze
    the viewer when the layer is added. Mapping contiguous and strided arrays of the
    layer's dtype here, on the worker, with this very colormap compiles what the slices
    and thumbnails will need.
    """
    colormap = DirectLabelColormap(color_dict=_label_color_dict(swatches))
    tiny = np.ones((4, 4), dtype=labels_dtype)
    colormap.map(tiny)
    colormap.map(tiny[::2, ::2])
    return colormap


def _one_based_labels(labels: Any, n_palette_colors: int, alpha: Any = None) -> Any:
    """Palette index i becomes label i + 1; label 0 (transparent) where alpha is 0."""
    dtype = _labels_dtype(n_palette_colors)
    if _is_dask(labels):
        import dask.array as da

        shifted = labels.astype(dtype) + dtype.type(1)
        return shifted if alpha is None else da.where(alpha == 0, dtype.type(0), shifted)
    shifted = np.asarray(labels).astype(dtype, copy=True)
    shifted += 1
    if alpha is not None:
        shifted[np.asarray(alpha) == 0] = 0
    return shifted


def _display_rgba(colors: np.ndarray, displays: Sequence[LayerDisplay]) -> np.ndarray:
    """RGBA in [0, 1] of palette colors, as the source layers display those values.

    One RGB(A) layer: its channels through its contrast limits and gamma. One greyscale
    layer: its colormap. Several layers clustered jointly: the sum of every channel's
    colormap color, as napari composes channels with additive blending.
    """
    colors = np.asarray(colors, dtype=np.float64)
    if colors.ndim == 1:
        colors = colors[:, np.newaxis]

    def scaled(values: np.ndarray, display: LayerDisplay) -> np.ndarray:
        low, high = display.contrast_limits
        span = high - low if high > low else 1.0
        return np.clip((values - low) / span, 0.0, 1.0) ** display.gamma

    if displays[0].rgb:
        rgb = scaled(colors[:, :3], displays[0])
        return np.column_stack([rgb, np.ones(len(rgb))])
    total = np.zeros((len(colors), 3))
    for channel, display in enumerate(displays):
        mapped = np.asarray(display.colormap.map(scaled(colors[:, channel], display)))
        total += mapped[:, :3] * mapped[:, 3:4]
    return np.column_stack([np.clip(total, 0.0, 1.0), np.ones(len(colors))])


def _label_color_dict(swatches: np.ndarray) -> dict[int | None, Any]:
    transparent = np.zeros(4)
    color_dict: dict[int | None, Any] = {None: transparent, 0: transparent}
    for index, rgba in enumerate(swatches):
        color_dict[index + 1] = rgba
    return color_dict


def _placement_of(layer: Image, window: Window | None = None) -> dict[str, Any]:
    """The keywords that put a new layer exactly on ``layer`` (or on its ``window``).

    The window's first pixel and stride become the new layer's translate and scale, in
    ``layer``'s own rotated and sheared frame, so a slice or a downsampled preview lands
    on the source pixels it was computed from.
    """
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float)
    if window is not None and not window.is_whole:
        from napari.utils.transforms import CompositeAffine

        linear = CompositeAffine(
            scale=scale, rotate=layer.rotate, shear=layer.shear, ndim=layer.ndim
        )
        translate = translate + np.asarray(linear(np.asarray(window.start, dtype=float)))
        scale = scale * np.asarray(window.step, dtype=float)
    return {
        "scale": scale,
        "translate": translate,
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": np.asarray(layer.affine.affine_matrix),
        "units": layer.units,
        "axis_labels": layer.axis_labels,
    }


def _to_builtin(value: Any) -> Any:
    """Python scalars for numpy scalars, so metadata stays JSON-able."""
    return value.item() if isinstance(value, np.generic) else value


def _result_metadata(result: LayerResult, source: LayerSource) -> dict[str, Any]:
    level_results = _as_level_results(result)
    fit_level = getattr(result, "fit_level", 0)
    summary = level_results[0]
    metadata: dict[str, Any] = {
        "source_layer": source.name,
        "palette": summary.palette.to_dict(),
        "n_input_colors": _to_builtin(summary.n_input_colors),
        "mse": _to_builtin(summary.mse),
        "psnr": _to_builtin(summary.psnr),
        "params": {
            key: value
            for key, value in dict(level_results[fit_level].params).items()
            if key != "mask"
        },
        # Layer data = palette index + 1, since napari draws label 0 as background.
        "label_offset": 1,
    }
    if source.joint:
        metadata["source_layers"] = list(source.names)
    if len(level_results) > 1:
        metadata["multiscale_fit_level"] = fit_level
    if not source.window.is_whole:
        metadata["window"] = {
            "start": list(source.window.start),
            "step": list(source.window.step),
        }
    if source.mask_factory is not None:
        metadata["masked"] = True
    return metadata


def _bookkeeping(group: str, role: str, channel: int | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"role": role, "source_id": group}
    if channel is not None:
        info["channel"] = channel
    return info


# Clusters layers the user has painted on (weak: removed layers drop out).
_EDITED_CLUSTERS: weakref.WeakSet = weakref.WeakSet()


def _mark_edited(layer: Labels, _event: Any = None) -> None:
    _EDITED_CLUSTERS.add(layer)


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


def _find_result_layer(
    viewer: napari.viewer.Viewer, wanted: dict, layer_type: type, preview: bool | None = None
) -> Any:
    """The result layer with ``wanted`` bookkeeping (and, unless None, that preview flag)."""
    for layer in viewer.layers:
        if not isinstance(layer, layer_type):
            continue
        info = layer.metadata.get(METADATA_KEY)
        if info is None:
            continue
        if preview is not None and bool(info.get("preview", False)) != preview:
            continue
        if {key: info.get(key) for key in ("role", "source_id", "channel")} == {
            "channel": None,
            **wanted,
        }:
            return layer
    return None
