"""Take the screenshots in docs/images/ from a real napari viewer using the plugin.

Run it on a machine with a display, or headless under Xvfb::

    xvfb-run -a python docs/make_screenshots.py

It drives the plugin the way a user does: opens images through File > Open Sample (the
plugin's sample-data contribution), docks the "K-means color filter" widget, sets the
controls, presses Run (or turns on the live preview) and waits for the worker, then saves
what the window shows with ``viewer.screenshot``.
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
from napari.qt import get_qapp
from qtpy.QtCore import Qt

PLUGIN_NAME = "napari-kmeans-filter"
WIDGET_NAME = "K-means color filter"
IMAGES_DIR = Path(__file__).resolve().parent / "images"
WINDOW_SIZE = (1280, 860)
RUN_TIMEOUT_S = 120.0


def settle(seconds: float = 0.4) -> None:
    """Let Qt handle events for a moment, so the window is fully drawn."""
    app = get_qapp()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish in {RUN_TIMEOUT_S} s")
        get_qapp().processEvents()
        time.sleep(0.01)
    settle()


def run_and_wait(widget) -> None:
    """Press Run and keep the event loop going until the layers are shown."""
    widget.runs.run_button.native.click()
    wait_until(lambda: not widget.is_running, "the run")


def save_window(viewer: napari.Viewer, name: str) -> Path:
    path = IMAGES_DIR / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")
    return path


def fresh(viewer: napari.Viewer) -> None:
    viewer.layers.clear()
    settle(0.2)


def main() -> None:
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-kmeans-filter", show=True)
    viewer.window.resize(*WINDOW_SIZE)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)

    # 1. The cat in 8 colors measured in Lab: the result line, the palette panel.
    (cat,) = viewer.open_sample(PLUGIN_NAME, "cat")
    settle()
    widget.controls.n_colors_input.value = 8
    widget.controls.color_space_choice.value = "lab"
    run_and_wait(widget)
    clusters = viewer.layers[f"{cat.name} clusters"]
    viewer.layers.selection.active = clusters
    viewer.reset_view()
    settle()
    save_window(viewer, "widget-cat-k8.png")

    # 1b. The k plot: PSNR and mean ΔE against k on the preview's slice, k = 8 marked.
    kplot = widget.kplot
    kplot.check.value = True
    wait_until(lambda: bool(kplot.points) and not kplot.is_busy, "the k plot")
    save_window(viewer, "widget-kplot.png")
    kplot.check.value = False

    # 2. Original and quantized side by side (napari's grid mode).
    clusters.visible = False
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 1
    viewer.reset_view()
    settle()
    save_window(viewer, "cat-original-vs-k8.png")
    viewer.canvas.grid.enabled = False
    clusters.visible = True

    # 3. A swatch clicked: its label selected and shown alone; the per-cluster numbers in
    #    napari's own features table, docked below the canvas.
    widget.palette_panel.click_label(6)
    clusters.show_selected_label = True
    for layer in viewer.layers:
        layer.visible = layer is clusters
    table_dock, _table = viewer.window.add_plugin_dock_widget("napari", "Features table widget")
    viewer.window._qt_window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, table_dock)
    viewer.layers.selection.active = clusters
    viewer.reset_view()
    settle()
    save_window(viewer, "widget-palette.png")
    viewer.window.remove_dock_widget(table_dock)
    clusters.show_selected_label = False

    # 4. The live preview on a larger photo: k changed, no Run pressed yet.
    fresh(viewer)
    (astronaut,) = viewer.open_sample(PLUGIN_NAME, "astronaut")
    widget.controls.n_colors_input.value = 6
    widget.controls.color_space_choice.value = "oklab"
    widget.preview.check.value = True
    wait_until(lambda: widget.preview.shown_at and not widget.is_previewing, "the preview")
    shown = widget.preview.shown_at
    widget.controls.n_colors_input.value = 5
    wait_until(lambda: widget.preview.shown_at > shown and not widget.is_previewing, "preview")
    astronaut.visible = False
    viewer.reset_view()
    settle()
    save_window(viewer, "widget-preview.png")
    widget.preview.check.value = False

    # 5. Two stain channels clustered together: one point (hematoxylin, DAB) per pixel.
    fresh(viewer)
    stains = viewer.open_sample(PLUGIN_NAME, "ihc_stains")
    viewer.layers.selection.update(set(stains))
    widget.controls.n_colors_input.value = 6
    widget.controls.color_space_choice.value = "rgb"
    run_and_wait(widget)
    for layer in viewer.layers:
        layer.visible = layer.name.endswith("clusters")
    viewer.layers.selection.active = viewer.layers["hematoxylin + DAB clusters"]
    viewer.reset_view()
    settle()
    save_window(viewer, "widget-channels.png")

    # 6. RGBA: transparent pixels stay transparent (label 0) in the clusters.
    fresh(viewer)
    (cutout,) = viewer.open_sample(PLUGIN_NAME, "cat_cutout")
    widget.controls.n_colors_input.value = 6
    run_and_wait(widget)
    for layer in viewer.layers:
        layer.visible = layer.name.endswith("clusters")
    viewer.layers.selection.active = viewer.layers[f"{cutout.name} clusters"]
    viewer.reset_view()
    settle()
    save_window(viewer, "widget-rgba.png")

    # 7. A greyscale photo: intensity clusters, shown with the source's colormap.
    fresh(viewer)
    (camera,) = viewer.open_sample(PLUGIN_NAME, "camera")
    widget.controls.n_colors_input.value = 4
    run_and_wait(widget)
    viewer.layers.selection.active = viewer.layers[f"{camera.name} clusters"]
    viewer.reset_view()
    settle()
    save_window(viewer, "widget-camera-k4.png")

    viewer.close()


if __name__ == "__main__":
    main()
