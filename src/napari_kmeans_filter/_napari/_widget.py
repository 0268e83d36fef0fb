"""The "K-means color filter" dock widget: its pieces put together and connected to the viewer.

The pieces, one per file: the settings (:mod:`._controls`), the live preview
(:mod:`._preview`), the plot of the error against k (:mod:`._kplot`), Run/Cancel with the
progress and status (:mod:`._run_controller`) and the palette panel (:mod:`._palette_panel`);
a run or preview is a :class:`~._task.Task` that ends
one way whatever ends it. The dock follows the viewer's layers: a removed source ends its run
and its preview, the palette panel shows a result only while its layers exist, and closing the
dock or the viewer ends every task before any widget goes away. It holds no algorithm: the
core does the work, the layer modules (:mod:`._read`, :mod:`._run`, :mod:`._prepare`,
:mod:`._show`) translate.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, QSize, Qt, Signal
from qtpy.QtWidgets import (
    QDockWidget,
    QFrame,
    QMainWindow,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_kmeans_filter import Palette, _jit
from napari_kmeans_filter._warmup import warm_up

from ._console import describe_result
from ._controls import Controls, user_message
from ._kplot import KPlot, preload_matplotlib
from ._palette_panel import PalettePanel
from ._preview import Preview
from ._run import warm_up_layers
from ._run_controller import RunController, shorten
from ._task import CLOSED, DONE, SOURCE_REMOVED, Ending

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from ._prepare import PreparedResult
    from ._run import Job
    from ._run_controller import RunController as _Runs


class KMeansColourWidget(QWidget):
    """Dock widget: quantize the colors of image layers with k-means.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image layers are offered and where results are shown.
    """

    #: Emitted with every new text of the status line (the phase, then the result).
    status_changed = Signal(str)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        # napari hands plugins a proxy of the viewer; layers taken from it are proxies too,
        # and proxies compare unequal to the real layers inside Qt models.
        self._viewer = getattr(viewer, "__wrapped__", viewer)
        self._closed = False
        self._docked = False
        self._watched: list[QWidget] = []  # the dock's ancestors (up to the viewer's window)
        self._window_closing = False
        #: The layers whose palette the panel shows, and their source layers.
        self._panel_layers: list[Any] = []
        self._told_no_clusters = False
        self._panel_is_preview = False
        #: The last Run's result (prepared, job, layers), shown again after a preview.
        self._last_run: tuple[PreparedResult, Job, list[Any]] | None = None

        self.controls = Controls(self._viewer)
        self.runs = RunController(self._viewer)
        self.preview = Preview(self._viewer, self.controls, lambda: self.is_running, self)
        self.kplot = KPlot(self._viewer, self.controls, lambda: self.is_running, self)
        self.palette_panel = PalettePanel(self._viewer)
        # The last resort if the dock is deleted without being closed first: its tasks are
        # dropped without a word (no widget is left to tell).
        self.destroyed.connect(partial(_abandon_tasks, self.runs, self.preview, self.kplot))
        self._lay_out()
        self._connect()
        self.controls.refresh_choices()
        self.controls.follow_layer_selection()
        self._update_enabled()
        # Load numba and the compiled kernels while the user looks at the dock, so the
        # first Run or preview does not pay for them (~1 s from numba's cache; the very
        # first time after installing, the kernels are compiled: several seconds), and
        # napari's own kernels for the clusters layer's colors (see warm_up_layers).
        # The very first time (an empty numba cache) that takes seconds: say so, once.
        _watch_first_compile()
        _load_napari_units()
        threading.Thread(
            target=_warm_up_all, name="napari-kmeans-filter warm-up", daemon=True
        ).start()

    def _lay_out(self) -> None:
        inner = QWidget()
        column = QVBoxLayout(inner)
        column.addWidget(self.controls)
        column.addWidget(self.preview.check.native)
        column.addWidget(self.kplot)
        column.addWidget(self.runs)
        column.addWidget(self.palette_panel)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

    def sizeHint(self) -> QSize:
        # Wide enough for every control and for the dock's whole title; the content never
        # asks for more (long names are shortened), so the dock keeps this width.
        hint = QSize(340, 640)
        dock = self.parentWidget()
        title_bar = dock.titleBarWidget() if isinstance(dock, QDockWidget) else None
        if title_bar is not None and title_bar.layout() is not None:
            hint.setWidth(max(hint.width(), title_bar.layout().sizeHint().width()))
        return hint

    def _connect(self) -> None:
        self.runs.run_button.changed.connect(self.run)
        self.runs.status_changed.connect(self.status_changed)
        self.runs.ended.connect(self._on_run_ended)
        self.preview.shown.connect(self._on_preview_shown)
        self.preview.cleared.connect(self._on_preview_cleared)
        self.preview.failed.connect(self.runs.set_status)
        self.controls.inputs_changed.connect(self._on_inputs_changed)
        self.controls.settings_changed.connect(self.preview.schedule)
        self.controls.settings_changed.connect(self.kplot.schedule)
        self.palette_panel.label_selected.connect(self._select_label)
        self.palette_panel.fixed_color_chosen.connect(self.controls.add_fixed_color)
        self.palette_panel.palette_chosen.connect(self.apply_palette)

        layer_events = self._viewer.layers.events
        layer_events.inserted.connect(self._on_layers_changed)
        layer_events.removed.connect(self._on_layers_changed)
        layer_events.moved.connect(self._on_layers_changed)
        self._viewer.layers.selection.events.changed.connect(self._follow_layer_selection)
        self._viewer.dims.events.current_step.connect(self._on_dims_changed)
        self._viewer.dims.events.ndisplay.connect(self._on_displayed_changed)
        self._viewer.dims.events.order.connect(self._on_displayed_changed)
        for layer in self._viewer.layers:
            layer.events.name.connect(self._refresh_choices)
            layer.events.data.connect(self._on_layer_data)

    def _disconnect(self) -> None:
        layer_events = self._viewer.layers.events
        for emitter in (layer_events.inserted, layer_events.removed, layer_events.moved):
            emitter.disconnect(self._on_layers_changed)
        self._viewer.layers.selection.events.changed.disconnect(self._follow_layer_selection)
        self._viewer.dims.events.current_step.disconnect(self._on_dims_changed)
        self._viewer.dims.events.ndisplay.disconnect(self._on_displayed_changed)
        self._viewer.dims.events.order.disconnect(self._on_displayed_changed)
        for layer in self._viewer.layers:
            layer.events.name.disconnect(self._refresh_choices)
            layer.events.data.disconnect(self._on_layer_data)

    # ----------------------------------------------------------------------------------
    # Closing the dock
    # ----------------------------------------------------------------------------------

    def event(self, event: QEvent) -> bool:
        # napari takes a closed plugin dock's widget out with setParent(None): that is the
        # moment to stop, so a run of a closed dock adds no layers afterwards.
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
                self._watch_ancestors()
            elif self._docked:
                self.shut_down()
        return super().event(event)

    def _watch_ancestors(self) -> None:
        # The viewer's window is found up the parent chain; the chain grows after docking
        # (the dock widget is put in the window later), so every ancestor is watched for
        # its own parent change.
        for widget in self._watched:
            widget.removeEventFilter(self)
        self._watched = []
        widget = self.parentWidget()
        while widget is not None:
            widget.installEventFilter(self)
            self._watched.append(widget)
            widget = widget.parentWidget()

    def eventFilter(self, watched: Any, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.ParentChange:
            self._watch_ancestors()
        elif isinstance(watched, QMainWindow):
            # The viewer's window closing: napari's viewer.close() closes it from code
            # (always accepted); its close button asks first, and a close that was accepted
            # hides the window. Either way every task ends before the widgets are deleted.
            if kind == QEvent.Type.Close and not event.spontaneous():
                self.shut_down()
            elif kind == QEvent.Type.Close:
                self._window_closing = True
            elif kind == QEvent.Type.Hide and self._window_closing:
                self.shut_down()
            elif kind == QEvent.Type.Show:
                self._window_closing = False
        return False

    def shut_down(self) -> None:
        """End any run or preview and stop following the viewer (the dock or viewer closed)."""
        if self._closed:
            return
        self._closed = True
        for widget in self._watched:
            widget.removeEventFilter(self)
        self._watched = []
        self.preview.stop()
        self.kplot.stop()
        self.runs.stop(CLOSED)
        self._disconnect()

    @property
    def is_closed(self) -> bool:
        return self._closed

    # ----------------------------------------------------------------------------------
    # Running
    # ----------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether a run is going on (then Run is disabled and Cancel enabled)."""
        return self.runs.is_running

    @property
    def is_previewing(self) -> bool:
        """Whether a preview is waiting or being computed."""
        return self.preview.is_busy

    @property
    def worker(self) -> FunctionWorker | None:
        """The worker of the current run, or None when nothing runs."""
        return self.runs.worker

    def run(self) -> FunctionWorker | None:
        """Quantize the selected layer(s) on a worker thread with the chosen settings.

        Returns
        -------
        FunctionWorker or None
            The started worker, or None if nothing was started (a run is already going on,
            or the input is not usable: then an error notification says why).
        """
        return self._start(None, "")

    def apply_palette(self, palette: Palette, palette_name: str = "palette") -> Any:
        """Repaint the selected image layer(s) with ``palette`` on a worker thread.

        Parameters
        ----------
        palette : Palette
            The colors to use (nearest color in ``palette.color_space``; no fit).
        palette_name : str
            Where the palette came from (a layer's or a file's name): names the result
            layers ("<source> k=<k> (palette from <palette_name>)").

        Returns
        -------
        FunctionWorker or None
            As :meth:`run`.
        """
        return self._start(palette, palette_name)

    def apply_palette_file(self, path: str | Path) -> Any:
        """Read a palette JSON (as written by Export or the CLI's --palette) and apply it."""
        if not self.palette_panel.load_palette_file(path):
            return None
        return self.runs.worker

    def export_palette(self, path: str | Path) -> Path:
        """Write the palette shown in the panel as JSON (the CLI's ``--palette`` format)."""
        return self.palette_panel.export_palette(path)

    def cancel(self) -> None:
        """Ask the running quantization to stop; it adds no layer."""
        self.runs.cancel()

    def _start(self, palette: Palette | None, origin: str) -> FunctionWorker | None:
        if self.is_running or self._closed:
            return None
        try:
            job = self.controls.make_job(preview=False, palette=palette, palette_origin=origin)
        except (TypeError, ValueError) as exc:
            show_error(f"K-means color filter: {user_message(exc)}")
            # As a run that fails: the bar and status line must not keep the last success.
            self.runs.show_refused()
            return None
        self.preview.run_started()  # a running preview stops and is dropped
        self.kplot.run_started()  # so does a curve being measured
        name = shorten(job.source.name)
        if palette is None:
            message = f"quantizing {name!r}…"
        else:
            message = f"repainting {name!r} with the palette of {shorten(origin)!r}…"
        worker = self.runs.start(job, message)
        self._update_enabled()
        return worker

    def _on_run_ended(self, ending: Ending) -> None:
        self._update_enabled()
        if ending.kind == DONE:
            self._last_run = (ending.prepared, ending.job, list(ending.added))
            self._show_palette(ending.prepared, ending.job, ending.added)
            if ending.job.n_colors == "auto":
                self.controls.show_k(ending.prepared.n_colors)
        self.preview.run_ended(ending)
        self.kplot.run_ended()  # a curve asked for meanwhile; the mark moves to auto's k

    # ----------------------------------------------------------------------------------
    # Preview and palette panel
    # ----------------------------------------------------------------------------------

    def _on_preview_shown(self, prepared: PreparedResult, job: Job) -> None:
        self.runs.set_status("preview: " + describe_result(prepared.result))
        self._show_palette(prepared, job, self.preview.layers)

    def _on_preview_cleared(self) -> None:
        # The preview's layers are gone: so are its palette and its status line.
        if self._panel_is_preview:
            self._panel_result_gone()

    def _panel_result_gone(self) -> None:
        """The panel's result layers are gone: the last Run's result comes back if its
        layers are still in the viewer (after a preview), else the panel is empty."""
        self._clear_panel()
        if self._last_run is not None:
            prepared, job, layers = self._last_run
            if layers and all(layer in self._viewer.layers for layer in layers):
                self.runs.set_status(describe_result(prepared.result))
                self._show_palette(prepared, job, layers)

    def _show_palette(self, prepared: PreparedResult, job: Job, layers: list[Any]) -> None:
        kind = "preview of " if job.preview else ""
        title = f"{kind}{shorten(job.source.name)}: {prepared.n_colors} colors"
        self.palette_panel.show_palette(prepared.palette, prepared.swatches, title)
        self._panel_layers = list(layers)
        self._panel_is_preview = job.preview
        self._told_no_clusters = False
        self._update_enabled()

    def _clear_panel(self) -> None:
        """The panel's result is gone: show nothing, and no status of it."""
        self.palette_panel.clear()
        self._panel_layers = []
        self._panel_is_preview = False
        if not self.is_running:
            self.runs.set_status("")
        self._update_enabled()

    def _select_label(self, label: int) -> None:
        # The clusters layer of the result the panel shows, never an older one of the same
        # source (a Run with outputs "image" leaves the last clusters layer as it was; its
        # labels are another palette's).
        clusters = next(
            (
                layer
                for layer in self._panel_layers
                if isinstance(layer, Labels) and layer in self._viewer.layers
            ),
            None,
        )
        if clusters is None:
            # Said once per result shown: a click also moves the current swatch (two
            # signals), and each arrow key selects again.
            if not self._told_no_clusters:
                self._told_no_clusters = True
                show_info(
                    "K-means color filter: this result has no clusters layer (a preview, or "
                    "outputs without clusters) to select a label in."
                )
            return
        clusters.selected_label = label

    # ----------------------------------------------------------------------------------
    # Following the viewer
    # ----------------------------------------------------------------------------------

    def _refresh_choices(self, _event: Any = None) -> None:
        if self._closed:
            return
        self.controls.refresh_choices()
        self.palette_panel.refresh_choices()
        self._update_enabled()

    def _on_layers_changed(self, event: Any = None) -> None:
        kind = getattr(event, "type", None)
        if kind == "inserted":
            event.value.events.name.connect(self._refresh_choices)
            event.value.events.data.connect(self._on_layer_data)
        elif kind == "removed":
            self._on_layer_removed()
        self._refresh_choices()

    def _on_layer_removed(self) -> None:
        layers = self._viewer.layers
        task = self.runs.task
        if task is not None and any(layer not in layers for layer in task.job.layers):
            self.runs.stop(SOURCE_REMOVED)
        self.preview.sources_removed()
        if self._panel_layers and not any(layer in layers for layer in self._panel_layers):
            self._panel_result_gone()

    def _follow_layer_selection(self, _event: Any = None) -> None:
        if self._closed:
            return
        self.controls.follow_layer_selection()

    def _on_inputs_changed(self) -> None:
        self._update_enabled()
        self.preview.schedule()
        self.kplot.schedule()

    def _on_layer_data(self, event: Any = None) -> None:
        # An input's data replaced (or edited): its preview and its k plot are out of date.
        if not self._closed and getattr(event, "source", None) in self.controls.layers:
            self.preview.schedule()
            self.kplot.schedule()

    def _on_dims_changed(self, _event: Any = None) -> None:
        layers = self.controls.layers
        if not layers:
            return
        # Only a stack's preview depends on the slice shown.
        ndim = max(layer.ndim for layer in layers)
        if ndim > len(self._viewer.dims.displayed):
            self.preview.schedule()
            self.kplot.schedule()

    def _on_displayed_changed(self, _event: Any = None) -> None:
        # 2-D <-> 3-D view, or other axes on screen: a stack's slice is another one (in 3-D
        # the displayed volume, as a "current slice" Run takes it), so is its preview.
        layers = self.controls.layers
        if layers and max(layer.ndim for layer in layers) > 2:
            self.preview.schedule()
            self.kplot.schedule()

    def _update_enabled(self) -> None:
        ready = bool(self.controls.layers) and not self.is_running
        self.runs.set_input_ready(ready)
        self.palette_panel.set_input_ready(ready)
        self.controls.update_enabled()


