"""The dock widget and the console helpers, in a real napari viewer (no mocks).

Tests that open a viewer are marked ``viewer``; pytest-xvfb provides the display. Most
use small crops so the whole file stays well under two minutes on 2 cores.
"""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest
import skimage.data
from napari.layers import Image, Labels
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt, QTimer

import napari_kmeans_filter
from napari_kmeans_filter import quantize
from napari_kmeans_filter._layers import METADATA_KEY
from napari_kmeans_filter._widget import KMeansColourWidget

PLUGIN_NAME = "napari-kmeans-filter"
WIDGET_NAME = "K-means colour filter"
RUN_TIMEOUT_MS = 60_000


@pytest.fixture
def notifications():
    """Every napari notification shown during the test, as (severity, message) pairs."""
    received: list[tuple[str, str]] = []

    def collect(notification):
        received.append((str(notification.severity), str(notification.message)))

    notification_manager.notification_ready.connect(collect)
    yield received
    notification_manager.notification_ready.disconnect(collect)


def open_widget(viewer) -> KMeansColourWidget:
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
    return widget


def click_run_and_wait(qtbot, widget: KMeansColourWidget) -> None:
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)


def cat_crop(rows=slice(90, 150), cols=slice(170, 250)) -> np.ndarray:
    return np.ascontiguousarray(skimage.data.chelsea()[rows, cols])


def result_layers(viewer, source_name: str) -> tuple[Labels, Image]:
    (labels,) = [layer for layer in viewer.layers if layer.name == f"{source_name} clusters"]
    (image,) = [
        layer
        for layer in viewer.layers
        if isinstance(layer, Image) and layer.name.startswith(f"{source_name} k=")
    ]
    return labels, image


def palette_rgba(colors, max_value=255) -> np.ndarray:
    rgb = np.asarray(colors, dtype=float) / max_value
    return np.column_stack([rgb, np.ones(len(rgb))])


