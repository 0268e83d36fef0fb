"""OME-Zarr images in, OME-NGFF label images (and quantised images) out.

An OME-Zarr image is a zarr group whose metadata holds ``multiscales``: the axes, and a
list of arrays (full resolution first) with their ``coordinateTransformations``.  It is
read here as dask arrays whose tasks each read several storage chunks
(:mod:`._tasks`).  The clustering result goes back as a *label image* under
``<image>/labels/<name>``: the palette as ``image-label.colors``, the cluster statistics
as ``image-label.properties``, one pyramid level per image level, so that OME viewers
(napari-ome-zarr among them) open the image and its clusters together.

The zarr format follows the image's: zarr v2 groups are OME-NGFF 0.4 (metadata in
``.zattrs``, top-level keys, each object with its own ``version``), zarr v3 groups are
OME-NGFF 0.5 (metadata under the ``ome`` key of ``zarr.json``'s attributes, one
``version`` there).

References
----------
OME-NGFF 0.4, https://ngff.openmicroscopy.org/0.4/ : "axes metadata" (#axes-md),
"coordinateTransformations metadata" (#trafo-md), "multiscales metadata"
(#multiscale-md), "labels metadata" (#labels-md), "image-label metadata" (#label-md),
"bioformats2raw.layout" (#bf2raw).
OME-NGFF 0.5, https://ngff.openmicroscopy.org/0.5/ : the same sections, and "OME-Zarr
metadata" (#ome-zarr-metadata: the ``ome`` attribute, zarr v3).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _tasks
from ._files import move_into_place, remove_output
from ._paint import label_dtype

# OME-NGFF version written for each zarr format (0.4 is the last on zarr v2, 0.5 the first
# on zarr v3: "use Zarr v3 in OME-Zarr", 0.5 version history).
NGFF_VERSION = {2: "0.4", 3: "0.5"}
DEFAULT_LABEL_NAME = "kmeans"
# Axis types of OME-NGFF 0.4/0.5 "axes metadata" for the usual names (any other name is
# a custom axis with no type).
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
# Display colours of channels without "omero" metadata, in napari's order for
# channel_axis layers (magenta/green for two, then red, green, blue...).
_DEFAULT_CHANNEL_COLORS = {
    1: ["FFFFFF"],
    2: ["FF00FF", "00FF00"],
}
_CYCLE = ["FF0000", "00FF00", "0000FF", "00FFFF", "FF00FF", "FFFF00"]


class OmeZarrError(ValueError):
    """Not an OME-Zarr image, or an image this module cannot read or write into."""


@dataclass(frozen=True)
class OmeZarrImage:
    """An OME-Zarr image group opened for reading.

    Attributes
    ----------
    path : str
        The image group (for a bioformats2raw collection, its first image, ``<root>/0``).
    version : str
        OME-NGFF version of its metadata ("0.4", "0.5", or older).
    zarr_format : int
        2 or 3.
    axes : tuple of dict
        The ``axes`` of the multiscale (``name``, ``type``, ``unit``), one per dimension.
    datasets : tuple of dict
        The ``datasets`` entries (``path`` and ``coordinateTransformations``), full
        resolution first.
    levels : tuple of dask.array.Array
        One array per dataset, tasks of several storage chunks each.
    storage_chunks : tuple of tuple of int
        Each level's zarr chunk shape.
    multiscale : dict
        The whole multiscale entry (name, type, top-level transformations...).
    omero : dict or None
        The transitional ``omero`` rendering metadata, if any.
    """

    path: str
    version: str
    zarr_format: int
    axes: tuple
    datasets: tuple
    levels: tuple
    storage_chunks: tuple
    multiscale: dict
    omero: dict | None = None

    @property
    def data(self):
        """The full-resolution level."""
        return self.levels[0]

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(axis["name"] for axis in self.axes)

    @property
    def channel_axis(self) -> int | None:
        """Index of the axis of type ``channel`` (or named ``c``), or None."""
        for index, axis in enumerate(self.axes):
            if axis.get("type") == "channel" or (axis.get("type") is None and axis["name"] == "c"):
                return index
        return None

    def scales(self) -> list[list[float] | None]:
        """Each level's ``scale`` transformation (None where a level has none)."""
        return [_transform(ds, "scale") for ds in self.datasets]


