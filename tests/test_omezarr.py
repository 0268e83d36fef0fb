"""OME-Zarr round trips: images in (0.4 on zarr v2, 0.5 on zarr v3), OME-NGFF label images out.

Inputs are written by ome-zarr-py (the reference implementation, as a microscopist's
tools would); the label metadata is validated by ome-zarr-models (pydantic models of the
OME-NGFF 0.4 / 0.5 JSON schemas) and read back by ome-zarr-py's reader, the one
napari-ome-zarr uses.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
pytest.importorskip("dask.array")
ome_writer = pytest.importorskip("ome_zarr.writer")
ome_format = pytest.importorskip("ome_zarr.format")

from napari_kmeans_filter import _omezarr, quantize  # noqa: E402

VERSIONS = [
    pytest.param(2, "0.4", id="ngff0.4-zarr2"),
    pytest.param(3, "0.5", id="ngff0.5-zarr3"),
]


def _noisy(shape, seed=0):
    """Smooth ramps plus noise along the last two axes: many distinct colours."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).sum(axis=0) * 7 % 256
    return np.clip(grid + rng.normal(0, 9, shape), 0, 255).astype(np.uint8)


def _write_ome(path, data, axes, zarr_format, chunks, scale_factors=(2, 4)):
    fmt = ome_format.FormatV04() if zarr_format == 2 else ome_format.FormatV05()
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    ome_writer.write_image(
        data,
        group,
        axes=axes,
        fmt=fmt,
        scale_factors=scale_factors,
        storage_options={"chunks": chunks},
    )
    return str(path)


def _validate(image_path, zarr_format):
    """ome-zarr-models' checks of the whole image group: the image, the labels group
    (every listed label image, its dtype) and each label image's multiscale."""
    models = pytest.importorskip(
        "ome_zarr_models.v04" if zarr_format == 2 else "ome_zarr_models.v05"
    )
    group = zarr.open_group(image_path, mode="r")
    models.Image.from_zarr(group)
    models.Labels.from_zarr(group["labels"])
    for name in _omezarr._ome_attrs(dict(group["labels"].attrs))[0]["labels"]:
        label = models.ImageLabel.from_zarr(group["labels"][name])
        assert label.attributes is not None


def _label_attrs(path):
    return _omezarr._ome_attrs(dict(zarr.open_group(path, mode="r").attrs))[0]


