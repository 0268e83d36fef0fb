"""A Run in the dock: results, re-runs, cancelling, progress and refusals (a real viewer)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import skimage.data
from qtpy.QtCore import Qt

import napari_kmeans_filter
from napari_kmeans_filter import quantize
from napari_kmeans_filter._napari._prepare import METADATA_KEY


@pytest.mark.viewer
def test_widget_quantizes_the_sample_cat_and_rerun_updates(
    make_napari_viewer, qtbot, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    (cat,) = viewer.open_sample("napari-kmeans-filter", "cat")
    cat.scale = (0.5, 0.25)
    cat.translate = (10.0, -3.0)
    original = cat.data.copy()
    widget = open_widget(viewer)
    assert widget.controls.image_layers.value == [cat]
    widget.controls.n_colors_input.value = 6
    widget.controls.seed_input.value = 3

    run_and_wait(widget)

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
    assert widget.runs.status_label.value == (
        f"{expected.n_input_colors} → 6 colors, PSNR {expected.psnr:.1f} dB"
    )
    np.testing.assert_array_equal(cat.data, original)

    widget.controls.n_colors_input.value = 3
    run_and_wait(widget)

    assert len(viewer.layers) == 3
    labels_again, image_again = result_layers(viewer, "chelsea")
    assert labels_again is labels and image_again is image
    assert image.name == "chelsea k=3"
    assert image.metadata["params"]["n_colors"] == 3
    assert int(labels.data.max()) == 3
    assert len(labels.metadata["palette"]["colors"]) == 3
    np.testing.assert_array_equal(cat.data, original)


def palette_rgba(colors, max_value=255) -> np.ndarray:
    rgb = np.asarray(colors, dtype=float) / max_value
    return np.column_stack([rgb, np.ones(len(rgb))])


@pytest.mark.viewer
def test_run_button_is_disabled_while_running_and_cancel_adds_nothing(
    make_napari_viewer, qtbot, notifications, open_widget, wait_until_idle
):
    viewer = make_napari_viewer()
    viewer.add_image(skimage.data.astronaut(), rgb=True, name="astronaut")
    widget = open_widget(viewer)
    widget.controls.n_colors_input.value = 32

    widget.runs.run_button.native.click()
    assert widget.is_running
    assert not widget.runs.run_button.enabled
    assert widget.runs.cancel_button.enabled
    assert widget.run() is None  # no second run on top of the first
    widget.runs.cancel_button.native.click()
    wait_until_idle(widget)

    assert [layer.name for layer in viewer.layers] == ["astronaut"]
    assert widget.runs.run_button.enabled
    assert not widget.runs.cancel_button.enabled
    assert widget.runs.status_label.value == "cancelled"
    assert widget.runs.progress_bar.value == 0  # not left where the run stopped
    assert any(s == "info" and "cancelled" in m for s, m in notifications)


@pytest.mark.viewer
def test_cancel_during_the_fit_stops_the_worker(
    make_napari_viewer, qtbot, open_widget, wait_until_idle
):
    viewer = make_napari_viewer()
    viewer.add_image(skimage.data.coffee(), rgb=True, name="coffee")
    widget = open_widget(viewer)
    widget.controls.n_colors_input.value = 32
    reports_from_worker = []

    def watch(task):
        def press_cancel_at_first_report(fraction, _message):
            # Runs in the worker thread (direct connection), so the timing is deterministic:
            # the very next progress report must raise and end the run.
            reports_from_worker.append(fraction)
            task.stop()

        task.progressed.connect(press_cancel_at_first_report, Qt.ConnectionType.DirectConnection)

    widget.runs.started.connect(watch)
    widget.runs.run_button.native.click()
    wait_until_idle(widget)

    # One report, then the progress callback raised RunCancelled and the core gave up.
    assert len(reports_from_worker) == 1 and reports_from_worker[0] < 1.0
    assert widget.runs.status_label.value == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["coffee"]
    assert widget.runs.run_button.enabled
    assert widget.runs.progress_bar.value == 0


@pytest.mark.viewer
def test_progress_bar_is_determinate_and_names_each_phase(
    make_napari_viewer, qtbot, cat_crop, open_widget, run_and_wait
):
    viewer = make_napari_viewer()
    viewer.add_image(cat_crop(), rgb=True, name="crop")
    widget = open_widget(viewer)
    reports = []
    widget.runs.started.connect(
        lambda task: task.progressed.connect(lambda fraction, msg: reports.append((fraction, msg)))
    )
    shown = []
    widget.status_changed.connect(shown.append)
    run_and_wait(widget)
    values = [fraction for fraction, _ in reports]
    assert values and all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values)
    assert widget.runs.progress_bar.value == widget.runs.progress_bar.max
    # The line under the bar names the phase that is running, in order: the core's own
    # phases, then the layer data being prepared on the worker, then the layers added.
    phases = list(dict.fromkeys(shown))
    assert phases[0].startswith("quantizing 'crop'")
    assert phases.index("preparing layers") < phases.index("adding layers…")
    assert phases[-1] == widget.runs.status_label.value
    assert widget.runs.status_label.value.endswith("dB")
    core_phases = {message for _, message in reports} - {"preparing layers"}
    assert core_phases and core_phases <= set(phases)
    # No "done" while layers are still to come: the bar is full only once they are there.
    assert all(v < 1.0 for v, m in reports)


@pytest.mark.viewer
@pytest.mark.parametrize(
    ("make_layer", "expected_text"),
    [
        pytest.param(None, "no image layer", id="no-image-layer"),
        pytest.param(
            lambda v: v.add_image(np.full((8, 8), np.nan, np.float32), name="nan"),
            "NaN",
            id="all-nan",
        ),
    ],
)
def test_bad_layers_notify_and_add_no_layers(
    make_napari_viewer,
    qtbot,
    notifications,
    make_layer,
    expected_text,
    open_widget,
    wait_until_idle,
):
    viewer = make_napari_viewer()
    if make_layer is None:
        viewer.add_labels(np.zeros((8, 8), np.uint8), name="only labels")
    else:
        make_layer(viewer)
    names_before = [layer.name for layer in viewer.layers]
    widget = open_widget(viewer)

    if make_layer is None:
        assert not widget.runs.run_button.enabled  # nothing to quantize
        widget.run()  # what a script calling the widget gets
    else:
        widget.runs.run_button.native.click()
    wait_until_idle(widget)

    assert [layer.name for layer in viewer.layers] == names_before
    errors = [message for severity, message in notifications if severity == "error"]
    assert errors, notifications
    assert expected_text.lower() in errors[-1].lower()
    assert widget.runs.run_button.enabled == (make_layer is not None)


@pytest.mark.viewer
def test_a_one_pixel_layer_gives_one_colour_as_the_api_does(
    make_napari_viewer, qtbot, notifications, open_widget, run_and_wait, result_layers
):
    """A 1 x 1 layer is an image (quantize() gives it one colour, the command line too):
    the dock's run adds its two layers, no error."""
    viewer = make_napari_viewer()
    viewer.add_image(np.full((1, 1, 3), (200, 30, 90), np.uint8), rgb=True, name="dot")
    widget = open_widget(viewer)

    run_and_wait(widget)

    labels, image = result_layers(viewer, "dot")
    np.testing.assert_array_equal(image.data, [[[200, 30, 90]]])
    np.testing.assert_array_equal(labels.data, [[1]])
    assert not [message for severity, message in notifications if severity == "error"]


