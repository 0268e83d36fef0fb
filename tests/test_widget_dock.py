"""The dock as a napari tool: menu entry, following the layer list, layout, tooltips, wording."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from napari_kmeans_filter._napari._widget import KMeansColourWidget


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
    assert "K-means color filter" in entry.title
    app.commands.execute_command(entry.id).result()
    docked = list(viewer.window.dock_widgets.values())
    assert any(isinstance(widget, KMeansColourWidget) for widget in docked)


@pytest.mark.viewer
def test_chooser_follows_selected_images_and_offers_color_space_for_one_rgb_layer(
    make_napari_viewer,
    cat_crop,
    open_widget,
):
    viewer = make_napari_viewer()
    rgb = viewer.add_image(cat_crop(), rgb=True, name="rgb")
    grey = viewer.add_image(skimage.data.camera()[:40, :40], name="grey")
    other = viewer.add_image(skimage.data.camera()[40:80, :40], name="other grey")
    viewer.add_labels(np.zeros((4, 4), np.uint8), name="not an image")
    widget = open_widget(viewer)

    viewer.layers.selection.active = rgb
    assert widget.controls.image_layers.value == [rgb]
    assert widget.controls.color_space_choice.enabled
    viewer.layers.selection.active = grey
    assert widget.controls.image_layers.value == [grey]
    assert not widget.controls.color_space_choice.enabled
    # Selecting several layers in the layer list selects them all for joint clustering.
    viewer.layers.selection.update({grey, other})
    assert set(widget.controls.image_layers.value) == {grey, other}
    assert not widget.controls.color_space_choice.enabled
    viewer.layers.selection.active = viewer.layers["not an image"]
    assert set(widget.controls.image_layers.value) == {grey, other}
    assert widget.controls.image_layers.choices == (rgb, grey, other)


LONG_NAME = "confocal_stack_2024-05-17_mouse-liver_section-03_DAPI-GFP_z12"


@pytest.mark.viewer
def test_dock_width_stays_put_across_runs_with_a_long_layer_name(
    make_napari_viewer, qtbot, cat_crop, run_and_wait
):
    assert len(LONG_NAME) >= 60
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cat_crop(), rgb=True, name=LONG_NAME)
    dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-kmeans-filter", "K-means color filter"
    )
    qtbot.wait(50)
    canvas = viewer.window._qt_viewer.canvas.native
    widths = [(dock.width(), canvas.width())]
    for k in (4, 12):
        widget.controls.n_colors_input.value = k
        run_and_wait(widget)
        qtbot.wait(50)
        widths.append((dock.width(), canvas.width()))
    widget.controls.scope_choice.value = "region"  # a layer-name combo box becomes enabled
    viewer.add_shapes([[[1, 1], [1, 30], [30, 30]]], shape_type="polygon", name=LONG_NAME + "+")
    qtbot.wait(50)
    widths.append((dock.width(), canvas.width()))
    assert len(set(widths)) == 1, widths
    assert LONG_NAME[:10] in widget.runs.status_label.value or "→" in widget.runs.status_label.value
    # The dock's title is not cut off.
    title = dock.title.title
    assert title.width() >= title.fontMetrics().horizontalAdvance(title.text()), title.text()


def _form(widget):
    from qtpy.QtWidgets import QFormLayout

    return widget.findChild(QFormLayout)


@pytest.mark.viewer
def test_every_control_has_a_tooltip_and_the_fields_line_up(
    make_napari_viewer, qtbot, cat_crop, open_widget
):
    from qtpy.QtWidgets import (
        QAbstractButton,
        QAbstractItemView,
        QAbstractSlider,
        QAbstractSpinBox,
        QComboBox,
        QFormLayout,
        QLineEdit,
        QProgressBar,
        QScrollBar,
    )

    viewer = make_napari_viewer(show=True)
    viewer.add_image(cat_crop(), rgb=True, name="cat")
    widget = open_widget(viewer)
    qtbot.wait(50)
    controls = (
        QAbstractButton,
        QComboBox,
        QAbstractSpinBox,
        QAbstractSlider,
        QLineEdit,
        QProgressBar,
        QAbstractItemView,
    )
    untipped = []
    for control in widget.findChildren(controls):
        if not control.isVisibleTo(widget) or isinstance(control.parent(), QAbstractSpinBox):
            continue
        if isinstance(control, QScrollBar):  # the dock's scroll bar
            continue
        holder = control
        while holder is not None and holder is not widget and not holder.toolTip():
            holder = holder.parentWidget()
        if holder is None or holder is widget:
            untipped.append(type(control).__name__)
    assert not untipped, untipped

    form = _form(widget)
    field_x, labels = set(), []
    for row in range(form.rowCount()):
        label = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
        field = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
        if label is None or field is None or not form.isRowVisible(row):
            continue
        assert label.widget().toolTip(), label.widget().text()
        labels.append(label.widget().text())
        field_x.add(field.widget().mapTo(widget, field.widget().rect().topLeft()).x())
    assert len(labels) >= 6, labels
    assert len(field_x) == 1, field_x  # every input starts at the same x


@pytest.mark.viewer
def test_ui_strings_use_napari_us_spelling(make_napari_viewer, cat_crop, open_widget):
    from qtpy.QtWidgets import QWidget

    viewer = make_napari_viewer()
    viewer.add_image(cat_crop(), rgb=True, name="cat")
    widget = open_widget(viewer)
    texts = []
    for child in [widget, *widget.findChildren(QWidget)]:
        texts.append(child.toolTip())
        for getter in ("text", "title", "placeholderText"):
            value = getattr(child, getter, None)
            if callable(value):
                try:
                    texts.append(str(value()))
                except TypeError:
                    pass
    text = " ".join(texts).lower()
    assert "color" in text
    assert "colour" not in text and "quantis" not in text


@pytest.mark.viewer
def test_run_is_disabled_until_there_is_an_image_layer(make_napari_viewer, cat_crop, open_widget):
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="labels")
    widget = open_widget(viewer)
    assert not widget.runs.run_button.enabled
    layer = viewer.add_image(cat_crop(), rgb=True, name="cat")
    assert widget.controls.image_layers.value == [layer]
    assert widget.runs.run_button.enabled
    viewer.layers.remove(layer)
    assert not widget.runs.run_button.enabled
