"""The "K-means colour filter" dock widget.

The widget only gathers parameters, runs :mod:`napari_kmeans_filter._layers` (the same code
as ``quantize_layer`` in the console) on a worker thread and reports what happened.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from napari_kmeans_filter import COLOR_SPACES
from napari_kmeans_filter._layers import (
    LayerSource,
    add_result_layers,
    announce_result,
    describe_result,
    is_result_layer,
    quantize_source,
    read_layer_source,
)

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

#: The progress bar counts in thousandths so that small steps still move it.
PROGRESS_STEPS = 1000


class RunCancelled(Exception):
    """Raised inside the worker (from the progress callback) when the user pressed Cancel."""


@dataclass(frozen=True)
class _RunOutcome:
    """What the worker hands back: a result, a user-facing error, or a cancellation.

    The worker returns expected failures instead of raising them: napari turns a raised
    exception into an error notification with a traceback, which is right for bugs but not
    for "this layer has no colours".
    """

    result: Any = None
    error: str | None = None
    cancelled: bool = False


class _ProgressRelay(QObject):
    """Carries progress reports from the worker thread to the GUI thread.

    Emitting a Qt signal from another thread queues the call in the receiver's thread, so
    the widgets are only ever touched by the GUI thread.
    """

    progressed = Signal(float, str)


class KMeansColourWidget(Container):
    """Dock widget: quantise the colours of an image layer with k-means.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image layers are offered and where results are shown.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        # napari hands plugins a proxy of the viewer; layers taken from it are proxies too,
        # and proxies compare unequal to the real layers inside Qt models.
        self._viewer = getattr(viewer, "__wrapped__", viewer)
        self._worker: FunctionWorker | None = None
        self._cancel_requested = threading.Event()
        self._progress_relay = _ProgressRelay()
        self._progress_relay.progressed.connect(self._show_progress)

        self.image_choice = ComboBox(
            label="image", choices=self._image_layer_choices, nullable=False
        )
        self.n_colors_input = SpinBox(label="n colours", min=2, max=256, value=8)
        self.color_space_choice = ComboBox(
            label="colour space",
            choices=list(COLOR_SPACES),
            value="rgb",
            tooltip="How colour differences are measured (RGB layers only): lab and oklab "
            "follow how different colours look. Greyscale layers are clustered by intensity.",
        )
        self.seed_input = SpinBox(
            label="random seed",
            min=0,
            max=2**31 - 1,
            value=0,
            tooltip="The same seed gives the same palette.",
        )
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(label="progress", min=0, max=PROGRESS_STEPS, value=0)
        self.status_label = Label(label="result", value="")
        self.extend(
            [
                self.image_choice,
                self.n_colors_input,
                self.color_space_choice,
                self.seed_input,
                self.run_button,
                self.cancel_button,
                self.progress_bar,
                self.status_label,
            ]
        )

        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.image_choice.changed.connect(self._update_color_space_availability)
        layer_events = self._viewer.layers.events
        layer_events.inserted.connect(self._on_layers_changed)
        layer_events.removed.connect(self._on_layers_changed)
        layer_events.moved.connect(self._on_layers_changed)
        self._viewer.layers.selection.events.active.connect(self._follow_active_layer)
        for layer in self._viewer.layers:
            layer.events.name.connect(self._refresh_choices)
        self._refresh_choices()
        self._follow_active_layer()

    @property
    def is_running(self) -> bool:
        """Whether a quantisation is running (then Run is disabled and Cancel enabled)."""
        return self._worker is not None

    @property
    def worker(self) -> FunctionWorker | None:
        """The worker of the current run, or None when nothing runs."""
        return self._worker

    def run(self) -> FunctionWorker | None:
        """Quantise the chosen layer on a worker thread with the chosen parameters.

        Returns
        -------
        FunctionWorker or None
            The started worker, or None if nothing was started (a run is already going on,
            or the layer cannot be quantised: then an error notification says why).
        """
        if self._worker is not None:
            return None
        layer = self.image_choice.value
        try:
            source = read_layer_source(layer)
        except (TypeError, ValueError) as exc:
            show_error(str(exc))
            return None
        n_colors = int(self.n_colors_input.value)
        keywords = {
            "color_space": self.color_space_choice.value if source.rgb else "rgb",
            "random_state": int(self.seed_input.value),
        }
        self._cancel_requested.clear()
        worker = create_worker(
            _quantize_off_gui_thread,
            source,
            n_colors,
            keywords,
            self._cancel_requested,
            self._progress_relay,
            _start_thread=False,
        )
        worker.returned.connect(
            lambda outcome: self._on_returned(outcome, layer, source.name, n_colors)
        )
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._set_running(True)
        self.status_label.value = f"quantising {source.name!r} into {n_colors} colours…"
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running quantisation to stop; it adds no layer."""
        if self._worker is None:
            return
        self._cancel_requested.set()
        self.cancel_button.enabled = False
        self.status_label.value = "cancelling…"

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running
        self.progress_bar.value = 0

    def _show_progress(self, fraction: float, message: str) -> None:
        if self._worker is None:
            return
        self.progress_bar.value = round(min(max(fraction, 0.0), 1.0) * PROGRESS_STEPS)
        if message and not self._cancel_requested.is_set():
            self.status_label.value = message

    def _on_returned(
        self, outcome: _RunOutcome, layer: Image, layer_name: str, n_colors: int
    ) -> None:
        # A cancel that arrives after the last progress report still wins: nothing is added.
        if outcome.cancelled or self._cancel_requested.is_set():
            self.status_label.value = "cancelled"
            show_info(f"K-means colour filter: cancelled, {layer_name!r} left as it was.")
            return
        if outcome.error is not None:
            self.status_label.value = "failed"
            show_error(outcome.error)
            return
        if layer not in self._viewer.layers:
            self.status_label.value = "source removed"
            show_info(f"K-means colour filter: {layer_name!r} was removed; result dropped.")
            return
        try:
            add_result_layers(self._viewer, outcome.result, layer)
        except ValueError as error:  # the layer's data was replaced while the run went on
            self.status_label.value = "failed"
            show_error(f"K-means colour filter: {error}")
            return
        self.progress_bar.value = PROGRESS_STEPS
        self.status_label.value = describe_result(outcome.result)
        announce_result(outcome.result, n_colors, layer_name)

    def _on_finished(self) -> None:
        # Also reached after an unexpected exception, which napari reports by itself.
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if self.status_label.value.endswith("…"):
            self.status_label.value = "failed"

    def _image_layer_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and not is_result_layer(layer)
        ]

    def _refresh_choices(self, _event: Any = None) -> None:
        self.image_choice.reset_choices()
        self._update_color_space_availability()

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", None) == "inserted":
            event.value.events.name.connect(self._refresh_choices)
        self._refresh_choices()

    def _follow_active_layer(self, _event: Any = None) -> None:
        # Labels layers and our own results are not choices: selecting them keeps the
        # current source, so Run again updates that source's results.
        active = self._viewer.layers.selection.active
        if any(active is layer for _, layer in self._image_layer_choices()):
            self.image_choice.value = active

    def _update_color_space_availability(self, _value: Any = None) -> None:
        layer = self.image_choice.value
        is_rgb = layer is not None and bool(layer.rgb)
        self.color_space_choice.enabled = is_rgb


def _quantize_off_gui_thread(
    source: LayerSource,
    n_colors: int,
    keywords: dict[str, Any],
    cancel_requested: threading.Event,
    progress_relay: _ProgressRelay,
) -> _RunOutcome:
    """The worker's job: quantise, reporting progress and stopping when asked to."""

    def progress(fraction: float, message: str) -> None:
        if cancel_requested.is_set():
            raise RunCancelled
        progress_relay.progressed.emit(float(fraction), str(message))

    try:
        result = quantize_source(source, n_colors, progress=progress, **keywords)
    except RunCancelled:
        return _RunOutcome(cancelled=True)
    except (TypeError, ValueError, MemoryError) as exc:
        return _RunOutcome(error=f"K-means colour filter on {source.name!r} failed: {exc}")
    return _RunOutcome(result=result)
