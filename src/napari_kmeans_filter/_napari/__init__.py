"""The napari shell: the dock widget and the layer helpers (imports napari and Qt).

Reading layers (:mod:`._read`) → running the core off the GUI thread (:mod:`._run`) →
layer data made on the worker (:mod:`._prepare`) → layers shown on the GUI thread
(:mod:`._show`); the console API (:mod:`._console`); the dock widget (:mod:`._widget`) made of
its settings (:mod:`._controls`), the live preview (:mod:`._preview`), the k plot
(:mod:`._kplot`), the run controller (:mod:`._run_controller`) and the palette panel
(:mod:`._palette_panel`); a run or a preview is a :mod:`._task` (its worker, the layers it
adds, and the one way it ends); the sample images of File › Open Sample
(:mod:`._sample_data`).

Nothing is imported here, so that importing one piece does not load the others.
"""
