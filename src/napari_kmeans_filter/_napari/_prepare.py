"""A core result turned into layer data, colors, a per-cluster table and metadata (worker-safe).

:func:`prepare_result` does everything expensive about showing a result (label shifting,
contiguous copies, display colors and their compiled colormap kernels, the features table,
and the new layers themselves) so that the GUI thread only inserts layers or hands arrays
to existing ones (:mod:`._show`). Result layers carry bookkeeping under :data:`METADATA_KEY`
that says which sources and role they belong to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap

from napari_kmeans_filter import Palette
from napari_kmeans_filter._paint import label_dtype
from napari_kmeans_filter._validation import is_dask_array

from ._read import LayerDisplay, LayerSource

if TYPE_CHECKING:
    from napari_kmeans_filter import QuantizeResult

    # One result per level of a multiscale layer (level 0 = full resolution), one palette.
    LayerResult = QuantizeResult | Sequence[QuantizeResult]

#: Key of the bookkeeping dict in a result layer's ``metadata``.
METADATA_KEY = "napari_kmeans_filter"

#: Which result layers to create: the Labels layer of clusters and/or the quantized image.
CLUSTERS = "clusters"
IMAGE = "image"
BOTH = (CLUSTERS, IMAGE)


def as_level_results(result: LayerResult) -> list[QuantizeResult]:
    """A result as a list of one result per level (one level unless multiscale)."""
    if isinstance(result, Sequence):
        return list(result)
    return [result]


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
    frame_counts : dict or None
        For a stack in memory, each cluster's pixels per frame as a long-format table
        (``frame``, ``label``, ``count``), kept in the clusters layer's ``metadata``.
    applied_from : str or None
        Where the palette came from when it was applied rather than fitted (names the
        result layers).
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
    frame_counts: dict | None = None
    applied_from: str | None = None

    @property
    def palette(self) -> Palette:
        return as_level_results(self.result)[0].palette

    @property
    def n_colors(self) -> int:
        return len(self.palette)

    @property
    def group(self) -> str:
        """The sources' ids, as result layers remember them."""
        return "+".join(self.source.layer_ids)

    def clusters_name(self, names: Sequence[str] | None = None) -> str:
        """``"<source> clusters"``; ``names``: the source layers' names now, if renamed."""
        return f"{' + '.join(names or self.source.names)} clusters"

    def image_name(self, channel: int, names: Sequence[str] | None = None) -> str:
        """``"<source> k=<k>"``, with where an applied palette came from, or "(preview)"."""
        suffix = ""
        if self.applied_from is not None:
            suffix = f" (palette from {self.applied_from})"
        if self.preview:
            suffix += " (preview)"
        return f"{(names or self.source.names)[channel]} k={self.n_colors}{suffix}"

    def clusters_blending(self) -> str:
        # Clusters of additive channels add up like their sources instead of hiding the
        # channels under them; otherwise they are opaque, to look like the quantized image.
        blendings = {display.blending for display in self.source.displays}
        return "additive" if blendings == {"additive"} else "translucent"

    def clusters_metadata(self) -> dict:
        metadata = {**self.metadata, METADATA_KEY: bookkeeping(self.group, CLUSTERS)}
        if self.frame_counts is not None:
            metadata["frame_counts"] = self.frame_counts
        return metadata

    def image_bookkeeping(self, channel: int) -> dict:
        return bookkeeping(self.group, IMAGE, channel if self.source.joint else None)

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
            name=self.clusters_name(),
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
    applied_from: str | None = None,
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
    applied_from : str, optional
        The palette was applied, not fitted: where it came from (a layer or file name).

    Returns
    -------
    PreparedResult
    """
    outputs = (IMAGE,) if preview else tuple(outputs)
    level_results = as_level_results(result)
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
            per_level.append(data if is_dask_array(data) else np.ascontiguousarray(data))
        images.append(per_level if source.multiscale else per_level[0])
    swatches = display_rgba(palette.colors, source.displays)
    features, frame_counts = (
        _cluster_tables(level_results[0], source) if CLUSTERS in outputs else (None, None)
    )
    prepared = PreparedResult(
        result=result,
        source=source,
        outputs=outputs,
        preview=preview,
        labels_data=(labels if source.multiscale else labels[0]) if labels else None,
        image_data=images,
        swatches=swatches,
        colormap=(
            _labels_colormap(swatches, label_dtype(n_palette_colors + 1))
            if CLUSTERS in outputs
            else None
        ),
        features=features,
        metadata=(
            _result_metadata(result, source)
            if applied_from is None
            else {**_result_metadata(result, source), "applied_palette": applied_from}
        ),
        frame_counts=frame_counts,
        applied_from=applied_from,
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


def _cluster_tables(result: QuantizeResult, source: LayerSource) -> tuple[dict, dict | None]:
    """The clusters layer's ``features`` (one row per label) and, for a stack, its frame counts.

    The core numbers clusters from 0 (palette order); the layer shows them as labels from
    1, so ``label`` (and napari's ``index`` column, which maps label values to rows) is
    the palette index + 1. The core's per-channel means (``mean_0``, ``mean_1``...) are
    named after what the channels are: ``mean_r``, ``mean_g``, ``mean_b`` for RGB(A),
    ``mean_<layer name>`` for layers clustered together, ``mean`` for one greyscale layer.

    For a stack (more than two spatial axes) in memory, each cluster's pixels in every
    index of the first axis (a time point or a slice: the area of each color class over
    time) form a second, long-format table ``{"frame": [...], "label": [...], "count":
    [...]}``, one row per frame and label: as columns of ``features`` a 60-frame stack
    would add 60 columns, which napari's status line shows for every hovered pixel.
    Dask-backed stacks get no per-frame counts, which would compute the whole stack.
    """
    shape = source.spatial_shape()
    frame_axis = None
    if len(shape) > 2 and shape[0] > 1 and not is_dask_array(result.labels):
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
    features = {"index": labels, "label": labels, **table}
    if frame_counts is None:
        return features, None
    counts = np.asarray(frame_counts)  # (labels, frames)
    frames = source.window.start[0] + np.arange(counts.shape[1])
    long_format = {
        "frame": np.repeat(frames, len(labels)).tolist(),
        "label": np.tile(labels, len(frames)).tolist(),
        "count": counts.T.reshape(-1).tolist(),
    }
    return features, long_format


def _labels_colormap(swatches: np.ndarray, labels_dtype: np.dtype) -> DirectLabelColormap:
    """The clusters layer's colormap, with napari's numba kernels for it compiled already.

    napari compiles (numba) the function that paints labels through a DirectLabelColormap
    for each labels dtype, texture dtype (uint8 up to 254 distinct colors, then uint16)
    and memory layout it meets; that takes a second or more, and would otherwise freeze
    the viewer when the layer is added. Mapping contiguous and strided arrays of the
    layer's dtype here, on the worker, with this very colormap compiles what the slices
    and thumbnails will need, and fills the colormap's cache of its texture.

    The other labels dtype (uint8 for uint16 labels, and back) is mapped too: a re-run that
    crosses k = 255 updates the clusters layer in place, and napari maps the layer's old
    data through the new colormap when it is set (:func:`._show._show_clusters` sets the
    colormap first). Mapped there, on the GUI thread, that pair was compiled (1.6-1.8 s
    frozen each way: astronaut, k = 250 → 256 → 250, load 5 on 2 cores) and its texture
    built (~150 ms); ``tests/test_widget_run.py`` measures the crossing.
    """
    colormap = DirectLabelColormap(color_dict=_label_color_dict(swatches))
    for dtype in (np.dtype(labels_dtype), *_OTHER_LABEL_DTYPE.get(np.dtype(labels_dtype), ())):
        tiny = np.ones((4, 4), dtype=dtype)
        colormap.map(tiny)
        colormap.map(tiny[::2, ::2])
    return colormap


#: The labels dtype a clusters layer may have had before a re-run, for each it may get.
_OTHER_LABEL_DTYPE = {
    np.dtype(np.uint8): (np.dtype(np.uint16),),
    np.dtype(np.uint16): (np.dtype(np.uint8),),
}


def _one_based_labels(labels: Any, n_palette_colors: int, alpha: Any = None) -> Any:
    """Palette index i becomes label i + 1; label 0 (transparent) where alpha is 0."""
    dtype = label_dtype(n_palette_colors + 1)
    if is_dask_array(labels):
        import dask.array as da

        shifted = labels.astype(dtype) + dtype.type(1)
        return shifted if alpha is None else da.where(alpha == 0, dtype.type(0), shifted)
    shifted = np.asarray(labels).astype(dtype, copy=True)
    shifted += 1
    if alpha is not None:
        shifted[np.asarray(alpha) == 0] = 0
    return shifted


def display_rgba(colors: np.ndarray, displays: Sequence[LayerDisplay]) -> np.ndarray:
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


def _to_builtin(value: Any) -> Any:
    """Python scalars for numpy scalars, so metadata stays JSON-able."""
    return value.item() if isinstance(value, np.generic) else value


def _result_metadata(result: LayerResult, source: LayerSource) -> dict[str, Any]:
    level_results = as_level_results(result)
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


def bookkeeping(group: str, role: str, channel: int | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"role": role, "source_id": group}
    if channel is not None:
        info["channel"] = channel
    return info