class _CompileNote(QObject):
    """Carries numba's "compiling" news from its timer thread to the GUI thread. One per
    process, parented to the application: a dock may be closed before the news comes."""

    compiling = Signal()


_compile_note: _CompileNote | None = None


def _watch_first_compile() -> None:
    """On the GUI thread, once per process: say "compiling (first run only)" when the
    kernels compile for over a second (an empty numba cache)."""
    global _compile_note
    if _compile_note is not None:
        return
    from qtpy.QtWidgets import QApplication

    _compile_note = _CompileNote(QApplication.instance())
    _compile_note.compiling.connect(_say_compiling)  # queued: emitted from another thread
    _jit.on_slow_compile("widget", _compile_note.compiling.emit)


def _say_compiling() -> None:
    """On the GUI thread: napari's notification, once per session."""
    show_info("napari-kmeans-filter: compiling (first run only)")


def _load_napari_units() -> None:
    """Load napari's units (pint's application registry) on the GUI thread.

    pint loads its registry on first use, and not thread-safely: a second thread using it
    meanwhile finds no units ("'pixel' is not defined in the unit registry"). The warm-up
    builds napari layers on its own thread, which must not be the first use while the
    user adds a first layer on the GUI thread (a script that opens the dock, then adds an
    image, hit it in 1-6 of 6 runs). Free once napari has made a layer; else about 0.3 s,
    once per session, which the first layer would pay anyway.
    """
    import pint

    pint.get_application_registry().pixel  # noqa: B018 (the access loads the registry)


def _warm_up_all() -> None:
    """Each warm-up in turn, on a background thread: one that fails (an optional speed-up)
    costs only its own saving, logged, never an error in the user's session."""
    for step in (warm_up, warm_up_layers, preload_matplotlib):
        try:
            step()
        except Exception:
            logging.getLogger(__name__).info("warm-up step %s failed", step.__name__, exc_info=True)


def _abandon_tasks(runs: _Runs, preview: Preview, kplot: KPlot, *_args: Any) -> None:
    """Drop the tasks of a dock deleted without being closed (nothing may reach it now)."""
    for task in (runs.task, preview.task):
        if task is not None:
            task.abandon()
    kplot.abandon()