@pytest.mark.viewer
def test_widget_quantizes_the_sample_cat_and_rerun_updates(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    (cat,) = viewer.open_sample(PLUGIN_NAME, "cat")
    cat.scale = (0.5, 0.25)
    cat.translate = (10.0, -3.0)
    original = cat.data.copy()
    widget = open_widget(viewer)
    assert widget.image_choice.value is cat
    widget.n_colors_input.value = 6
    widget.seed_input.value = 3

    click_run_and_wait(qtbot, widget)

    labels, image = result_layers(viewer, "chelsea")
    assert len(viewer.layers) == 3
    assert image.name == "chelsea k=6"
    expected = quantize(original, 6, random_state=3)
    np.testing.assert_array_equal(labels.data, expected.labels.astype(np.uint8) + 1)
    np.testing.assert_array_equal(image.data, expected.image)
    assert image.rgb
    for layer in (labels, image):
        np.testing.assert_allclose(layer.scale, cat.scale)
        np.testing.assert_allclose(layer.translate, cat.translate)
        np.testing.assert_allclose(layer.affine.affine_matrix, cat.affine.affine_matrix)
    # The Labels layer is painted with the palette itself: label i + 1 = palette colour i.
    label_colors = labels.colormap.map(np.arange(1, 7))
    np.testing.assert_allclose(label_colors, palette_rgba(expected.palette.colors), atol=1e-6)
    assert labels.opacity == 1.0
    metadata = image.metadata
    assert metadata["palette"] == expected.palette.to_dict()
    assert metadata["n_input_colors"] == expected.n_input_colors
    assert metadata["psnr"] == pytest.approx(expected.psnr)
    assert metadata["mse"] == pytest.approx(expected.mse)
    assert metadata["params"] == expected.params
    assert labels.metadata["palette"] == expected.palette.to_dict()
    # A script can redo the run from the metadata alone.
    redone = quantize(original, **metadata["params"])
    np.testing.assert_array_equal(redone.labels, expected.labels)
    assert widget.status_label.value == (
        f"{expected.n_input_colors} → 6 colours, PSNR {expected.psnr:.1f} dB"
    )
    np.testing.assert_array_equal(cat.data, original)

    widget.n_colors_input.value = 3
    click_run_and_wait(qtbot, widget)

    assert len(viewer.layers) == 3
    labels_again, image_again = result_layers(viewer, "chelsea")
    assert labels_again is labels and image_again is image
    assert image.name == "chelsea k=3"
    assert image.metadata["params"]["n_colors"] == 3
    assert int(labels.data.max()) == 3
    assert len(labels.metadata["palette"]["colors"]) == 3
    np.testing.assert_array_equal(cat.data, original)


@pytest.mark.viewer
def test_layers_menu_entry_opens_the_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    from napari._app_model import get_app_model

    app = get_app_model()
    filter_menu_commands = [
        item.command
        for item in app.menus.get_menu("napari/layers/filter")
        if hasattr(item, "command")
    ]
    (entry,) = [c for c in filter_menu_commands if c.id == "napari-kmeans-filter.make_widget"]
    assert WIDGET_NAME in entry.title
    app.commands.execute_command(entry.id).result()
    docked = list(viewer.window.dock_widgets.values())
    assert any(isinstance(widget, KMeansColourWidget) for widget in docked)


@pytest.mark.viewer
def test_chooser_follows_active_image_and_offers_colour_space_for_rgb_only(
    make_napari_viewer,
):
    viewer = make_napari_viewer()
    rgb = viewer.add_image(cat_crop(), rgb=True, name="rgb")
    grey = viewer.add_image(skimage.data.camera()[:40, :40], name="grey")
    viewer.add_labels(np.zeros((4, 4), np.uint8), name="not an image")
    widget = open_widget(viewer)

    viewer.layers.selection.active = rgb
    assert widget.image_choice.value is rgb
    assert widget.color_space_choice.enabled
    viewer.layers.selection.active = grey
    assert widget.image_choice.value is grey
    assert not widget.color_space_choice.enabled
    viewer.layers.selection.active = viewer.layers["not an image"]
    assert widget.image_choice.value is grey
    assert widget.image_choice.choices == (rgb, grey)


@pytest.mark.viewer
def test_run_button_is_disabled_while_running_and_cancel_adds_nothing(
    make_napari_viewer, qtbot, notifications
):
    viewer = make_napari_viewer()
    viewer.add_image(skimage.data.astronaut(), rgb=True, name="astronaut")
    widget = open_widget(viewer)
    widget.n_colors_input.value = 32

    widget.run_button.native.click()
    assert widget.is_running
    assert not widget.run_button.enabled
    assert widget.cancel_button.enabled
    assert widget.run() is None  # no second run on top of the first
    widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)

    assert [layer.name for layer in viewer.layers] == ["astronaut"]
    assert widget.run_button.enabled
    assert not widget.cancel_button.enabled
    assert widget.status_label.value == "cancelled"
    assert any(s == "info" and "cancelled" in m for s, m in notifications)


@pytest.mark.viewer
def test_cancel_during_the_fit_stops_the_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(skimage.data.coffee(), rgb=True, name="coffee")
    widget = open_widget(viewer)
    widget.n_colors_input.value = 32
    reports_from_worker = []

    def press_cancel_at_first_report(fraction, _message):
        # Runs in the worker thread (direct connection), so the timing is deterministic:
        # the very next progress report must raise and end the run.
        reports_from_worker.append(fraction)
        widget._cancel_requested.set()

    widget._progress_relay.progressed.connect(
        press_cancel_at_first_report, Qt.ConnectionType.DirectConnection
    )
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)

    # One report, then the progress callback raised RunCancelled and the core gave up.
    assert len(reports_from_worker) == 1 and reports_from_worker[0] < 1.0
    assert widget.status_label.value == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["coffee"]
    assert widget.run_button.enabled


@pytest.mark.viewer
def test_progress_bar_is_determinate_and_reaches_the_end(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(cat_crop(), rgb=True, name="crop")
    widget = open_widget(viewer)
    values = []
    widget._progress_relay.progressed.connect(lambda fraction, _msg: values.append(fraction))
    click_run_and_wait(qtbot, widget)
    assert values and all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values)
    assert widget.progress_bar.value == widget.progress_bar.max