@pytest.mark.viewer
def test_more_colours_than_the_image_has_uses_what_exists(
    make_napari_viewer, qtbot, notifications, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    four_colors = np.zeros((20, 30, 3), np.uint8)
    four_colors[:10, :15] = (255, 0, 0)
    four_colors[10:, :15] = (0, 255, 0)
    four_colors[:10, 15:] = (0, 0, 255)
    viewer.add_image(four_colors, rgb=True, name="flags")
    widget = open_widget(viewer)
    widget.controls.n_colors_input.value = 16

    run_and_wait(widget)

    labels, image = result_layers(viewer, "flags")
    assert image.name == "flags k=4"
    np.testing.assert_array_equal(image.data, four_colors)
    assert sorted(np.unique(labels.data)) == [1, 2, 3, 4]
    infos = [message for severity, message in notifications if severity == "info"]
    assert any("only 4 distinct" in message for message in infos), notifications
    assert widget.runs.status_label.value.startswith("4 → 4 colors")


@pytest.mark.viewer
def test_k_goes_up_to_the_api_maximum(
    make_napari_viewer, qtbot, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    # 64 x 80 = 5120 distinct colors, more than MAX_N_COLORS.
    ramp = np.zeros((64, 80, 3), np.uint8)
    ramp[..., 0] = np.arange(64)[:, None] * 4
    ramp[..., 1] = np.arange(80)[None, :] * 3
    viewer.add_image(ramp, rgb=True, name="ramp")
    widget = open_widget(viewer)
    assert widget.controls.n_colors_input.max == napari_kmeans_filter.MAX_N_COLORS
    widget.controls.n_colors_input.value = napari_kmeans_filter.MAX_N_COLORS
    assert widget.controls.n_colors_input.value == napari_kmeans_filter.MAX_N_COLORS
    run_and_wait(widget)
    labels, _ = result_layers(viewer, "ramp")
    assert labels.data.dtype == np.uint16
    n_colors = len(labels.metadata["palette"]["colors"])
    assert 256 < n_colors <= napari_kmeans_filter.MAX_N_COLORS
    assert int(labels.data.max()) == n_colors


@pytest.mark.viewer
@pytest.mark.slow
def test_viewer_stays_responsive_during_a_12_megapixel_run(
    make_napari_viewer, qtbot, open_widget, run_and_wait, result_layers, heartbeat, gui_work
):
    viewer = make_napari_viewer(show=True)
    photo = np.tile(skimage.data.chelsea(), (10, 9, 1))[:3000, :4000]
    viewer.add_image(photo, rgb=True, name="12 MP")
    widget = open_widget(viewer)
    widget.controls.n_colors_input.value = (
        256  # uint16 labels: napari compiles new kernels for them
    )
    qtbot.wait(100)
    phases: dict[str, tuple[float, float]] = {}
    widget.status_changed.connect(
        lambda text: phases.setdefault(text, (time.perf_counter(), time.thread_time()))
    )
    work = gui_work(viewer)

    with heartbeat() as heartbeat:
        run_and_wait(widget)
        qtbot.wait(50)

    adding_at, adding_cpu = phases["adding layers…"]
    _done_at, done_cpu = phases[widget.runs.status_label.value]
    assert adding_at - heartbeat.started > 0.3  # the work really did take a while ...
    # ... and the event loop kept ticking all along (the GUI stayed usable),
    work_freeze = heartbeat.longest_gap(stop=adding_at)
    # including while the two 12 MP layers were handed to napari on the GUI thread, which
    # builds their visuals there (the layers themselves were built on the worker).
    freeze = heartbeat.longest_gap()
    gui_cpu = done_cpu - adding_cpu  # independent of what else the machine is doing
    print(
        f"12 MP, k=256: longest GUI freeze {1000 * freeze:.0f} ms "
        f"(during the work {1000 * work_freeze:.0f} ms); GUI-thread CPU time adding the "
        f"layers {1000 * gui_cpu:.0f} ms; {work.report()}"
    )
    # Our own slots never hold the GUI thread long (QProgressBar.setValue repainted the
    # whole window at once, new 12 MP layers included: 73-128 ms at the end of the run).
    assert work.ours() < 0.1, work.report()
    assert work_freeze < 0.5, f"the GUI froze for {work_freeze:.2f} s during the work"
    assert gui_cpu < 1.2, f"adding the layers took {gui_cpu:.2f} s of GUI-thread time"
    assert freeze < 2.0, f"the GUI froze for {freeze:.2f} s"
    labels, _image = result_layers(viewer, "12 MP")
    assert labels.data.shape == photo.shape[:2]
    assert labels.data.dtype == np.uint16
    assert METADATA_KEY in labels.metadata


@pytest.mark.viewer
def test_closing_the_dock_cancels_its_run_and_adds_no_layers(make_napari_viewer, qtbot, cat_crop):
    viewer = make_napari_viewer()
    viewer.add_image(skimage.data.astronaut(), rgb=True, name="astronaut")
    dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-kmeans-filter", "K-means color filter"
    )
    widget.controls.n_colors_input.value = 32
    worker = widget.run()
    assert worker is not None
    finished = []
    worker.finished.connect(lambda: finished.append(True))

    dock.title.close_button.click()  # the dock's own close button

    assert widget.is_closed
    qtbot.waitUntil(lambda: bool(finished), timeout=60_000)
    qtbot.wait(100)
    assert [layer.name for layer in viewer.layers] == ["astronaut"]
    # The closed widget no longer follows the viewer.
    viewer.add_image(cat_crop(), rgb=True, name="later")


@pytest.mark.viewer
def test_result_is_dropped_when_the_source_was_removed_during_the_run(
    make_napari_viewer, qtbot, notifications, cat_crop, open_widget, wait_until_idle
):
    viewer = make_napari_viewer()
    viewer.add_image(cat_crop(), rgb=True, name="gone")
    widget = open_widget(viewer)
    widget.runs.run_button.native.click()
    viewer.layers.remove("gone")  # before the worker's result reaches the GUI thread
    wait_until_idle(widget)
    assert len(viewer.layers) == 0
    assert widget.runs.status_label.value == "'gone' was removed; result dropped"
    # No notification: the user removed it (or closed the viewer, whose layers go first).
    assert notifications == []


@pytest.mark.viewer
def test_crossing_k_255_in_a_rerun_freezes_the_gui_for_no_compile(
    make_napari_viewer, qtbot, open_widget, run_and_wait, result_layers, heartbeat
):
    """Issue 18 row 7: k = 250 → 256 → 250 changes the clusters' dtype (uint8 ↔ uint16).

    Re-running updates the clusters layer in place: its new data meets its old colormap
    for a moment, and napari mapped that pair (uint16 labels through a colormap of at most
    254 colors, uint8 labels through one of more) with a numba kernel it compiled on the
    GUI thread: 0.5-4 s frozen, each way.
    """
    import threading

    viewer = make_napari_viewer(show=True)
    viewer.add_image(skimage.data.astronaut()[:200, :200], rgb=True, name="astronaut")
    widget = open_widget(viewer)
    qtbot.waitUntil(
        lambda: not any(t.name.endswith("warm-up") for t in threading.enumerate()),
        timeout=120_000,
    )
    widget.controls.n_colors_input.value = 250
    run_and_wait(widget)
    freezes = []
    for k, dtype in ((256, np.uint16), (250, np.uint8)):
        widget.controls.n_colors_input.value = k
        with heartbeat() as beat:
            run_and_wait(widget)
            qtbot.wait(100)
        clusters, _image = result_layers(viewer, "astronaut")
        assert clusters.data.dtype == dtype and len(clusters.metadata["palette"]["colors"]) == k
        freezes.append(beat.longest_gap())
    print("k = 250 → 256 → 250: longest GUI freezes", [f"{1000 * f:.0f} ms" for f in freezes])
    assert max(freezes) < 0.3, freezes


@pytest.mark.viewer
def test_the_first_run_of_the_cat_holds_the_gui_briefly(
    make_napari_viewer, qtbot, open_widget, run_and_wait, heartbeat, gui_work
):
    """Issue 18 row 7: the first Run of the cat, once the dock's warm-up has ended.

    The warm-up pays napari's first-use costs of a result's layers in the background (its
    colormap kernels for both labels dtypes, the features table's pandas import); what is
    left on the GUI thread is napari inserting and drawing the two layers, reported apart.
    Run alone (``pytest -s tests/test_widget_run.py -k first_run``) this is the process's
    first Run.
    """
    import threading

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-kmeans-filter", "cat")
    widget = open_widget(viewer)
    qtbot.waitUntil(
        lambda: not any(t.name.endswith("warm-up") for t in threading.enumerate()),
        timeout=120_000,
    )
    qtbot.wait(100)
    phases: dict[str, float] = {}
    widget.status_changed.connect(lambda text: phases.setdefault(text, time.perf_counter()))
    work = gui_work(viewer)

    with heartbeat() as beat:
        run_and_wait(widget)
        qtbot.wait(100)

    preparing = phases["adding layers…"] - phases["preparing layers"]
    print(
        f"first Run of the cat, k = 8: {work.report()}; longest GUI freeze "
        f"{1000 * beat.longest_gap():.0f} ms (napari's inserting and drawing included); "
        f"'preparing layers' {1000 * preparing:.0f} ms on the worker"
    )
    assert [kind for _, kind in work.inserts] == ["Image", "Labels"]
    assert work.ours() < 0.1, work.report()


@pytest.mark.viewer
def test_a_phase_that_reports_nothing_for_seconds_says_how_long_it_has_run(
    make_napari_viewer, qtbot, cat_crop, open_widget, run_and_wait, monkeypatch
):
    """Issue 18 row 7: auto k at 60 dB fits thousands of colors, seconds without a report
    (the bar stood at ~65 % for 6.6 s); the status line then counts the phase's seconds."""
    from napari_kmeans_filter._napari import _run

    original = _run.quantize_source

    def slow_fit(source, n_colors, *, progress=None, **kwargs):
        if progress is not None:  # a Run (the dock's warm-up passes no progress)
            progress(0.5, "finding the fewest colors")
            time.sleep(3.3)  # one long fit, no report
        return original(source, n_colors, progress=progress, **kwargs)

    monkeypatch.setattr(_run, "quantize_source", slow_fit)
    viewer = make_napari_viewer()
    viewer.add_image(cat_crop(), rgb=True, name="crop")
    widget = open_widget(viewer)
    shown = []
    widget.status_changed.connect(shown.append)

    run_and_wait(widget)

    counted = [text for text in shown if text.startswith("finding the fewest colors (")]
    assert counted and counted[0] in {
        "finding the fewest colors (2 s)",
        "finding the fewest colors (3 s)",
    }, shown
    assert widget.runs.status_label.value.endswith("dB")  # the count goes with the run
