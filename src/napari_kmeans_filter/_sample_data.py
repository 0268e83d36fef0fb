"""Sample images for napari's File > Open Sample menu.

Every image ships inside scikit-image's wheel, so opening a sample never needs the network.
Each function returns napari ``LayerData`` tuples: ``[(data, layer_keyword_arguments)]``.
"""

from __future__ import annotations

from typing import Any

import skimage.data

LayerData = tuple[Any, dict[str, Any]]


def cat() -> list[LayerData]:
    """Chelsea the cat: a 300 x 451 RGB photo with soft fur gradients.

    Returns
    -------
    list of tuple
        One RGB image layer named ``"chelsea"``.
    """
    return [(skimage.data.chelsea(), {"name": "chelsea", "rgb": True})]


def astronaut() -> list[LayerData]:
    """Eileen Collins in her spacesuit: a 512 x 512 RGB portrait with saturated flags.

    Returns
    -------
    list of tuple
        One RGB image layer named ``"astronaut"``.
    """
    return [(skimage.data.astronaut(), {"name": "astronaut", "rgb": True})]


def coffee() -> list[LayerData]:
    """A cup of coffee on a saucer: a 400 x 600 RGB photo with mostly warm tones.

    Returns
    -------
    list of tuple
        One RGB image layer named ``"coffee"``.
    """
    return [(skimage.data.coffee(), {"name": "coffee", "rgb": True})]


def camera() -> list[LayerData]:
    """The cameraman: a 512 x 512 greyscale photo, for trying intensity quantisation.

    Returns
    -------
    list of tuple
        One greyscale image layer named ``"camera"``.
    """
    return [(skimage.data.camera(), {"name": "camera", "rgb": False, "colormap": "gray"})]
