"""Kept only for the package root's lazy import of the console helpers.

The napari shell lives in :mod:`napari_kmeans_filter._napari`; ``add_result_layers`` and
``quantize_layer`` are defined in :mod:`napari_kmeans_filter._napari._console`. This module goes
once the package root imports them from there.
"""

from ._napari._console import add_result_layers, quantize_layer

__all__ = ["add_result_layers", "quantize_layer"]
