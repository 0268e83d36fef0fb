"""Take the screenshots in docs/images/ from a real napari viewer using the plugin.

Run it on a machine with a display, or headless under Xvfb::

    xvfb-run -a python docs/make_screenshots.py

It drives the plugin the way a user does: opens the cat through File > Open Sample (the
plugin's sample-data contribution), docks the "K-means colour filter" widget, sets the
parameters, presses Run and waits for the worker, then saves what the window shows.
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
from napari.qt import get_qapp

PLUGIN_NAME = "napari-kmeans-filter"
WIDGET_NAME = "K-means colour filter"
IMAGES_DIR = Path(__file__).resolve().parent / "images"
WINDOW_SIZE = (1280, 800)
RUN_TIMEOUT_S = 120.0


def settle(seconds: float = 0.3) -> None:
    """Let Qt handle events for a moment, so the window is fully drawn."""
    app = get_qapp()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)


def run_and_wait(widget) -> None:
    """Press Run and keep the event loop going until the worker has finished."""
    widget.run_button.native.click()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while widget.is_running:
        if time.monotonic() > deadline:
            raise TimeoutError(f"quantisation did not finish in {RUN_TIMEOUT_S} s")
        get_qapp().processEvents()
        time.sleep(0.01)
    settle()


def save_window(viewer: napari.Viewer, name: str) -> Path:
    path = IMAGES_DIR / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")
    return path


def main() -> None:
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-kmeans-filter", show=True)
    viewer.window.resize(*WINDOW_SIZE)
    (cat,) = viewer.open_sample(PLUGIN_NAME, "cat")
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
    settle()

    # 1. The widget after a run: 8 colours measured in Lab, the summary line filled in.
    widget.n_colors_input.value = 8
    widget.color_space_choice.value = "lab"
    run_and_wait(widget)
    labels = viewer.layers[f"{cat.name} clusters"]
    viewer.layers.selection.active = labels
    viewer.reset_view()
    settle()
    save_window(viewer, "widget-cat-k8.png")

    # 2. Original and quantised side by side (napari's grid mode).
    labels.visible = False
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 1
    viewer.reset_view()
    settle()
    save_window(viewer, "cat-original-vs-k8.png")
    viewer.canvas.grid.enabled = False

    # 3. Re-running with fewer colours updates the same two layers.
    labels.visible = True
    widget.n_colors_input.value = 4
    run_and_wait(widget)
    viewer.reset_view()
    settle()
    save_window(viewer, "widget-cat-k4-rerun.png")

    # 4. A greyscale photo: intensity clusters, shown with the source's colormap.
    (camera,) = viewer.open_sample(PLUGIN_NAME, "camera")
    for layer in viewer.layers:
        layer.visible = layer.name.startswith(camera.name)
    viewer.layers.selection.active = camera
    widget.n_colors_input.value = 4
    run_and_wait(widget)
    viewer.layers[f"{camera.name} clusters"].visible = True
    viewer.reset_view()
    settle()
    save_window(viewer, "widget-camera-k4.png")

    viewer.close()


if __name__ == "__main__":
    main()
