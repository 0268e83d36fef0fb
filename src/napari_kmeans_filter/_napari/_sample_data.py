"""Sample images for napari's File > Open Sample menu.

Every image ships inside scikit-image's wheel, so opening a sample never needs the network.
Each function returns napari ``LayerData`` tuples: ``[(data, layer_keyword_arguments)]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
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


def cat_cutout() -> list[LayerData]:
    """Chelsea cut out: RGBA, fully transparent (alpha 0) outside an ellipse around her head.

    Transparent pixels do not vote for the palette and are label 0 (transparent) in the
    clusters layer, so the cut-out stays a cut-out.

    Returns
    -------
    list of tuple
        One RGBA image layer named ``"chelsea cut-out"``.
    """
    from skimage.draw import ellipse

    photo = skimage.data.chelsea()
    alpha = np.zeros(photo.shape[:2], np.uint8)
    rows, cols = ellipse(130, 230, 125, 150, shape=alpha.shape)
    alpha[rows, cols] = 255
    return [(np.dstack([photo, alpha]), {"name": "chelsea cut-out", "rgb": True})]


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
    """The cameraman: a 512 x 512 greyscale photo, for trying intensity quantization.

    Returns
    -------
    list of tuple
        One greyscale image layer named ``"camera"``.
    """
    return [(skimage.data.camera(), {"name": "camera", "rgb": False, "colormap": "gray"})]


def ihc_stains() -> list[LayerData]:
    """Two stain channels of a tissue section, opened as two layers like a 2-channel file.

    scikit-image's immunohistochemistry photo (512 x 512) separated into its hematoxylin
    (nuclei) and DAB (the antibody) stains by color deconvolution
    (:func:`skimage.color.rgb2hed`), each scaled to 12-bit values in uint16 as a microscope
    camera gives them, and shown with additive blending the way napari opens a file with
    ``channel_axis``. Select both layers to cluster them together.

    Returns
    -------
    list of tuple
        Two greyscale uint16 layers, ``"hematoxylin"`` (cyan) and ``"DAB"`` (yellow).
    """
    from skimage.color import rgb2hed
    from skimage.exposure import rescale_intensity

    stains = rgb2hed(skimage.data.immunohistochemistry())
    layers = []
    for channel, name, colormap in ((0, "hematoxylin", "cyan"), (2, "DAB", "yellow")):
        values = rescale_intensity(stains[..., channel], out_range=(0, 4095))
        data = np.round(values).astype(np.uint16)
        layers.append(
            (
                data,
                {
                    "name": name,
                    "colormap": colormap,
                    "blending": "additive",
                    "contrast_limits": (0, 4095),
                },
            )
        )
    return layers
