"""Showing prepared results as layers in a viewer (GUI thread).

:func:`show_result` adds the result layers of a :class:`~._prepare.PreparedResult`, or updates
in place the ones an earlier run of the same sources made; :func:`show_result_steps` does it one
layer at a time so the event loop runs in between. The other functions find result layers by
their bookkeeping (:data:`~._prepare.METADATA_KEY`).
"""

from __future__ import annotations

import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_info

from napari_kmeans_filter import Palette

from ._prepare import CLUSTERS, IMAGE, METADATA_KEY, PreparedResult, bookkeeping

if TYPE_CHECKING:
    import napari


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
    viewer: napari.viewer.Viewer,
    prepared: PreparedResult,
    source_layers: Sequence[Image],
    names: Sequence[str] | None = None,
) -> Generator[Image | Labels, None, ResultLayers]:
    """:func:`show_result` one layer at a time: a generator that yields each layer shown.

    Inserting a layer builds its visuals on the GUI thread; a caller that lets the event
    loop run between steps (the widget does) keeps every freeze to one layer's worth.
    The generator's return value (``StopIteration.value``) is the :class:`ResultLayers`.
    ``names`` are the source layers' names now (they may have been renamed since the
    result was computed); the result layers are named after them.
    """
    names = tuple(names) if names is not None else None
    image_layers = []
    if IMAGE in prepared.outputs:
        for channel in range(len(source_layers)):
            layer = _show_image(viewer, prepared, channel, names)
            image_layers.append(layer)
            yield layer
    if not prepared.preview:
        _remove_previews(viewer, prepared.group)  # what a Run did not take over
        if CLUSTERS not in prepared.outputs:
            # A Run without clusters leaves the last clusters layer as it was (it may hold
            # the user's painting), but hidden: drawn above the new image, it showed the
            # old palette instead of the result.
            old = _find_result_layer(viewer, bookkeeping(prepared.group, CLUSTERS), Labels)
            if old is not None:
                old.visible = False
    clusters_layer = None
    if CLUSTERS in prepared.outputs:
        clusters_layer = _show_clusters(viewer, prepared, names)
        yield clusters_layer
    return ResultLayers(clusters_layer, image_layers)


def _show_clusters(
    viewer: napari.viewer.Viewer, prepared: PreparedResult, names: Sequence[str] | None
) -> Labels:
    layer = _find_result_layer(viewer, bookkeeping(prepared.group, CLUSTERS), Labels)
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
        layer.name = prepared.clusters_name(names)
        # Connected before the layer goes in: if napari raises while it is inserted, the
        # layer that stays is still a whole result layer.
        layer.events.paint.connect(partial(_mark_edited, layer))
        layer.events.show_selected_label.connect(
            partial(_show_selected_alone, weakref.ref(viewer), weakref.ref(layer))
        )
        viewer.layers.append(layer)
        return layer
    # The colormap first: it is ready for the old data's dtype as well (see
    # _prepare._labels_colormap), while the old colormap has never met the new dtype, which
    # napari would map on the GUI thread (a compile, seconds, when k crosses 255).
    layer.colormap = prepared.colormap
    layer.data = prepared.labels_data
    layer.features = prepared.features if prepared.features is not None else {}
    _update_attributes(
        layer, {"blending": prepared.clusters_blending(), **prepared.source.placement}
    )
    layer.name = prepared.clusters_name(names)
    layer.metadata = prepared.clusters_metadata()
    return layer


def _show_image(
    viewer: napari.viewer.Viewer,
    prepared: PreparedResult,
    channel: int,
    names: Sequence[str] | None,
) -> Image:
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
        layer.name = prepared.image_name(channel, names)
        viewer.layers.append(layer)
        return layer
    layer.data = prepared.image_data[channel]
    _update_attributes(layer, {**prepared.image_display(channel), **placement})
    layer.name = prepared.image_name(channel, names)
    layer.metadata = prepared.image_metadata(channel)
    return layer


def _show_selected_alone(viewer_ref: Any, clusters_ref: Any, _event: Any = None) -> None:
    """With 'show selected' on, hide the layers that would show the other clusters anyway.

    The quantized image and the source under the clusters layer look like the clusters, so
    with only the selected label drawn the picture would not change; they are hidden while
    'show selected' is on and shown again (those this hid) when it is turned off.
    """
    viewer, clusters = viewer_ref(), clusters_ref()
    if viewer is None or clusters is None:
        return
    info = clusters.metadata.get(METADATA_KEY, {})
    group = info.get("source_id")
    if clusters.show_selected_label:
        hidden = []
        for layer in viewer.layers:
            layer_group = layer.metadata.get(METADATA_KEY, {}).get("source_id")
            is_source = str(layer.unique_id) in str(group).split("+")
            if layer is not clusters and layer.visible and (layer_group == group or is_source):
                layer.visible = False
                hidden.append(layer)
        _HIDDEN_FOR_SELECTION[clusters] = weakref.WeakSet(hidden)
    else:
        for layer in _HIDDEN_FOR_SELECTION.pop(clusters, ()):
            if layer in viewer.layers:
                layer.visible = True


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


def result_layers_of(viewer: napari.viewer.Viewer, group: str) -> list[Any]:
    """The layers in ``viewer`` showing a result of the sources ``group`` (previews too)."""
    return [
        layer
        for layer in viewer.layers
        if layer.metadata.get(METADATA_KEY, {}).get("source_id") == group
    ]


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


# Clusters layers the user has painted on (weak: removed layers drop out).
_EDITED_CLUSTERS: weakref.WeakSet = weakref.WeakSet()
# Per clusters layer with 'show selected' on: the layers hidden meanwhile.
_HIDDEN_FOR_SELECTION: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _mark_edited(layer: Labels, _event: Any = None) -> None:
    _EDITED_CLUSTERS.add(layer)


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