# --------------------------------------------------------------------------- reading
def _ome_attrs(attrs: dict) -> tuple[dict, str | None]:
    """The OME metadata of a group's attributes and its version (0.5: under ``ome``)."""
    if isinstance(attrs.get("ome"), dict):
        ome = attrs["ome"]
        return ome, ome.get("version")
    version = None
    multiscales = attrs.get("multiscales")
    if isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict):
        version = multiscales[0].get("version")
    return attrs, version


def _open_group(path, mode: str = "r"):
    import zarr

    try:
        return zarr.open_group(str(path), mode=mode)
    except Exception as exc:  # not a group, not zarr, or unreadable
        raise OmeZarrError(f"{path} is not a zarr group: {exc}") from exc


def _image_group(path):
    """The group holding ``multiscales``: ``path`` itself or, for a bioformats2raw
    collection (OME-NGFF 0.4 #bf2raw), its first image ``0``."""
    group = _open_group(path)
    ome, _ = _ome_attrs(dict(group.attrs))
    if "multiscales" not in ome and "bioformats2raw.layout" in ome and "0" in group:
        return group["0"], f"{str(path).rstrip('/')}/0"
    return group, str(path)


def is_ome_zarr(path) -> bool:
    """Whether ``path`` is an OME-Zarr image group (or a bioformats2raw collection of them).

    Parameters
    ----------
    path : str or os.PathLike
        A local directory or a URL zarr can open.

    Returns
    -------
    bool
    """
    if isinstance(path, str | os.PathLike) and not str(path).count("://"):
        local = Path(path)
        # Cheap local checks first: an image file or a zarr array is not a group.
        if not local.is_dir() or (local / ".zarray").exists():
            return False
        meta = local / "zarr.json"
        if meta.exists():
            try:
                if json.loads(meta.read_text()).get("node_type") != "group":
                    return False
            except (OSError, ValueError):
                return False
    try:
        group, _ = _image_group(path)
    except OmeZarrError:
        return False
    ome, _ = _ome_attrs(dict(group.attrs))
    return isinstance(ome.get("multiscales"), list) and bool(ome["multiscales"])


def _axes_of(multiscale: dict, ndim: int) -> tuple[dict, ...]:
    axes = multiscale.get("axes")
    if axes is None:  # 0.1/0.2: always (t, c, z, y, x), trailing dimensions
        axes = ["t", "c", "z", "y", "x"][-ndim:]
    out = []
    for axis in axes:
        if isinstance(axis, str):  # 0.3: names only
            axis = {"name": axis, **({"type": _AXIS_TYPES[axis]} if axis in _AXIS_TYPES else {})}
        out.append(dict(axis))
    if len(out) != ndim:
        raise OmeZarrError(f"{len(out)} axes in the metadata, but the data has {ndim} dimensions")
    return tuple(out)


