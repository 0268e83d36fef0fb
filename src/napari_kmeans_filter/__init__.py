"""K-means colour quantisation for napari, scripts and the command line.

The functions importable from here never import napari or Qt, so they work in
scripts, notebooks, napari's console and on dask workers alike.
"""

from ._contract import COLOR_SPACES, MAX_N_COLORS
from ._quantize import Palette, QuantizeResult, apply_palette, fit_palette, quantize
from ._version import __version__

__all__ = [
    "COLOR_SPACES",
    "MAX_N_COLORS",
    "KMeansQuantizer",
    "Palette",
    "QuantizeResult",
    "__version__",
    "add_result_layers",
    "apply_palette",
    "fit_palette",
    "quantize",
    "quantize_layer",
]

_NAPARI_HELPERS = {"add_result_layers", "quantize_layer"}


def __getattr__(name):
    # The napari helpers import napari; load them only when asked for, so that
    # `import napari_kmeans_filter` stays light and headless.
    if name in _NAPARI_HELPERS:
        from ._napari import _console

        return getattr(_console, name)
    if name == "KMeansQuantizer":
        # scikit-learn costs ~0.7 s to import: only when the estimator is asked for.
        from ._estimator import KMeansQuantizer

        return KMeansQuantizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