@pytest.mark.viewer
@pytest.mark.parametrize(
    ("make_layer", "expected_text"),
    [
        pytest.param(None, "no image layer", id="no-image-layer"),
        pytest.param(
            lambda v: v.add_image(np.zeros((1, 1, 3), np.uint8), rgb=True, name="dot"),
            "pixel",
            id="one-pixel",
        ),
        pytest.param(
            lambda v: v.add_image(np.full((8, 8), np.nan, np.float32), name="nan"),
            "NaN",
            id="all-nan",
        ),
    ],
)
def test_bad_layers_notify_and_add_no_layers(
    make_napari_viewer, qtbot, notifications, make_layer, expected_text
):
    viewer = make_napari_viewer()
    if make_layer is None:
        viewer.add_labels(np.zeros((8, 8), np.uint8), name="only labels")
    else:
        make_layer(viewer)
    names_before = [layer.name for layer in viewer.layers]
    widget = open_widget(viewer)

    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)

    assert [layer.name for layer in viewer.layers] == names_before
    errors = [message for severity, message in notifications if severity == "error"]
    assert errors, notifications
    assert expected_text.lower() in errors[-1].lower()
    assert widget.run_button.enabled


@pytest.mark.viewer
def test_more_colours_than_the_image_has_uses_what_exists(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    four_colors = np.zeros((20, 30, 3), np.uint8)
    four_colors[:10, :15] = (255, 0, 0)
    four_colors[10:, :15] = (0, 255, 0)
    four_colors[:10, 15:] = (0, 0, 255)
    viewer.add_image(four_colors, rgb=True, name="flags")
    widget = open_widget(viewer)
    widget.n_colors_input.value = 16

    click_run_and_wait(qtbot, widget)

    labels, image = result_layers(viewer, "flags")
    assert image.name == "flags k=4"
    np.testing.assert_array_equal(image.data, four_colors)
    assert sorted(np.unique(labels.data)) == [1, 2, 3, 4]
    infos = [message for severity, message in notifications if severity == "info"]
    assert any("only 4 distinct" in message for message in infos), notifications
    assert widget.status_label.value.startswith("4 → 4 colours")


@pytest.mark.viewer
def test_greyscale_uses_the_source_display(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    camera = viewer.add_image(
        skimage.data.camera()[100:160, 200:280],
        name="camera",
        colormap="gray",
        contrast_limits=(50, 200),
    )
    widget = open_widget(viewer)
    widget.n_colors_input.value = 5
    widget.color_space_choice.value = "lab"  # disabled for greyscale, so ignored

    click_run_and_wait(qtbot, widget)

    labels, image = result_layers(viewer, "camera")
    assert not image.rgb
    assert image.colormap.name == camera.colormap.name
    np.testing.assert_allclose(image.contrast_limits, (50, 200))
    assert image.metadata["params"]["color_space"] == "rgb"
    assert image.metadata["params"]["channel_axis"] is None
    grey_levels = np.asarray(image.metadata["palette"]["colors"], dtype=float)[:, 0]
    expected_grey = np.clip((grey_levels - 50) / 150, 0, 1)
    np.testing.assert_allclose(
        labels.colormap.map(np.arange(1, 6))[:, :3],
        np.repeat(expected_grey[:, np.newaxis], 3, axis=1),
        atol=1e-6,
    )


@pytest.mark.viewer
def test_console_helpers_for_a_time_series_stack(make_napari_viewer):
    viewer = make_napari_viewer()
    frames = np.stack([skimage.data.camera()[:32, :48] // (t + 1) for t in range(3)])
    stack = viewer.add_image(frames, name="movie", scale=(2.0, 0.5, 0.5))

    result = napari_kmeans_filter.quantize_layer(stack, 4, viewer=viewer, random_state=1)

    labels, image = result_layers(viewer, "movie")
    assert labels.data.shape == frames.shape
    # One palette for all three frames.
    assert len(result.palette) == 4
    assert set(np.unique(labels.data)) == {1, 2, 3, 4}
    np.testing.assert_allclose(labels.scale, (2.0, 0.5, 0.5))
    np.testing.assert_array_equal(image.data, result.image)

    again = napari_kmeans_filter.add_result_layers(viewer, result, stack)
    assert again == (labels, image)
    assert len(viewer.layers) == 3


@pytest.mark.viewer
def test_multiscale_layer_gives_multiscale_results(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    full = cat_crop(slice(0, 128), slice(0, 128))
    pyramid = [full, full[::2, ::2].copy(), full[::4, ::4].copy()]
    source = viewer.add_image(pyramid, rgb=True, multiscale=True, name="pyramid")
    # Force the fit onto the smallest level, as a huge pyramid would.
    monkeypatch.setattr("napari_kmeans_filter._layers.MULTISCALE_FIT_MAX_PIXELS", 32 * 32)
    widget = open_widget(viewer)
    widget.n_colors_input.value = 4

    click_run_and_wait(qtbot, widget)

    labels, image = result_layers(viewer, "pyramid")
    assert labels.multiscale and image.multiscale
    assert [level.shape for level in labels.data] == [level.shape[:2] for level in pyramid]
    assert image.metadata["multiscale_fit_level"] == 2
    palette = np.asarray(image.metadata["palette"]["colors"])
    for level, labels_level, image_level in zip(pyramid, labels.data, image.data, strict=True):
        assert image_level.shape == level.shape
        np.testing.assert_array_equal(image_level, palette[np.asarray(labels_level) - 1])
    originals = [level.copy() for level in pyramid]

    widget.n_colors_input.value = 3
    click_run_and_wait(qtbot, widget)

    assert len(viewer.layers) == 3
    assert result_layers(viewer, "pyramid") == (labels, image)
    assert labels.multiscale and image.name == "pyramid k=3"
    assert [int(np.asarray(level).max()) for level in labels.data] == [3, 3, 3]
    for original, level in zip(originals, source.data, strict=True):
        np.testing.assert_array_equal(np.asarray(level), original)


@pytest.mark.viewer
def test_dask_layer_results_stay_lazy(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    lazy = da.from_array(cat_crop(), chunks=(30, 40, 3))
    viewer.add_image(lazy, rgb=True, name="lazy")
    widget = open_widget(viewer)
    widget.n_colors_input.value = 4

    click_run_and_wait(qtbot, widget)

    labels, image = result_layers(viewer, "lazy")
    assert isinstance(labels.data, da.Array)
    assert isinstance(image.data, da.Array)
    expected = quantize(cat_crop(), 4)
    np.testing.assert_array_equal(np.asarray(labels.data), expected.labels + 1)


@pytest.mark.viewer
def test_rgba_layer_keeps_its_alpha(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rgba = np.dstack([cat_crop(), np.full(cat_crop().shape[:2], 200, np.uint8)])
    viewer.add_image(rgba, rgb=True, name="rgba")
    widget = open_widget(viewer)
    widget.n_colors_input.value = 4
    click_run_and_wait(qtbot, widget)
    labels, image = result_layers(viewer, "rgba")
    assert image.data.shape == rgba.shape
    np.testing.assert_array_equal(image.data[..., 3], rgba[..., 3])
    assert labels.data.shape == rgba.shape[:2]


@pytest.mark.parametrize(
    ("make_layer", "keywords", "message"),
    [
        pytest.param(lambda: None, {}, "no image layer", id="no-layer"),
        pytest.param(
            lambda: Labels(np.zeros((4, 4), np.uint8)), {}, "Image layers only", id="labels"
        ),
        pytest.param(lambda: Image(np.zeros((1, 1), np.uint8)), {}, "1 pixel", id="one-pixel"),
        pytest.param(lambda: Image(np.full((4, 4), np.nan)), {}, "only NaN", id="all-nan"),
        pytest.param(
            lambda: Image(np.zeros((4, 4), np.uint8)),
            {"color_space": "lab"},
            "needs an RGB layer",
            id="colour-space-on-grey",
        ),
    ],
)
def test_quantize_layer_refuses_bad_input_with_a_readable_error(make_layer, keywords, message):
    with pytest.raises((TypeError, ValueError), match=message):
        napari_kmeans_filter.quantize_layer(make_layer(), 4, **keywords)


def distinct_colors(screenshot: np.ndarray) -> np.ndarray:
    return np.unique(screenshot[..., :3].reshape(-1, 3), axis=0)


@pytest.mark.viewer
def test_screenshot_shows_at_most_k_colours(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    (cat,) = viewer.open_sample(PLUGIN_NAME, "cat")
    widget = open_widget(viewer)
    widget.n_colors_input.value = 5
    click_run_and_wait(qtbot, widget)
    labels, image = result_layers(viewer, "chelsea")
    palette = np.asarray(image.metadata["palette"]["colors"], dtype=int)
    background = np.zeros(3, int)

    for shown in (labels, image):
        for layer in viewer.layers:
            layer.visible = layer is shown
        viewer.reset_view()
        qtbot.wait(50)
        colors = distinct_colors(viewer.screenshot(canvas_only=True, flash=False)).astype(int)
        # What is on screen: the 5 palette colours (give or take rounding) and the
        # canvas background around the image.
        assert 5 <= len(colors) <= 5 + 1, colors  # (at least 5: not a black canvas)
        for color in colors:
            nearest = np.abs(palette - color).max(axis=1).min()
            assert nearest <= 1 or np.array_equal(color, background), color
    assert cat.visible is False


@pytest.mark.viewer
@pytest.mark.slow
def test_viewer_stays_responsive_during_a_12_megapixel_run(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    photo = np.tile(skimage.data.chelsea(), (10, 9, 1))[:3000, :4000]
    viewer.add_image(photo, rgb=True, name="12 MP")
    widget = open_widget(viewer)
    widget.n_colors_input.value = 16
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    work_done_at: list[float] = []
    widget._progress_relay.progressed.connect(
        lambda fraction, _message: (
            work_done_at.append(time.perf_counter()) if fraction >= 1 else None
        )
    )
    timer.start(20)

    started = time.perf_counter()
    click_run_and_wait(qtbot, widget)
    finished = time.perf_counter()
    timer.stop()

    work_done = work_done_at[0]
    assert work_done - started > 0.3  # the work really did take a while ...
    during_work = [t for t in ticks if started <= t <= work_done]
    work_gaps = np.diff([started, *during_work, work_done])
    # ... and the event loop kept ticking all along.
    assert work_gaps.max() < 0.25, f"event loop blocked for {work_gaps.max():.2f} s"
    # Adding and uploading the two 12 MP layers has to happen on the GUI thread; it is short.
    all_gaps = np.diff([started, *[t for t in ticks if started <= t <= finished], finished])
    assert all_gaps.max() < 1.0, f"adding the result layers blocked for {all_gaps.max():.2f} s"
    labels, _image = result_layers(viewer, "12 MP")
    assert labels.data.shape == photo.shape[:2]
    assert METADATA_KEY in labels.metadata


# --- regressions found in review ---------------------------------------------------------


@pytest.mark.viewer
def test_add_result_layers_refuses_a_result_of_another_shape_and_adds_nothing(
    make_napari_viewer,
):
    viewer = make_napari_viewer()
    cat = cat_crop()
    source = viewer.add_image(cat, rgb=True, name="cat")
    other = quantize(cat[::2, ::2], 4)
    with pytest.raises(ValueError, match="shape"):
        napari_kmeans_filter.add_result_layers(viewer, other, source)
    assert [layer.name for layer in viewer.layers] == ["cat"]


@pytest.mark.viewer
def test_a_single_result_for_a_multiscale_layer_is_refused(make_napari_viewer):
    viewer = make_napari_viewer()
    cat = cat_crop()
    source = viewer.add_image([cat, cat[::2, ::2]], rgb=True, multiscale=True, name="ms")
    with pytest.raises(ValueError, match="level"):
        napari_kmeans_filter.add_result_layers(viewer, quantize(cat, 4), source)
    assert [layer.name for layer in viewer.layers] == ["ms"]


@pytest.mark.viewer
def test_painted_clusters_survive_a_rerun(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    source = viewer.add_image(cat_crop(), rgb=True, name="cat")
    labels, _ = napari_kmeans_filter.add_result_layers(viewer, quantize(source.data, 4), source)
    labels.paint((5, 5), 1)  # the user paints a cluster by hand
    painted = np.asarray(labels.data).copy()
    new_labels, _ = napari_kmeans_filter.add_result_layers(
        viewer, quantize(source.data, 6), source
    )
    assert new_labels is not labels
    np.testing.assert_array_equal(np.asarray(labels.data), painted)
    assert any("edited" in message for _, message in notifications)


@pytest.mark.viewer
def test_result_is_dropped_when_the_source_was_removed_during_the_run(
    make_napari_viewer, qtbot, notifications
):
    viewer = make_napari_viewer()
    viewer.add_image(cat_crop(), rgb=True, name="gone")
    widget = open_widget(viewer)
    widget.run_button.native.click()
    viewer.layers.remove("gone")  # before the worker's result reaches the GUI thread
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    assert len(viewer.layers) == 0
    assert any("removed" in message for _, message in notifications)