def read_image(path, *, target_bytes: int = _tasks.TARGET_TASK_BYTES) -> OmeZarrImage:
    """Open an OME-Zarr image: every pyramid level as a dask array, with its axes.

    The first multiscale of the group is used (OME-NGFF 0.4/0.5 #multiscale-md: "if only
    one multiscale is provided, use it. Otherwise ... the first multiscale as a
    fallback").  The channel axis is the axis of type ``channel``; time and z stay
    leading axes, so clustering the full-resolution level with
    ``channel_axis=image.channel_axis`` pools every time point and plane into one
    palette.

    Parameters
    ----------
    path : str or os.PathLike
        The image group (or a bioformats2raw collection: its image ``0`` is read).
    target_bytes : int, optional
        About how many bytes each dask task reads (whole storage chunks).

    Returns
    -------
    OmeZarrImage

    Raises
    ------
    OmeZarrError
        If ``path`` is not an OME-Zarr image group.
    """
    group, image_path = _image_group(path)
    ome, version = _ome_attrs(dict(group.attrs))
    multiscales = ome.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales:
        raise OmeZarrError(f"{path} is a zarr group without OME-NGFF 'multiscales' metadata")
    multiscale = dict(multiscales[0])
    datasets = tuple(dict(ds) for ds in multiscale.get("datasets", ()))
    if not datasets:
        raise OmeZarrError(f"{path}: the multiscale lists no datasets")
    arrays = []
    for ds in datasets:
        try:
            arrays.append(group[ds["path"]])
        except KeyError as exc:
            raise OmeZarrError(f"{path}: dataset {ds.get('path')!r} is missing") from exc
    axes = _axes_of(multiscale, arrays[0].ndim)
    return OmeZarrImage(
        path=image_path,
        version=str(version or multiscale.get("version") or ""),
        zarr_format=int(group.metadata.zarr_format),
        axes=axes,
        datasets=datasets,
        levels=tuple(_tasks.from_zarr(a, target_bytes=target_bytes) for a in arrays),
        storage_chunks=tuple(tuple(int(c) for c in a.chunks) for a in arrays),
        multiscale=multiscale,
        omero=ome.get("omero"),
    )


# --------------------------------------------------------------------------- pyramids
def _transform(dataset: dict, kind: str) -> list[float] | None:
    for transform in dataset.get("coordinateTransformations") or ():
        if transform.get("type") == kind and kind in transform:
            return [float(v) for v in transform[kind]]
    return None


def _level_factors(full_shape, level_shape, full_scale, level_scale) -> list[float]:
    """Per axis, how many full-resolution pixels one pixel of a level spans.

    The levels' ``scale`` transformations say it exactly (OME-NGFF #trafo-md: the scale
    of each dataset in physical units); the shape ratio is the fallback.
    """
    factors = []
    for axis, (n, m) in enumerate(zip(full_shape, level_shape, strict=True)):
        factor = n / m if m else 1.0
        if full_scale is not None and level_scale is not None and full_scale[axis]:
            by_scale = level_scale[axis] / full_scale[axis]
            # trust the transformation where it agrees with the shapes (a level of
            # ceil(n / f) or floor(n / f) pixels)
            if by_scale > 0 and abs(math.ceil(n / by_scale) - m) <= 1:
                factor = by_scale
        factors.append(factor)
    return factors


