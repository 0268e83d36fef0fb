"""The palette panel: the swatches of the result shown, and what can be done with its palette.

Swatches in label order with each color's share of the pixels; selecting one selects its
label in the clusters layer. Export writes the palette file the command line reads
(:mod:`napari_kmeans_filter._palette_files`); 'fix color' hands a swatch's color to the
fixed colors; 'Load…' and 'apply from' repaint the input with another palette.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, PushButton
from napari.layers import Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_kmeans_filter import Palette
from napari_kmeans_filter._io import atomic_output
from napari_kmeans_filter._palette_files import PaletteFileError, palette_json, read_palette

from ._prepare import METADATA_KEY
from ._show import is_result_layer, result_palette

if TYPE_CHECKING:
    import napari

NO_RESULT = "no result yet"


def format_value(value: Any) -> str:
    """A palette value as the fixed-colors field reads it back."""
    return f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)


class PalettePanel(QWidget):
    """Swatches of a palette in label order, each with its share of the pixels.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Whose result layers 'apply from' offers.
    """

    #: A swatch was chosen: the 1-based label of its color.
    label_selected = Signal(int)
    #: 'fix color' was pressed: the chosen swatch's color as text for the fixed colors.
    fixed_color_chosen = Signal(str)
    #: A palette to repaint the input with, and where it came from (a layer or file name).
    palette_chosen = Signal(object, str)

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self.palette: Palette | None = None
        self._input_ready = False
        self.shares = np.zeros(0)
        self.title = QLabel(NO_RESULT)
        self.title.setWordWrap(True)
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.swatches = QListWidget()
        self.swatches.setViewMode(QListView.ViewMode.IconMode)
        self.swatches.setFlow(QListView.Flow.LeftToRight)
        self.swatches.setWrapping(True)
        self.swatches.setResizeMode(QListView.ResizeMode.Adjust)
        self.swatches.setMovement(QListView.Movement.Static)
        self.swatches.setUniformItemSizes(True)
        self.swatches.setIconSize(QSize(24, 24))
        # Wide enough for "100.0%" under every swatch.
        width = self.swatches.fontMetrics().horizontalAdvance("100.0%") + 10
        self.swatches.setGridSize(QSize(max(50, width), 44))
        self.swatches.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.swatches.setSpacing(0)
        self.swatches.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.swatches.setFixedHeight(3 * 44 + 8)
        self.swatches.setToolTip(
            "The palette in label order (label 1 first), with each color's share of the "
            "pixels. Click a color to select its label in the clusters layer."
        )
        self.export_button = PushButton(
            text="Export…",
            enabled=False,
            tooltip="Save the palette shown as JSON (the command line's --palette format; "
            "--apply-palette and 'Load…' read it).",
        )
        self.fix_color_button = PushButton(
            text="fix color",
            enabled=False,
            tooltip="Add the selected swatch's color to the fixed colors.",
        )
        self.load_button = PushButton(
            text="Load…",
            tooltip="Repaint the selected image layer(s) with a palette JSON file.",
        )
        self.palette_source_choice = ComboBox(
            choices=self._palette_layer_choices,
            nullable=True,
            tooltip="A result layer whose palette to apply to the selected image layer(s).",
        )
        self.palette_source_choice.native.setSizeAdjustPolicy(
            self.palette_source_choice.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.palette_source_choice.native.setMinimumContentsLength(8)
        self.apply_button = PushButton(
            text="Apply",
            tooltip="Repaint the selected image layer(s) with the palette of the chosen "
            "result layer (nearest color, no new fit).",
        )
        self._lay_out()
        # The current swatch, however it became current (a click, the arrow keys), is the
        # selected label: "fix color" and the clusters layer never disagree.
        self.swatches.currentItemChanged.connect(self._on_current_changed)
        self.swatches.itemClicked.connect(self._on_item_clicked)
        self.swatches.itemSelectionChanged.connect(self._update_buttons)
        self.export_button.changed.connect(self._ask_export)
        self.fix_color_button.changed.connect(self._fix_selected)
        self.load_button.changed.connect(self._ask_load)
        self.apply_button.changed.connect(self._apply_chosen_layer)
        self.palette_source_choice.changed.connect(self._update_buttons)

    def _lay_out(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Palette</b>"))
        layout.addWidget(self.title)
        layout.addWidget(self.swatches)
        buttons = QHBoxLayout()
        for button in (self.export_button, self.fix_color_button, self.load_button):
            buttons.addWidget(button.native)
        layout.addLayout(buttons)
        apply_line = QHBoxLayout()
        label = QLabel("apply from")
        label.setToolTip(self.palette_source_choice.tooltip)
        apply_line.addWidget(label)
        apply_line.addWidget(self.palette_source_choice.native, 1)
        apply_line.addWidget(self.apply_button.native)
        layout.addLayout(apply_line)

    # ----------------------------------------------------------------------------------
    # Showing a palette
    # ----------------------------------------------------------------------------------

    def show_palette(self, palette: Palette, swatches: np.ndarray, title: str) -> None:
        """Show ``palette`` with the display colors ``swatches`` (RGBA in [0, 1])."""
        self.palette = palette
        counts = np.asarray(palette.counts, dtype=float)
        self.shares = counts / counts.sum() if counts.sum() > 0 else counts
        self.title.setText(title)
        self.title.setToolTip(title)
        # Filling the list must not select a label in the clusters layer.
        self.swatches.blockSignals(True)
        self.swatches.clear()
        self.swatches.setUpdatesEnabled(False)
        for index, (rgba, share) in enumerate(zip(swatches, self.shares, strict=True)):
            pixmap = QPixmap(24, 24)
            pixmap.fill(QColor.fromRgbF(*(float(c) for c in rgba[:3])))
            icon = QIcon(pixmap)
            # Selected, Qt would tint the swatch with the highlight colour: the colour
            # about to be selected or fixed must stay as it is (the highlight is behind it).
            icon.addPixmap(pixmap, QIcon.Mode.Selected)
            item = QListWidgetItem(icon, f"{100 * share:.1f}%")
            values = ", ".join(format_value(v) for v in palette.colors[index])
            item.setToolTip(
                f"label {index + 1}: ({values}), {100 * share:.2f} % of the pixels "
                f"({int(palette.counts[index])})"
            )
            item.setData(Qt.ItemDataRole.UserRole, index + 1)
            self.swatches.addItem(item)
        self.swatches.setUpdatesEnabled(True)
        self.swatches.blockSignals(False)
        self.palette_source_choice.reset_choices()
        self._update_buttons()

    def clear(self) -> None:
        """Show no palette (its result layers are gone, or the preview was turned off)."""
        self.palette = None
        self.shares = np.zeros(0)
        self.swatches.clear()
        self.title.setText(NO_RESULT)
        self.title.setToolTip("")
        self._update_buttons()

    def click_label(self, label: int) -> None:
        """Act as if the swatch of ``label`` (1-based) were clicked."""
        item = self.swatches.item(label - 1)
        self.swatches.setCurrentItem(item)
        self._on_item_clicked(item)

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.label_selected.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def _on_current_changed(self, item: QListWidgetItem | None, _previous: Any = None) -> None:
        if item is not None:
            item.setSelected(True)
            self._on_item_clicked(item)

    # ----------------------------------------------------------------------------------
    # Buttons
    # ----------------------------------------------------------------------------------

    def set_input_ready(self, ready: bool) -> None:
        """Whether Load… and Apply may repaint the input now (an input, no run going on)."""
        self._input_ready = ready
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.load_button.enabled = self._input_ready
        chosen = self.palette_source_choice.value is not None
        self.apply_button.enabled = self._input_ready and chosen
        self.export_button.enabled = self.palette is not None
        self.fix_color_button.enabled = bool(self.swatches.selectedItems())

    def refresh_choices(self) -> None:
        self.palette_source_choice.reset_choices()
        self._update_buttons()

    def _palette_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        choices, groups = [], set()
        # Clusters layers first, so each result is offered once, by its clusters if any.
        ordered = sorted(self._viewer.layers, key=lambda layer: not isinstance(layer, Labels))
        for layer in ordered:
            info = layer.metadata.get(METADATA_KEY) if is_result_layer(layer) else None
            if info is None or info.get("preview") or "palette" not in layer.metadata:
                continue
            if info.get("source_id") in groups:
                continue
            groups.add(info.get("source_id"))
            choices.append((layer.name, layer))
        return choices

    def export_palette(self, path: str | Path) -> Path:
        """Write the palette shown as JSON (the command line's ``--palette`` format).

        Raises
        ------
        ValueError
            If no palette is shown.
        """
        palette = self.palette
        if palette is None:
            raise ValueError("There is no palette to export yet: press Run first.")
        path = Path(path)
        # The file dialog has asked before replacing a file; never leave half a file.
        with atomic_output(path, overwrite=True) as temporary:
            temporary.write_text(palette_json(palette), encoding="utf-8")
        return path

    def _ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export palette", "palette.json", "Palette JSON (*.json)"
        )
        if path:
            try:
                self.export_palette(path)
            except (OSError, ValueError) as exc:
                show_error(f"K-means color filter: could not export the palette: {exc}")

    def load_palette_file(self, path: str | Path) -> bool:
        """Read a palette JSON and ask for it to be applied; False (and an error) if unreadable."""
        try:
            palette = read_palette(path)
        except PaletteFileError as exc:
            show_error(f"K-means color filter: {exc}")
            return False
        self.palette_chosen.emit(palette, Path(path).name)
        return True

    def _ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Apply palette", "", "Palette JSON (*.json)")
        if path:
            self.load_palette_file(path)

    def _apply_chosen_layer(self) -> None:
        layer = self.palette_source_choice.value
        palette = result_palette(layer) if layer is not None else None
        if palette is None:
            show_error("K-means color filter: choose a result layer whose palette to apply.")
            return
        self.palette_chosen.emit(palette, layer.name)

    def _fix_selected(self) -> None:
        palette = self.palette
        if palette is None:
            return
        for item in self.swatches.selectedItems():
            values = palette.colors[int(item.data(Qt.ItemDataRole.UserRole)) - 1]
            self.fixed_color_chosen.emit(", ".join(format_value(v) for v in values))
