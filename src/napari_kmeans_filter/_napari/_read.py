"""Reading image layers: what a run needs from them, captured on the GUI thread.

:func:`read_layer_source` checks the chosen layers and captures their arrays (cut to the current
slice or downsampled for a preview), display settings, placement and region mask as a
:class:`LayerSource`, so that the work on a worker thread never touches a layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Shapes

from napari_kmeans_filter import _tasks
from napari_kmeans_filter._contract import invalid
from napari_kmeans_filter._validation import check_not_empty, is_dask_array

if TYPE_CHECKING:
    import napari


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
        largest first), possibly cut to the current slice or downsampled (see ``window``);
        levels read from zarr whole are read in tasks of several storage chunks.
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
            if any(is_dask_array(a) for a in level):
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
    layers = as_layer_list(layers)
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
        if not fixed:
            # Whole layers read from zarr (napari-ome-zarr's levels, or one channel of
            # them): tasks of several storage chunks (a slice reads only its planes).
            channels = tuple(tuple(_tasks.regroup(a) for a in levels) for levels in channels)
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
        placement=placement_of(first, window),
        mask_factory=mask_factory,
    )
    check_not_empty(source.n_pixels, f"layer {source.name!r} with no pixel here")
    return source


def as_layer_list(layers: Any) -> list[Image]:
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
            "Layers have different shapes ("
            + ", ".join(
                f"{layer.name!r}: {' / '.join(map(str, _level_shapes(layer)))}" for layer in layers
            )
            + "): layers clustered "
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
        mask = resample_nearest(mask, _spatial(levels[level_index].shape, rgb))
    return mask[index]


def resample_nearest(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resampling of a mask to a pyramid level's shape."""
    mask = np.asarray(mask)
    if mask.shape == tuple(shape):
        return mask
    grids = [np.arange(n) * m // n for n, m in zip(shape, mask.shape, strict=True)]
    return mask[np.ix_(*grids)]


def region_mask(region: Any, image: Image, shape: tuple[int, ...]) -> Any:
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
            if is_dask_array(mask):
                import dask.array as da

                mask = da.broadcast_to(mask, shape)
            else:
                mask = np.broadcast_to(mask, shape)
        if not is_dask_array(mask) and not mask.any():
            raise invalid(
                "mask",
                f"cover at least one pixel of {image_name!r}",
                None,
                "Draw the region over the image.",
                got=f"region layer {region_name!r}, which covers none",
            )
        return mask

    return make_mask


def placement_of(layer: Image, window: Window | None = None) -> dict[str, Any]:
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