def _nearest_level(full, level_shape, factors):
    """Nearest-neighbour downsampling by picks: pixel j of a level is the full-resolution
    pixel floor(j * factor) (a plain stride for integer factors), never an average, so
    that labels and palette colours stay labels and palette colours."""
    out = full
    for axis, (m, factor) in enumerate(zip(level_shape, factors, strict=True)):
        n = out.shape[axis]
        if m == n and factor == 1:
            continue
        index = [slice(None)] * out.ndim
        step = round(factor)
        if abs(factor - step) < 1e-9 and step >= 1 and -(-n // step) >= m:
            index[axis] = slice(0, step * m, step)
            out = out[tuple(index)]
        else:
            picks = np.minimum(np.floor(np.arange(m) * factor).astype(np.int64), n - 1)
            index[axis] = picks
            out = out[tuple(index)]
    return out


def _drop(values, axis):
    """``values`` without entry ``axis`` (unchanged if ``axis`` is None)."""
    if values is None:
        return None
    return [v for i, v in enumerate(values) if i != axis]


def _transforms_without(transforms, axis):
    """coordinateTransformations with one axis removed from each scale/translation."""
    out = []
    for transform in transforms or ():
        transform = dict(transform)
        kind = transform.get("type")
        if axis is not None and kind in ("scale", "translation") and kind in transform:
            transform[kind] = _drop(transform[kind], axis)
        out.append(transform)
    return out


# --------------------------------------------------------------------------- colours
def label_colors(
    colors,
    dtype,
    *,
    omero: dict | None = None,
) -> np.ndarray:
    """The palette as 0-255 RGBA display colours, one row per palette entry.

    Three channels are shown as RGB; other channel counts are composed additively from
    each channel's colour (``omero.channels[i].color``, else white for one channel,
    magenta/green for two, a red-green-blue cycle beyond), the way napari shows
    channels.  Values are scaled by each channel's ``omero`` window (``start``..``end``)
    when there is one, else by the dtype's range (0-255 for uint8, 0..max for other
    integers) or, for floats, [0, 1] (or the palette's own range if it exceeds that).

    Parameters
    ----------
    colors : array_like, shape (k, C) or (k,)
        Palette colours in the image's units (``result.palette.colors``).
    dtype : numpy dtype
        The image's dtype.
    omero : dict, optional
        The image's ``omero`` metadata (OME-NGFF #omero-md).

    Returns
    -------
    ndarray of uint8, shape (k, 4)
        Opaque RGBA colours (alpha 255).
    """
    colors = np.asarray(colors, dtype=np.float64)
    if colors.ndim == 1:
        colors = colors[:, np.newaxis]
    k, n_channels = colors.shape
    dtype = np.dtype(dtype)
    channels = (omero or {}).get("channels") or []
    low = np.zeros(n_channels)
    high = np.ones(n_channels)
    if dtype.kind in "ui":
        high[:] = np.iinfo(dtype).max
        low[:] = np.iinfo(dtype).min if dtype.kind == "i" else 0
    elif colors.size and (colors.min() < 0 or colors.max() > 1):
        low[:], high[:] = colors.min(), colors.max()
    for c, channel in enumerate(channels[:n_channels]):
        window = channel.get("window") or {}
        if "start" in window and "end" in window and window["end"] > window["start"]:
            low[c], high[c] = window["start"], window["end"]
    span = np.where(high > low, high - low, 1.0)
    scaled = np.clip((colors - low) / span, 0.0, 1.0)
    if n_channels == 3 and not channels:
        rgb = scaled
    else:
        defaults = _DEFAULT_CHANNEL_COLORS.get(
            n_channels, [_CYCLE[i % len(_CYCLE)] for i in range(n_channels)]
        )
        rgb = np.zeros((k, 3))
        for c in range(n_channels):
            hex_color = (channels[c].get("color") if c < len(channels) else None) or defaults[c]
            tint = np.array([int(hex_color[i : i + 2], 16) for i in (0, 2, 4)]) / 255.0
            rgb += scaled[:, c : c + 1] * tint
    rgba = np.empty((k, 4), dtype=np.uint8)
    rgba[:, :3] = np.rint(np.clip(rgb, 0.0, 1.0) * 255)
    rgba[:, 3] = 255
    return rgba


def _json_value(value):
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN (an empty cluster's mean)
    return value


def label_properties(columns: dict, n_labels: int) -> list[dict]:
    """``image-label.properties`` from per-cluster columns (e.g. ``result.cluster_stats()``).

    Row i describes palette entry i, whose label value is i + 1 (OME-NGFF #label-md:
    "each object in the properties array MUST contain the label-value key").  A
    ``label`` column (the 0-based palette index) is dropped: ``label-value`` replaces it.
    NaN becomes null; 2-D columns (``frame_counts``) become a list per label.
    """
    rows = [{"label-value": i + 1} for i in range(n_labels)]
    for name, column in columns.items():
        if name == "label":
            continue
        values = np.asarray(column)
        if len(values) != n_labels:
            raise ValueError(f"column {name!r} has {len(values)} rows for {n_labels} labels")
        for row, value in zip(rows, values, strict=True):
            row[str(name)] = _json_value(value)
    return rows


# --------------------------------------------------------------------------- writing
def _array_kwargs(zarr_format: int, dimension_names) -> dict:
    if zarr_format == 2:
        # OME-NGFF 0.4 #multiscale-md: zarr v2 arrays MUST use "/" as dimension separator
        return {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    # 0.5: "dimension_names" of each array SHOULD match the axes names
    return {"dimension_names": list(dimension_names)}


def _multiscale_entry(version, axes, datasets, *, name=None, extra=None) -> dict:
    entry: dict[str, Any] = {}
    if version == "0.4":
        entry["version"] = "0.4"
    entry["axes"] = list(axes)
    entry["datasets"] = list(datasets)
    if name is not None:
        entry["name"] = name
    entry.update(extra or {})
    return entry


def _set_ome(node, version: str, **keys) -> None:
    """Write OME metadata keys as the version places them (0.5: under ``ome``)."""
    attrs = dict(node.attrs)
    if version == "0.5":
        ome = dict(attrs.get("ome") or {})
        ome["version"] = "0.5"
        ome.update(keys)
        node.attrs["ome"] = ome
    else:
        node.attrs.update(keys)


def _as_dask(array, chunks):
    import dask.array as da

    if hasattr(array, "dask"):
        return array
    array = np.asarray(array)
    return da.from_array(array, chunks=_tasks.task_chunks(array.shape, chunks, array.itemsize))


def _write_levels(
    group, levels, storage_chunks, dtype, zarr_format, names, fill_value=0, compute=True
):
    """Create arrays "0", "1", ... in ``group`` and fill them in one dask computation
    (the full-resolution tasks run once for every level), each level's tasks aligned to
    whole storage chunks so that no two write the same chunk. With ``compute`` False the
    arrays are created and what fills them is returned, to pass to ``dask.compute`` (as
    ``dask.array.store(..., compute=False)`` returns it)."""
    import dask.array as da

    sources, targets = [], []
    for index, (level, chunks) in enumerate(zip(levels, storage_chunks, strict=True)):
        # the template's chunks as they are (zarr allows chunks larger than the shape)
        target = group.create_array(
            str(index),
            shape=level.shape,
            chunks=tuple(chunks),
            dtype=dtype,
            fill_value=fill_value,
            **_array_kwargs(zarr_format, names),
        )
        clipped = tuple(min(c, n) if n else c for c, n in zip(chunks, level.shape, strict=True))
        sources.append(_tasks.align(level, clipped))
        targets.append(target)
    return da.store(sources, targets, lock=False, compute=compute)


def write_labels(
    image,
    labels,
    colors,
    *,
    name: str = DEFAULT_LABEL_NAME,
    properties: dict | None = None,
    transparent=None,
    overwrite: bool = True,
    compute: bool = True,
):
    """Write clustering labels as an OME-NGFF label image ``<image>/labels/<name>``.

    The label values are those of the napari clusters layer: palette index + 1 (1 ... k),
    and 0, the background, where ``transparent`` is True.  The label image is a
    multiscale with one level per image level (OME-NGFF #labels-md: "the same number of
    entries (scale levels) as the original unlabeled image"), each downsampled from the
    full-resolution labels by nearest-neighbour picks, with the level's shape, storage
    chunks and ``coordinateTransformations``, less the channel axis.  ``name`` is added
    to the ``labels`` list of ``<image>/labels`` (kept: other label images stay listed).
    The zarr format and OME-NGFF version are the image's (v2: 0.4, v3: 0.5).

    Parameters
    ----------
    image : OmeZarrImage, str or os.PathLike
        The image the labels belong to (opened with :func:`read_image` if a path).
    labels : array_like or dask array of int
        Palette index of every pixel (``result.labels``): the image's full-resolution
        shape without its channel axis.
    colors : array_like, shape (k, 4)
        0-255 RGBA display colour of each palette entry (see :func:`label_colors`);
        written as ``image-label.colors`` for label values 1 ... k, after label 0 (the
        background) as transparent black (0, 0, 0, 0).
    name : str, optional
        The label image's name under ``labels/`` ("kmeans").
    properties : dict of str to array_like, optional
        Per-cluster columns, one row per palette entry (``result.cluster_stats()``);
        written as ``image-label.properties`` (see :func:`label_properties`), after a row
        for label 0 holding its ``label-value`` only.
    transparent : array_like of bool, optional
        Where the image is transparent (alpha == 0): label 0 there.
    overwrite : bool, optional
        Replace an existing label image of that name (else raise).
    compute : bool, optional
        False: only create the label image (under a name of its own, with its metadata)
        and return a :class:`PendingLabels`, whose ``store`` is computed together with
        other dask work by ``dask.compute`` (one read of the input for all of it), then
        ``finish()`` puts it in place (or ``abort()`` removes it).

    Returns
    -------
    str or PendingLabels
        The label image's path (``compute`` True).

    Raises
    ------
    OmeZarrError
        If the shapes do not match the image or the name is taken and not ``overwrite``.
    """
    import zarr

    if not isinstance(image, OmeZarrImage):
        image = read_image(image)
    if "/" in name or not name or name in (".", ".."):
        raise OmeZarrError(f"label image name {name!r} must be one path component")
    colors = np.asarray(colors)
    k = len(colors)
    if colors.ndim != 2 or colors.shape[1] != 4:
        raise OmeZarrError(f"colors must be (k, 4) RGBA rows, not shape {colors.shape}")
    channel = image.channel_axis
    full_shape = tuple(_drop(image.data.shape, channel))
    if tuple(labels.shape) != full_shape:
        raise OmeZarrError(
            f"labels of shape {tuple(labels.shape)} do not fit the image "
            f"{tuple(image.data.shape)} (axes {''.join(image.axis_names)}): expected {full_shape}"
        )
    # the label image has the image's axes less the channel axis the palette replaces
    axes = [a for i, a in enumerate(image.axes) if i != channel]
    names = [a["name"] for a in axes]
    level_shapes = [tuple(_drop(level.shape, channel)) for level in image.levels]
    level_chunks = [tuple(_drop(chunks, channel)) for chunks in image.storage_chunks]
    scales = [_drop(scale, channel) for scale in image.scales()]

    dtype = label_dtype(k + 1)  # values 0 (background) .. k
    full = _as_dask(labels, level_chunks[0])
    shifted = full.astype(dtype) + dtype.type(1)
    if transparent is not None:
        import dask.array as da

        mask = _as_dask(transparent, level_chunks[0])
        shifted = da.where(mask, dtype.type(0), shifted)
    levels = [shifted] + [
        _nearest_level(shifted, shape, _level_factors(full_shape, shape, scales[0], scale))
        for shape, scale in zip(level_shapes[1:], scales[1:], strict=True)
    ]

    version = NGFF_VERSION.get(image.zarr_format, "0.4")
    root = zarr.open_group(image.path, mode="r+")
    labels_group = root.require_group("labels")
    replacing = name in labels_group
    if replacing and not overwrite:
        raise OmeZarrError(f"{image.path}/labels/{name} exists")
    folder = Path(str(image.path)) / "labels"
    final = folder / name
    # Written under a name of its own and moved into place once complete, so that a run that
    # fails or is stopped leaves the labels as they were (none, or the earlier ones).
    local = folder.is_dir()
    if local:  # left by a run killed while it wrote this label image (move_into_place
        # removes the .NAME.old-* a killed replacement left)
        for stale in folder.glob(f".{name}.partial-*"):
            remove_output(stale, writers=False)
    written = folder / f".{name}.partial-{uuid.uuid4().hex[:8]}" if local else final
    if not local and replacing:
        del labels_group[name]
    path = f"{image.path.rstrip('/')}/labels/{name}"
    pending = PendingLabels(labels_group, name, version, written, final, local, path)
    try:
        if local:
            group = zarr.open_group(str(written), mode="w", zarr_format=image.zarr_format)
        else:
            group = labels_group.create_group(name)
        _describe_label_image(group, image, name, version, axes, channel, colors, properties, k)
        pending.store = _write_levels(
            group, levels, level_chunks, dtype, image.zarr_format, names, compute=False
        )
        if not compute:
            return pending
        import dask

        dask.compute(pending.store)
        return pending.finish()
    except BaseException:
        pending.abort()
        raise


@dataclass
class PendingLabels:
    """A label image created by :func:`write_labels` with ``compute=False``: its levels
    are written by ``dask.compute(store)`` (with other work, if any); then :meth:`finish` puts it
    in place, or :meth:`abort` removes it."""

    labels_group: Any
    name: str
    version: str
    written: Path
    final: Path
    local: bool
    path: str
    store: Any = None
    finished: bool = False

    def finish(self) -> str:
        """Move the complete label image into place (the earlier one is put back if that
        fails) and list it in the ``labels`` group; returns its path."""
        if self.local:
            move_into_place(self.written, self.final)
        listed = _ome_attrs(dict(self.labels_group.attrs))[0].get("labels") or []
        if self.name not in listed:
            listed = [*listed, self.name]
        _set_ome(self.labels_group, self.version, labels=list(listed))
        self.finished = True
        return self.path

    def abort(self) -> None:
        """Remove the label image unless :meth:`finish` has put it in place, once the
        threads still writing its chunks have stopped."""
        if not self.finished:
            remove_output(self.written)


def _describe_label_image(group, image, name, version, axes, channel, colors, properties, k):
    """The OME-NGFF metadata of a label image: its multiscales and image-label."""
    datasets = [
        {
            "path": str(index),
            "coordinateTransformations": _transforms_without(
                ds.get("coordinateTransformations"), channel
            ),
        }
        for index, ds in enumerate(image.datasets)
    ]
    extra = {}
    if image.multiscale.get("coordinateTransformations"):
        extra["coordinateTransformations"] = _transforms_without(
            image.multiscale["coordinateTransformations"], channel
        )
    extra["type"] = "nearest"  # how the levels were made (#multiscale-md "type")
    image_label: dict[str, Any] = {}
    if version == "0.4":
        image_label["version"] = "0.4"
    # Label 0, the background, listed as transparent: a viewer that colours only the listed
    # values (or draws unlisted ones with a colour of its own) shows the image through it.
    image_label["colors"] = [{"label-value": 0, "rgba": [0, 0, 0, 0]}] + [
        {"label-value": i + 1, "rgba": [int(v) for v in rgba]} for i, rgba in enumerate(colors)
    ]
    if properties is not None:
        # Label 0 listed here too, with no statistics (the background is no cluster): the
        # label values of ``colors`` and ``properties`` must be the same set for OME-NGFF
        # validators (ome-zarr-models refuses the label image otherwise).
        image_label["properties"] = [{"label-value": 0}, *label_properties(properties, k)]
    image_label["source"] = {"image": "../../"}
    _set_ome(
        group,
        version,
        multiscales=[_multiscale_entry(version, axes, datasets, name=name, extra=extra)],
        **{"image-label": image_label},
    )


def write_result_labels(
    image,
    result,
    *,
    name: str = DEFAULT_LABEL_NAME,
    transparent=None,
    overwrite: bool = True,
    compute: bool = True,
):
    """:func:`write_labels` for a :class:`~napari_kmeans_filter.QuantizeResult`.

    ``result`` must come from the image's full-resolution level clustered with
    ``channel_axis=image.channel_axis``.  Colours: :func:`label_colors` of the palette
    with the image's dtype and ``omero`` metadata; properties: ``result.cluster_stats()``.
    """
    if not isinstance(image, OmeZarrImage):
        image = read_image(image)
    colors = label_colors(result.palette.colors, image.data.dtype, omero=image.omero)
    return write_labels(
        image,
        result.labels,
        colors,
        name=name,
        properties=result.cluster_stats(),
        transparent=transparent,
        overwrite=overwrite,
        compute=compute,
    )


def _default_axes(names) -> list[dict]:
    axes = []
    for axis in names:
        axis = {"name": axis} if isinstance(axis, str) else dict(axis)
        if "type" not in axis and axis["name"] in _AXIS_TYPES:
            axis["type"] = _AXIS_TYPES[axis["name"]]
        axes.append(axis)
    return axes


def write_image(
    path,
    data,
    *,
    like: OmeZarrImage | None = None,
    axes=None,
    storage_chunks: tuple[int, ...] | None = None,
    zarr_format: int | None = None,
    name: str | None = None,
    overwrite: bool = False,
    compute: bool = True,
):
    """Write an array (e.g. a quantised image) as a new OME-Zarr image group.

    With ``like`` (the image it was computed from), the new image has its axes, pyramid
    (levels by nearest-neighbour picks from ``data``, so they hold palette colours
    only), storage chunks, transformations, ``omero`` rendering metadata and zarr format.
    Without it, one level with unit scale and the given ``axes``.

    Parameters
    ----------
    path : str or os.PathLike
        The new group.
    data : array_like or dask array
        Full-resolution data, ``like.data``'s shape.
    like : OmeZarrImage, optional
        The image whose structure to copy.
    axes : str or list, optional
        Without ``like``: axis names (e.g. "cyx", "tczyx") or OME-NGFF axis objects.
    storage_chunks : tuple of int, optional
        Without ``like``: the zarr chunks (default: up to 1024 along the last two axes,
        1 elsewhere, the whole channel axis).
    zarr_format : {2, 3}, optional
        Default: ``like``'s, else 3 (OME-NGFF 0.5).
    name : str, optional
        The multiscale's ``name``.
    overwrite : bool, optional
        Replace an existing group at ``path``.
    compute : bool, optional
        False: create the group, its arrays and metadata now and return what writes the
        data, to pass to ``dask.compute`` with other work (as dask's
        ``to_zarr(compute=False)``).

    Returns
    -------
    str or dask collection
        ``path`` (``compute`` True).
    """
    import zarr

    if like is not None:
        if tuple(data.shape) != tuple(like.data.shape):
            raise OmeZarrError(f"data {tuple(data.shape)} differ from the image {like.data.shape}")
        axes_out = [dict(a) for a in like.axes]
        zarr_format = zarr_format or like.zarr_format
        level_shapes = [tuple(lv.shape) for lv in like.levels]
        level_chunks = list(like.storage_chunks)
        datasets = [dict(ds) for ds in like.datasets]
        scales = like.scales()
        extra = {}
        if like.multiscale.get("coordinateTransformations"):
            extra["coordinateTransformations"] = like.multiscale["coordinateTransformations"]
        omero = like.omero
    else:
        if axes is None:
            raise OmeZarrError("write_image needs `like` or `axes`")
        axes_out = _default_axes(list(axes) if isinstance(axes, str) else axes)
        if len(axes_out) != data.ndim:
            raise OmeZarrError(f"{len(axes_out)} axes for data of {data.ndim} dimensions")
        zarr_format = zarr_format or 3
        level_shapes = [tuple(data.shape)]
        if storage_chunks is None:
            storage_chunks = tuple(
                data.shape[i]
                if axes_out[i].get("type") == "channel"
                else (min(1024, data.shape[i]) if i >= data.ndim - 2 else 1)
                for i in range(data.ndim)
            )
        level_chunks = [tuple(storage_chunks)]
        datasets = [
            {
                "path": "0",
                "coordinateTransformations": [{"type": "scale", "scale": [1.0] * data.ndim}],
            }
        ]
        scales = [[1.0] * data.ndim]
        extra, omero = {}, None
    version = NGFF_VERSION[zarr_format]
    full = _as_dask(data, level_chunks[0])
    levels = [full] + [
        _nearest_level(full, shape, _level_factors(level_shapes[0], shape, scales[0], scale))
        for shape, scale in zip(level_shapes[1:], scales[1:], strict=True)
    ]
    group = zarr.open_group(str(path), mode="w" if overwrite else "w-", zarr_format=zarr_format)
    names = [a["name"] for a in axes_out]
    store = _write_levels(
        group, levels, level_chunks, full.dtype, zarr_format, names, compute=compute
    )
    datasets = [{**ds, "path": str(i)} for i, ds in enumerate(datasets)]
    extra["type"] = "nearest"
    keys: dict[str, Any] = {
        "multiscales": [_multiscale_entry(version, axes_out, datasets, name=name, extra=extra)]
    }
    if omero:
        keys["omero"] = omero
    _set_ome(group, version, **keys)
    return str(path) if compute else store
