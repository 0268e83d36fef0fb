"""Shared fixtures: test images, napari notifications, and helpers for the dock in a real viewer.

Helpers are fixtures that return a function (pytest's "factory as fixture"), so test files
never import each other. Viewer tests get their viewer from napari's ``make_napari_viewer``
and pytest-qt's ``qtbot``; pytest-xvfb provides the display.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

PLUGIN_NAME = "napari-kmeans-filter"
WIDGET_NAME = "K-means color filter"
#: Longest wait for one run of the dock (the images in these tests are small).
RUN_TIMEOUT_MS = 60_000


def _cat_crop(rows: slice = slice(90, 150), cols: slice = slice(170, 250)) -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.chelsea()[rows, cols])


@pytest.fixture
def cat_crop():
    """``cat_crop(rows=..., cols=...)``: a small RGB crop of the cat (60 x 80 by default)."""
    return _cat_crop


@contextlib.contextmanager
def _collect_notifications():
    from napari.utils.notifications import notification_manager

    received: list[tuple[str, str]] = []

    def collect(notification):
        received.append((str(notification.severity), str(notification.message)))

    notification_manager.notification_ready.connect(collect)
    try:
        yield received
    finally:
        notification_manager.notification_ready.disconnect(collect)


@pytest.fixture
def collect_notifications():
    """``with collect_notifications() as received``: napari notifications shown meanwhile,
    as (severity, message) pairs."""
    return _collect_notifications


@pytest.fixture
def notifications():
    """Every napari notification shown during the test, as (severity, message) pairs."""
    with _collect_notifications() as received:
        yield received


@pytest.fixture
def open_widget():
    """``open_widget(viewer)``: the dock opened through napari's plugin menu; the widget."""

    def open_(viewer):
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
        return widget

    return open_


@pytest.fixture
def wait_until_idle(qtbot):
    """``wait_until_idle(widget)``: wait until the dock's run has ended."""

    def wait(widget, timeout: int = RUN_TIMEOUT_MS) -> None:
        qtbot.waitUntil(lambda: not widget.is_running, timeout=timeout)

    return wait


@pytest.fixture
def run_and_wait(wait_until_idle):
    """``run_and_wait(widget)``: press Run and wait until the run has ended."""

    def run(widget) -> None:
        widget.runs.run_button.native.click()
        wait_until_idle(widget)

    return run


@pytest.fixture
def result_layers():
    """``result_layers(viewer, source_name)``: the (clusters, image) result layers of a source."""
    from napari.layers import Image

    def find(viewer, source_name: str):
        (labels,) = [layer for layer in viewer.layers if layer.name == f"{source_name} clusters"]
        (image,) = [
            layer
            for layer in viewer.layers
            if isinstance(layer, Image) and layer.name.startswith(f"{source_name} k=")
        ]
        return labels, image

    return find


@pytest.fixture
def distinct_colors():
    """``distinct_colors(rgb)``: the distinct RGB colors of an image or screenshot."""

    def colors(screenshot: np.ndarray) -> np.ndarray:
        return np.unique(np.asarray(screenshot)[..., :3].reshape(-1, 3), axis=0)

    return colors


class Heartbeat:
    """A 10 ms QTimer on the GUI thread: the longest gap between its ticks is the longest
    time the event loop was blocked (the GUI frozen) while it ran."""

    def __init__(self, interval_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self):
        self.started = time.perf_counter()
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()
        self.stopped = time.perf_counter()

    def longest_gap(self, start: float | None = None, stop: float | None = None) -> float:
        start = self.started if start is None else start
        stop = self.stopped if stop is None else stop
        inside = [t for t in self.ticks if start <= t <= stop]
        return float(np.diff([start, *inside, stop]).max())


@pytest.fixture
def heartbeat():
    """``with heartbeat() as beat``: measures the longest GUI freeze (``beat.longest_gap()``)."""
    return Heartbeat


class GuiWork:
    """Where the GUI thread's time goes during a run: the dock's own slots, and napari
    inserting layers (``viewer.layers.append``, which the dock's slots call).

    ``ours()`` is the longest time one of the dock's slots held the GUI thread, napari's
    insertion of a layer inside it left out; ``inserts`` holds each insertion as
    (seconds, layer type). What napari then does on its own turns of the event loop
    (drawing the new layers) is in neither.
    """

    SLOTS = (
        ("_widget", "KMeansColourWidget", "run"),
        ("_task", "Task", "_on_returned"),
        ("_task", "Task", "_add_next"),
        ("_task", "Task", "_on_worker_finished"),
        ("_run_controller", "RunController", "_show_progress"),
    )

    def __init__(self, monkeypatch, viewer):
        import functools
        import importlib

        self.inserted: list[tuple[float, float, str]] = []
        self.slots: list[tuple[float, float, str]] = []
        self._depth = 0
        layers = viewer.layers
        append = layers.append

        def timed_append(layer):
            start = time.perf_counter()
            try:
                return append(layer)
            finally:
                self.inserted.append((start, time.perf_counter(), type(layer).__name__))

        monkeypatch.setattr(layers, "append", timed_append)
        for module, cls_name, name in self.SLOTS:
            package = importlib.import_module(f"napari_kmeans_filter._napari.{module}")
            cls = getattr(package, cls_name)
            original = getattr(cls, name)

            def timed(*args, _original=original, _name=name, **kwargs):
                self._depth += 1
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self._depth -= 1
                    if self._depth == 0:
                        self.slots.append((start, time.perf_counter(), _name))

            monkeypatch.setattr(cls, name, functools.wraps(original)(timed))

    def _napari_inside(self, start: float, stop: float) -> float:
        return sum(max(0.0, min(stop, b) - max(start, a)) for a, b, _ in self.inserted)

    def ours(self) -> float:
        """The longest time one of the dock's slots held the GUI thread, without napari's
        insertion of layers."""
        return max(
            (stop - start - self._napari_inside(start, stop) for start, stop, _ in self.slots),
            default=0.0,
        )

    @property
    def inserts(self) -> list[tuple[float, str]]:
        return [(stop - start, kind) for start, stop, kind in self.inserted]

    def report(self) -> str:
        napari = ", ".join(f"{kind} {1000 * seconds:.0f} ms" for seconds, kind in self.inserts)
        return f"longest of our slots {1000 * self.ours():.0f} ms; napari inserting: {napari}"


@pytest.fixture
def gui_work(monkeypatch):
    """``gui_work(viewer)``: a :class:`GuiWork` timing the dock's slots and napari's layer
    insertions from now on (make it before pressing Run)."""
    return lambda viewer: GuiWork(monkeypatch, viewer)


@pytest.fixture
def run_console_examples():
    """``run_console_examples(examples, viewer, source)``: run napari console examples one
    after the other in one namespace, as typed (napari's console defines ``viewer`` and
    ``napari``; every example sees what the ones before it left)."""

    def run(examples: list[tuple[int, str]], viewer, source: str) -> dict:
        import napari

        namespace = {"__name__": "__console__", "viewer": viewer, "napari": napari}
        for index, code in examples:
            exec(compile(code, f"{source} console example {index}", "exec"), namespace)
        return namespace

    return run
