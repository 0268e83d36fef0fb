"""The palette panel, palette export and re-use, and the per-cluster features table
(a real viewer; one viewer per test)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from qtpy.QtCore import Qt

from napari_kmeans_filter import Palette, apply_palette, quantize
from napari_kmeans_filter._palette_files import palette_json

pytestmark = pytest.mark.viewer


@pytest.fixture
def run_on_cat(cat_crop, open_widget, run_and_wait):
    """``run_on_cat(viewer, k=5)``: the cat crop quantized by the dock; (layer, widget)."""

    def run(viewer, k=5):
        cat = viewer.add_image(cat_crop(), rgb=True, name="cat")
        widget = open_widget(viewer)
        widget.controls.n_colors_input.value = k
        run_and_wait(widget)
        return cat, widget

    return run


# pytest-xvfb's display has 16-bit color (5-6-5 bits): widget colors come back rounded
# to 8 levels; the canvas (OpenGL) is exact.
WIDGET_COLOR_TOLERANCE = 8


def swatch_color(item) -> np.ndarray:
    image = item.icon().pixmap(8, 8).toImage()
    color = image.pixelColor(4, 4)
    return np.array([color.red(), color.green(), color.blue()])


def test_palette_panel_shows_the_colors_in_label_order_with_their_share(
    make_napari_viewer,
    qtbot,
    result_layers,
    run_on_cat,
):
    viewer = make_napari_viewer()
    _cat, widget = run_on_cat(viewer, k=5)
    clusters, _ = result_layers(viewer, "cat")
    palette = Palette.from_dict(clusters.metadata["palette"])
    swatches = widget.palette_panel.swatches
    assert swatches.count() == len(palette) == 5
    shares = palette.counts / palette.counts.sum()
    for row in range(swatches.count()):
        item = swatches.item(row)
        label = row + 1
        assert item.data(Qt.ItemDataRole.UserRole) == label
        expected = np.round(clusters.colormap.map(np.array([label]))[0, :3] * 255)
        np.testing.assert_allclose(swatch_color(item), expected, atol=WIDGET_COLOR_TOLERANCE)
        assert item.text() == f"{100 * shares[row]:.1f}%"
        assert f"label {label}:" in item.toolTip()
    assert widget.palette_panel.export_button.enabled


def test_clicking_a_swatch_selects_its_label_in_the_clusters_layer(
    make_napari_viewer,
    qtbot,
    result_layers,
    run_on_cat,
):
    viewer = make_napari_viewer(show=True)
    _cat, widget = run_on_cat(viewer, k=5)
    clusters, _ = result_layers(viewer, "cat")
    swatches = widget.palette_panel.swatches
    qtbot.wait(50)
    item = swatches.item(3)
    position = swatches.visualItemRect(item).center()
    qtbot.mouseClick(swatches.viewport(), Qt.MouseButton.LeftButton, pos=position)
    assert clusters.selected_label == 4


def test_a_swatch_of_an_image_only_result_selects_no_older_clusters_layer(
    make_napari_viewer, qtbot, result_layers, run_on_cat, run_and_wait, notifications
):
    """A Run with outputs "image" leaves the last clusters layer (k = 3) as it was: a
    swatch of the new palette (k = 6) must not select its own index there, a label that
    layer does not have or that means another colour."""
    viewer = make_napari_viewer(show=True)
    _cat, widget = run_on_cat(viewer, k=3)
    clusters, _ = result_layers(viewer, "cat")
    widget.controls.outputs_choice.value = "image"
    widget.controls.n_colors_input.value = 6
    run_and_wait(widget)
    assert widget.palette_panel.swatches.count() == 6
    selected = clusters.selected_label
    swatches = widget.palette_panel.swatches
    qtbot.wait(50)
    position = swatches.visualItemRect(swatches.item(4)).center()
    qtbot.mouseClick(swatches.viewport(), Qt.MouseButton.LeftButton, pos=position)
    assert clusters.selected_label == selected
    told = [message for _, message in notifications if "no clusters layer" in message]
    assert len(told) == 1, told  # once for the click (it also moved the current item)
    # ... and the old clusters (another palette) no longer cover the new image
    assert not clusters.visible


def test_palette_panel_screenshot_shows_every_palette_color(
    make_napari_viewer,
    qtbot,
    result_layers,
    run_on_cat,
):
    viewer = make_napari_viewer(show=True)
    _cat, widget = run_on_cat(viewer, k=6)
    clusters, _ = result_layers(viewer, "cat")
    qtbot.wait(50)
    # One swatch selected: it keeps its colour (Qt tinted a selected icon grey-blue).
    swatches = widget.palette_panel.swatches
    position = swatches.visualItemRect(swatches.item(2)).center()
    qtbot.mouseClick(swatches.viewport(), Qt.MouseButton.LeftButton, pos=position)
    assert swatches.item(2).isSelected()
    qtbot.wait(50)
    shot = widget.palette_panel.swatches.viewport().grab().toImage()
    width, height = shot.width(), shot.height()
    pixels = np.array(
        [
            [shot.pixelColor(x, y).getRgb()[:3] for x in range(0, width, 2)]
            for y in range(0, height, 2)
        ]
    )
    on_screen = pixels.reshape(-1, 3)
    for label in range(1, 7):
        expected = np.round(clusters.colormap.map(np.array([label]))[0, :3] * 255)
        distance = np.abs(on_screen - expected).max(axis=1)
        assert (distance <= WIDGET_COLOR_TOLERANCE).sum() >= 100, (label, expected)  # a swatch


def test_export_writes_the_command_lines_palette_file(
    make_napari_viewer,
    qtbot,
    tmp_path,
    result_layers,
    run_on_cat,
):
    viewer = make_napari_viewer()
    _cat, widget = run_on_cat(viewer, k=4)
    clusters, _ = result_layers(viewer, "cat")
    path = widget.export_palette(tmp_path / "cat.json")
    palette = Palette.from_dict(clusters.metadata["palette"])
    assert path.read_text(encoding="utf-8") == palette_json(palette)
    assert json.loads(path.read_text(encoding="utf-8")) == palette.to_dict()

    # ... and the command line repaints with it.
    from PIL import Image as PILImage

    PILImage.fromarray(skimage.data.astronaut()[:64, :64]).save(tmp_path / "a.png")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_kmeans_filter",
            str(tmp_path / "a.png"),
            "--apply-palette",
            str(path),
            "-o",
            str(tmp_path / "a_cat.png"),
            "--no-indexed-png",
        ],
        check=True,
        capture_output=True,
    )
    repainted = np.asarray(PILImage.open(tmp_path / "a_cat.png").convert("RGB"))
    expected = apply_palette(skimage.data.astronaut()[:64, :64], palette).image
    np.testing.assert_array_equal(repainted, expected)


def test_apply_the_palette_of_one_result_to_another_layer(
    make_napari_viewer,
    qtbot,
    wait_until_idle,
    result_layers,
    run_on_cat,
):
    viewer = make_napari_viewer()
    _cat, widget = run_on_cat(viewer, k=5)
    cat_clusters, _ = result_layers(viewer, "cat")
    astronaut = viewer.add_image(skimage.data.astronaut()[:80, :100], rgb=True, name="astro")
    viewer.layers.selection.active = astronaut
    assert widget.controls.image_layers.value == [astronaut]
    assert cat_clusters in widget.palette_panel.palette_source_choice.choices
    # Apply waits for a choice in 'apply from'.
    widget.palette_panel.palette_source_choice.value = None
    assert not widget.palette_panel.apply_button.enabled
    widget.palette_panel.palette_source_choice.value = cat_clusters
    assert widget.palette_panel.apply_button.enabled

    widget.palette_panel.apply_button.native.click()
    wait_until_idle(widget)

    palette = Palette.from_dict(cat_clusters.metadata["palette"])
    expected = apply_palette(astronaut.data, palette)
    clusters, image = result_layers(viewer, "astro")
    np.testing.assert_array_equal(clusters.data, expected.labels + 1)
    np.testing.assert_array_equal(image.data, expected.image)
    # Named as applied, not as if fitted on the astronaut.
    assert image.name == "astro k=5 (palette from cat clusters)"
    assert image.metadata["applied_palette"] == "cat clusters"
    assert clusters.metadata["palette"]["colors"] == palette.to_dict()["colors"]
    assert image.metadata["params"]["palette"]["colors"] == palette.to_dict()["colors"]


def test_apply_a_palette_file_and_refuse_one_of_the_wrong_kind(
    make_napari_viewer,
    qtbot,
    tmp_path,
    cat_crop,
    collect_notifications,
    open_widget,
    wait_until_idle,
    result_layers,
):
    viewer = make_napari_viewer()
    layer = viewer.add_image(cat_crop(), rgb=True, name="cat")
    widget = open_widget(viewer)
    palette = Palette(np.array([[0, 0, 0], [255, 200, 0], [255, 255, 255]], np.uint8))
    good = tmp_path / "good.json"
    good.write_text(palette_json(palette), encoding="utf-8")

    widget.apply_palette_file(good)
    wait_until_idle(widget)
    _clusters, image = result_layers(viewer, "cat")
    np.testing.assert_array_equal(image.data, apply_palette(layer.data, palette).image)
    assert widget.palette_panel.swatches.count() == 3

    grey = tmp_path / "grey.json"
    grey.write_text(palette_json(Palette(np.array([[0], [255]], np.uint8))), encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    for path, message in ((grey, "channel"), (broken, "JSON")):
        with collect_notifications() as notifications:
            widget.apply_palette_file(path)
            wait_until_idle(widget)
        errors = [text for severity, text in notifications if severity == "error"]
        assert errors and message in errors[-1], notifications
    assert len(viewer.layers) == 3
    np.testing.assert_array_equal(image.data, apply_palette(layer.data, palette).image)


def test_clusters_features_hold_one_row_per_label(
    make_napari_viewer, qtbot, cat_crop, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    rgba = np.dstack([cat_crop(), np.full(cat_crop().shape[:2], 255, np.uint8)])
    rgba[:20, :, 3] = 0  # transparent pixels are in no cluster
    layer = viewer.add_image(rgba, rgb=True, name="cat")
    widget = open_widget(viewer)
    widget.controls.n_colors_input.value = 5
    run_and_wait(widget)
    clusters, _ = result_layers(viewer, "cat")
    features = clusters.features
    expected = quantize(rgba, 5).cluster_stats()
    np.testing.assert_array_equal(features["label"], np.arange(1, 6))
    np.testing.assert_array_equal(features["index"], np.arange(1, 6))
    np.testing.assert_array_equal(features["count"], expected["count"])
    assert features["count"].sum() == (rgba[..., 3] > 0).sum()
    np.testing.assert_allclose(features["fraction"].sum(), 1.0)
    for channel, name in enumerate(("mean_r", "mean_g", "mean_b")):
        np.testing.assert_allclose(features[name], expected[f"mean_{channel}"])
    np.testing.assert_allclose(features["rms_error"], expected["rms_error"])
    # napari shows the row of the label under the cursor.
    y, x = 40, 40
    label = int(clusters.data[y, x])
    status = clusters.get_status((y, x), world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    assert f"count: {int(features['count'][label - 1])}" in text, text
    # ... and napari's own features table widget lists one row per cluster.
    _dock, table = viewer.window.add_plugin_dock_widget("napari", "Features table widget")
    viewer.layers.selection.active = clusters
    qtbot.wait(50)
    from qtpy.QtWidgets import QTableView

    (view,) = [v for v in table.findChildren(QTableView) if v.model() is not None]
    assert view.model().rowCount() == 5
    del layer


def test_stack_frame_counts_are_a_long_table_not_one_column_per_frame(
    make_napari_viewer, qtbot, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    frames = np.stack([skimage.data.camera()[:32, :48] // (t % 6 + 1) for t in range(60)])
    viewer.add_image(frames, name="movie")
    widget = open_widget(viewer)
    widget.controls.n_colors_input.value = 4
    run_and_wait(widget)
    clusters, _ = result_layers(viewer, "movie")
    # napari's status line shows every feature of the hovered label: one per frame would
    # be 60 more.
    assert set(clusters.features.columns) == {
        "index",
        "label",
        "count",
        "fraction",
        "mean",
        "rms_error",
    }
    table = clusters.metadata["frame_counts"]
    assert len(table["frame"]) == len(table["label"]) == len(table["count"]) == 60 * 4
    frame = np.asarray(table["frame"])
    label = np.asarray(table["label"])
    count = np.asarray(table["count"])
    expected = [
        (np.asarray(clusters.data[t]) == k).sum() for t, k in zip(frame, label, strict=True)
    ]
    np.testing.assert_array_equal(count, expected)
    totals = [count[label == k].sum() for k in clusters.features["label"]]
    np.testing.assert_array_equal(totals, clusters.features["count"])