@pytest.mark.parametrize(("zarr_format", "version"), VERSIONS)
def test_rgb_round_trip(tmp_path, zarr_format, version):
    rgb = _noisy((3, 64, 48))
    path = _write_ome(tmp_path / "rgb.zarr", rgb, "cyx", zarr_format, (3, 16, 16))
    assert _omezarr.is_ome_zarr(path)
    image = _omezarr.read_image(path)
    assert (image.version, image.zarr_format) == (version, zarr_format)
    assert image.axis_names == ("c", "y", "x") and image.channel_axis == 0
    assert [lv.shape for lv in image.levels] == [(3, 64, 48), (3, 32, 24), (3, 16, 12)]
    np.testing.assert_array_equal(image.data.compute(), rgb)

    result = quantize(image.data, 8, channel_axis=image.channel_axis, random_state=0)
    expected = quantize(rgb, 8, channel_axis=0, random_state=0)
    out = _omezarr.write_result_labels(image, result)
    assert out == f"{path}/labels/kmeans"

    group = zarr.open_group(out, mode="r")
    full = group["0"][...]
    # the napari clusters layer's values: palette index + 1, bit for bit
    np.testing.assert_array_equal(full, expected.labels.astype(np.uint8) + 1)
    assert full.dtype == np.uint8
    assert group["0"].metadata.zarr_format == zarr_format
    assert group["0"].chunks == (16, 16)  # the image's storage chunks less the channel axis
    # levels: nearest-neighbour picks of the full-resolution labels, the image's shapes
    np.testing.assert_array_equal(group["1"][...], full[::2, ::2])
    np.testing.assert_array_equal(group["2"][...], full[::4, ::4])

    attrs = _label_attrs(out)
    label = attrs["image-label"]
    palette = np.asarray(expected.palette.colors)
    # label 0, the background, transparent; then the palette, opaque
    assert label["colors"][0] == {"label-value": 0, "rgba": [0, 0, 0, 0]}
    assert [c["label-value"] for c in label["colors"]] == list(range(len(palette) + 1))
    np.testing.assert_array_equal([c["rgba"][:3] for c in label["colors"][1:]], palette)
    assert all(c["rgba"][3] == 255 for c in label["colors"][1:])
    # the same label values (ome-zarr-models checks it), the background without statistics
    assert label["properties"][0] == {"label-value": 0}
    assert [p["label-value"] for p in label["properties"]] == list(range(len(palette) + 1))
    assert [p["count"] for p in label["properties"][1:]] == expected.palette.counts.tolist()
    assert label["source"] == {"image": "../../"}
    multiscale = attrs["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["y", "x"]
    image_scales = [ds["coordinateTransformations"][0]["scale"] for ds in image.datasets]
    label_scales = [ds["coordinateTransformations"][0]["scale"] for ds in multiscale["datasets"]]
    assert label_scales == [s[1:] for s in image_scales]
    assert _label_attrs(f"{path}/labels")["labels"] == ["kmeans"]
    if zarr_format == 2:
        meta = json.loads((tmp_path / "rgb.zarr" / "labels" / "kmeans" / ".zattrs").read_text())
        assert meta["image-label"]["version"] == "0.4"
        assert (
            json.loads((tmp_path / "rgb.zarr/labels/kmeans/0/.zarray").read_text())[
                "dimension_separator"
            ]
            == "/"
        )
    else:
        meta = json.loads((tmp_path / "rgb.zarr/labels/kmeans/zarr.json").read_text())
        assert meta["attributes"]["ome"]["version"] == "0.5"
        assert group["0"].metadata.dimension_names == ("y", "x")
    _validate(path, zarr_format)


@pytest.mark.parametrize(("zarr_format", "version"), VERSIONS)
def test_tczyx_round_trip(tmp_path, zarr_format, version):
    data = _noisy((2, 3, 2, 32, 24), seed=1)
    path = _write_ome(tmp_path / "t.zarr", data, "tczyx", zarr_format, (1, 3, 1, 16, 16), (2,))
    image = _omezarr.read_image(path)
    assert image.axis_names == ("t", "c", "z", "y", "x") and image.channel_axis == 1
    # t and z stay leading axes: one palette over every time point and plane
    result = quantize(image.data, 6, channel_axis=image.channel_axis, random_state=0)
    expected = quantize(data, 6, channel_axis=1, random_state=0)
    out = _omezarr.write_result_labels(image, result, name="clusters")
    group = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(group["0"][...], expected.labels + 1)
    assert group["0"].shape == (2, 2, 32, 24) and group["0"].chunks == (1, 1, 16, 16)
    np.testing.assert_array_equal(group["1"][...], group["0"][:, :, ::2, ::2])
    axes = _label_attrs(out)["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["t", "z", "y", "x"]
    _validate(path, zarr_format)


@pytest.mark.parametrize(("zarr_format", "version"), VERSIONS)
def test_open_image_reads_an_ome_zarr_image_at_full_resolution(tmp_path, zarr_format, version):
    """The API helper (and so the command line) opens an OME-Zarr image group instead of
    refusing it: the full-resolution level with its axes, ``c`` the channel axis, tasks of
    several storage chunks, the storage chunks and zarr format recorded for the outputs."""
    from napari_kmeans_filter._io import open_image

    data = _noisy((2, 3, 2, 64, 80), seed=2)
    path = _write_ome(tmp_path / "img.ome.zarr", data, "tczyx", zarr_format, (1, 1, 1, 16, 16))
    with open_image(path) as source:
        assert source.kind == "ome-zarr" and source.lazy
        assert source.shape == data.shape and source.dtype == np.uint8
        assert source.channel_axis == -4 and source.alpha is False
        assert source.axes == ("t", "c", "z", "y", "x")
        assert source.storage_chunks == (1, 1, 1, 16, 16)
        assert source.zarr_format == zarr_format
        assert source.ome_zarr.version == version
        lazy = source.load()
        n_chunks = np.prod(
            [-(-n // c) for n, c in zip(data.shape, source.storage_chunks, strict=True)]
        )
        assert lazy.npartitions < n_chunks
        np.testing.assert_array_equal(lazy.compute(), data)
        # t and z pooled into one palette, bit-identical to numpy; the labels go back
        # under the image
        result = quantize(lazy, 5, channel_axis=source.channel_axis, random_state=0)
        expected = quantize(data, 5, channel_axis=1, random_state=0)
        out = _omezarr.write_result_labels(source.ome_zarr, result)
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["0"][...], expected.labels + 1)
    _validate(path, zarr_format)


def test_open_image_reads_a_zarr_v2_ome_group_without_a_zarr_suffix(tmp_path):
    from napari_kmeans_filter._io import open_image

    data = _noisy((3, 32, 32))
    path = _write_ome(tmp_path / "plate_image", data, "cyx", 2, (3, 16, 16), (2,))
    with open_image(path) as source:
        assert source.channel_axis == -3 and source.zarr_format == 2
        np.testing.assert_array_equal(source.load().compute(), data)


def test_a_plain_zarr_group_is_still_refused_with_a_hint(tmp_path):
    from napari_kmeans_filter._io import ImageIOError, open_image

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("a", shape=(4, 4), dtype="uint8")
    with pytest.raises(ImageIOError, match=r"not an array or an OME-Zarr image.*g\.zarr/a"):
        open_image(tmp_path / "g.zarr")


def test_labels_list_keeps_other_label_images(tmp_path):
    rgb = _noisy((3, 32, 32))
    path = _write_ome(tmp_path / "rgb.zarr", rgb, "cyx", 3, (3, 16, 16), (2,))
    image = _omezarr.read_image(path)
    result = quantize(image.data, 4, channel_axis=0, random_state=0)
    _omezarr.write_result_labels(image, result, name="other")
    _omezarr.write_result_labels(image, result)
    _omezarr.write_result_labels(image, result)  # rewritten, not listed twice
    assert _label_attrs(f"{path}/labels")["labels"] == ["other", "kmeans"]
    with pytest.raises(_omezarr.OmeZarrError, match="exists"):
        _omezarr.write_result_labels(image, result, overwrite=False)
    _validate(path, 3)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_overwrite_that_fails_keeps_the_earlier_labels(tmp_path, monkeypatch, zarr_format):
    """Replacing labels/kmeans writes the new label image under a name of its own and moves
    it into place once complete: a failure (or a stop) while writing leaves the earlier
    labels whole and no partial group."""
    rgb = _noisy((3, 32, 32))
    path = _write_ome(tmp_path / "rgb.zarr", rgb, "cyx", zarr_format, (3, 16, 16), (2,))
    image = _omezarr.read_image(path)
    first = quantize(image.data, 4, channel_axis=0, random_state=0)
    _omezarr.write_result_labels(image, first)
    before = np.asarray(zarr.open_array(f"{path}/labels/kmeans/0", mode="r")[...])
    second = quantize(image.data, 6, channel_axis=0, random_state=0)

    real = _omezarr._set_ome

    def fail_on_the_label_metadata(group, version, **attributes):
        if "image-label" in attributes:  # the levels are written by now
            raise KeyboardInterrupt  # what a stop signal raises in the command line
        real(group, version, **attributes)

    monkeypatch.setattr(_omezarr, "_set_ome", fail_on_the_label_metadata)
    with pytest.raises(KeyboardInterrupt):
        _omezarr.write_result_labels(image, second)
    labels = tmp_path / "rgb.zarr" / "labels"
    assert sorted(p.name for p in labels.iterdir() if p.is_dir()) == ["kmeans"]
    after = np.asarray(zarr.open_array(f"{path}/labels/kmeans/0", mode="r")[...])
    np.testing.assert_array_equal(after, before)
    assert len(_label_attrs(f"{path}/labels/kmeans")["image-label"]["colors"]) == 5
    monkeypatch.undo()
    _omezarr.write_result_labels(image, second)  # and a complete one replaces them
    assert len(_label_attrs(f"{path}/labels/kmeans")["image-label"]["colors"]) == 7
    _validate(path, zarr_format)


def test_transparent_pixels_are_background(tmp_path):
    rgb = _noisy((3, 32, 32))
    path = _write_ome(tmp_path / "rgb.zarr", rgb, "cyx", 2, (3, 16, 16), (2,))
    image = _omezarr.read_image(path)
    result = quantize(rgb, 4, channel_axis=0, random_state=0)
    transparent = np.zeros((32, 32), bool)
    transparent[:5] = True
    out = _omezarr.write_labels(
        image,
        result.labels,
        _omezarr.label_colors(result.palette.colors, np.uint8),
        transparent=transparent,
    )
    full = zarr.open_group(out)["0"][...]
    assert (full[:5] == 0).all()
    np.testing.assert_array_equal(full[5:], result.labels[5:] + 1)


def test_napari_ome_zarr_reader_finds_the_labels_and_colours(tmp_path):
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    rgb = _noisy((3, 32, 32))
    path = _write_ome(tmp_path / "rgb.zarr", rgb, "cyx", 2, (3, 16, 16), (2,))
    image = _omezarr.read_image(path)
    result = quantize(image.data, 4, channel_axis=0, random_state=0)
    _omezarr.write_result_labels(image, result)
    nodes = list(reader.Reader(io.parse_url(f"{path}/labels/kmeans"))())
    label_nodes = [n for n in nodes if n.load(reader.Label)]
    assert label_nodes
    colors = label_nodes[0].metadata["color"]
    palette = np.asarray(result.palette.colors) / 255
    assert colors[0] == [0, 0, 0, 0]  # the background, transparent
    for index, rgb_value in enumerate(palette):
        np.testing.assert_allclose(colors[index + 1][:3], rgb_value, atol=1e-6)
    # its properties, keyed by label value, are the cluster statistics
    assert label_nodes[0].metadata["properties"][1]["count"] == int(result.palette.counts[0])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_quantised_image_as_a_new_ome_zarr_image(tmp_path, zarr_format):
    rgb = _noisy((3, 64, 48))
    path = _write_ome(tmp_path / "rgb.zarr", rgb, "cyx", zarr_format, (3, 16, 16))
    image = _omezarr.read_image(path)
    result = quantize(image.data, 8, channel_axis=0, random_state=0)
    out = _omezarr.write_image(tmp_path / "q.zarr", result.image, like=image)
    copy = _omezarr.read_image(out)
    assert (copy.zarr_format, copy.axis_names) == (zarr_format, image.axis_names)
    assert copy.storage_chunks == image.storage_chunks
    full = copy.data.compute()
    np.testing.assert_array_equal(full, result.image.compute())
    # every level holds palette colours only: picks, not averages
    np.testing.assert_array_equal(copy.levels[1].compute(), full[:, ::2, ::2])
    models = pytest.importorskip(
        "ome_zarr_models.v04" if zarr_format == 2 else "ome_zarr_models.v05"
    )
    models.Image.from_zarr(zarr.open_group(out, mode="r"))


def test_write_image_without_a_template(tmp_path):
    data = _noisy((2, 3, 40, 30))
    out = _omezarr.write_image(tmp_path / "n.zarr", data, axes="tcyx", zarr_format=2)
    image = _omezarr.read_image(out)
    assert image.version == "0.4" and image.channel_axis == 1
    np.testing.assert_array_equal(image.data.compute(), data)
    pytest.importorskip("ome_zarr_models.v04").Image.from_zarr(zarr.open_group(out, mode="r"))


def test_label_colors():
    palette = np.array([[0, 128, 255], [10, 20, 30]])
    np.testing.assert_array_equal(
        _omezarr.label_colors(palette, np.uint8), [[0, 128, 255, 255], [10, 20, 30, 255]]
    )
    # 12-bit data in uint16 through its omero window; one channel with its colour
    omero = {"channels": [{"color": "00FF00", "window": {"start": 0, "end": 4095}}]}
    np.testing.assert_array_equal(
        _omezarr.label_colors([[4095], [0]], np.uint16, omero=omero),
        [[0, 255, 0, 255], [0, 0, 0, 255]],
    )
    # grey without metadata; floats in [0, 1]
    np.testing.assert_array_equal(_omezarr.label_colors([0.5], np.float32), [[128, 128, 128, 255]])


def test_properties_are_json_with_label_values_from_one():
    rows = _omezarr.label_properties(
        {"label": [0, 1], "count": np.array([3, 0]), "mean_0": np.array([1.5, np.nan])}, 2
    )
    assert rows == [
        {"label-value": 1, "count": 3, "mean_0": 1.5},
        {"label-value": 2, "count": 0, "mean_0": None},
    ]
    json.dumps(rows)


def test_not_ome_zarr(tmp_path):
    zarr.create_array(store=str(tmp_path / "a.zarr"), shape=(4, 4), dtype="uint8")
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    for name in ("a.zarr", "g.zarr", "x.png", "missing"):
        assert not _omezarr.is_ome_zarr(tmp_path / name)
    with pytest.raises(_omezarr.OmeZarrError):
        _omezarr.read_image(tmp_path / "g.zarr")


def test_labels_of_the_wrong_shape_are_refused(tmp_path):
    path = _write_ome(tmp_path / "rgb.zarr", _noisy((3, 32, 32)), "cyx", 3, (3, 16, 16), (2,))
    with pytest.raises(_omezarr.OmeZarrError, match="expected"):
        _omezarr.write_labels(path, np.zeros((3, 32, 32), np.uint8), np.zeros((2, 4), np.uint8))


@pytest.mark.viewer
def test_napari_ome_zarr_opens_image_and_clusters_with_the_palette(tmp_path, make_napari_viewer):
    pytest.importorskip("napari_ome_zarr")
    rgb = _noisy((3, 64, 48))
    path = _write_ome(tmp_path / "rgb.zarr", rgb, "cyx", 3, (3, 16, 16), (2,))
    image = _omezarr.read_image(path)
    result = quantize(image.data, 6, channel_axis=0, random_state=0)
    _omezarr.write_result_labels(image, result)

    viewer = make_napari_viewer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = viewer.open(path, plugin="napari-ome-zarr")
    # Opening warns of nothing our metadata causes.  napari warns that the colour dict has
    # no default (`None`) entry whatever the metadata holds: napari-ome-zarr passes
    # image-label.colors on as a plain dict, and OME-NGFF label values are integers
    # (ome/ome-zarr-py#459, "fix that warning in napari-ome-zarr by always specifying a
    # default color"); label 0 listed as transparent does not silence it.
    upstream = "color_dict did not provide a default color"
    assert [str(w.message) for w in caught if upstream not in str(w.message)] == []
    (labels,) = [layer for layer in layers if layer.__class__.__name__ == "Labels"]
    assert labels.multiscale and len(labels.data) == 2
    np.testing.assert_array_equal(np.asarray(labels.data[0]), result.labels.compute() + 1)
    palette = np.asarray(result.palette.colors) / 255
    for index, colour in enumerate(palette):
        np.testing.assert_allclose(labels.get_color(index + 1)[:3], colour, atol=1 / 255)


@pytest.mark.viewer
def test_widget_source_of_napari_ome_zarr_layers_reads_several_chunks_per_task(
    tmp_path, make_napari_viewer
):
    """Layers opened by napari-ome-zarr (multiscale; channels split into layers) are
    captured for a run with their full-resolution level in tasks of several storage
    chunks, and clustered jointly they give the numpy result."""
    pytest.importorskip("napari_ome_zarr")
    from napari_kmeans_filter._napari._read import read_layer_source

    data = _noisy((3, 96, 64), seed=4)
    path = _write_ome(tmp_path / "cyx.zarr", data, "cyx", 3, (1, 16, 16), (2,))
    grey = _write_ome(tmp_path / "yx.zarr", data[1], "yx", 2, (16, 16), (2,))
    viewer = make_napari_viewer()
    channels = viewer.open(path, plugin="napari-ome-zarr")
    assert len(channels) == 3 and all(layer.multiscale for layer in channels)
    assert channels[0].data[0].npartitions == 6 * 4
    source = read_layer_source(channels)
    assert source.multiscale and source.joint
    assert all(level[0].npartitions == 1 for level in source.channels)
    result = quantize(source.levels[0], 6, random_state=0, **source.core_keywords())
    expected = quantize(np.moveaxis(data, 0, -1), 6, channel_axis=-1, alpha=False, random_state=0)
    np.testing.assert_array_equal(result.labels.compute(), expected.labels)

    (layer,) = viewer.open(grey, plugin="napari-ome-zarr")
    single = read_layer_source(layer)
    assert single.channels[0][0].npartitions == 1 < layer.data[0].npartitions
    np.testing.assert_array_equal(single.levels[0].compute(), data[1])


def test_a_pyramid_of_labels_reads_the_image_once(tmp_path, monkeypatch):
    """Every level of the label image comes from the same full-resolution labels, in one
    dask computation: writing a 3-level pyramid reads each of the image's tasks once."""
    rgb = _noisy((3, 64, 64))
    path = _write_ome(tmp_path / "rgb.zarr", rgb, "cyx", 3, (3, 16, 16), (2, 4))
    image = _omezarr.read_image(path)
    result = quantize(image.data, 4, channel_axis=0, random_state=0)
    reads = []
    real = zarr.Array.__getitem__

    def counting(self, selection):
        values = real(self, selection)
        if "labels" not in str(self.store_path).partition("rgb.zarr")[2] and values.size:
            reads.append(selection)
        return values

    monkeypatch.setattr(zarr.Array, "__getitem__", counting)
    _omezarr.write_result_labels(image, result)
    monkeypatch.undo()
    assert len(reads) == image.data.npartitions
    levels = zarr.open_group(f"{path}/labels/kmeans", mode="r")
    assert [levels[str(i)].shape for i in range(3)] == [(64, 64), (32, 32), (16, 16)]
    np.testing.assert_array_equal(levels["0"][...], quantize(rgb, 4, channel_axis=0).labels + 1)


def test_a_label_image_left_unfinished_by_a_killed_run_is_swept(tmp_path):
    """A run killed outright (no cleanup) leaves `.kmeans.partial-*` (or `.kmeans.old-*`)
    inside the input's labels/ folder: the next write of that label image removes them."""
    rgb = _noisy((3, 32, 32))
    path = _write_ome(tmp_path / "rgb.zarr", rgb, "cyx", 2, (3, 16, 16), (2,))
    image = _omezarr.read_image(path)
    result = quantize(image.data, 4, channel_axis=0, random_state=0)
    _omezarr.write_result_labels(image, result)
    labels = tmp_path / "rgb.zarr" / "labels"
    for stale in (".kmeans.partial-0badc0de", ".kmeans.old-0badc0de", ".other.partial-1"):
        (labels / stale / "0").mkdir(parents=True)
    _omezarr.write_result_labels(image, result)
    assert sorted(p.name for p in labels.iterdir() if p.is_dir()) == [".other.partial-1", "kmeans"]
