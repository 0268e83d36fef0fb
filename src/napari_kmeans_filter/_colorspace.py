"""Colour spaces in which the k-means distances are measured.

Every function here works on ``(n, 3)`` float arrays of RGB values scaled to
``[0, 1]``; the callers convert from and to the image's own units.  Only the
distinct colours of an image pass through here, never every pixel, so the cost
is bounded by the colour histogram, not by the image size.
"""

from __future__ import annotations

import numpy as np

# Björn Ottosson, "A perceptual color space for image processing" (2020),
# https://bottosson.github.io/posts/oklab/ -- the published matrices.
_LINEAR_SRGB_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_LMS_CBRT_TO_OKLAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
_OKLAB_TO_LMS_CBRT = np.array(
    [
        [1.0, 0.3963377774, 0.2158037573],
        [1.0, -0.1055613458, -0.0638541728],
        [1.0, -0.0894841775, -1.2914855480],
    ]
)
_LMS_TO_LINEAR_SRGB = np.array(
    [
        [4.0767416621, -3.3077115913, 0.2309699292],
        [-1.2684380046, 2.6097574011, -0.3413193965],
        [-0.0041960863, -0.7034186147, 1.7076147010],
    ]
)


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, None)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def rgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """Convert ``(n, 3)`` sRGB values in ``[0, 1]`` to Oklab (L in ``[0, 1]``)."""
    lms = _srgb_to_linear(np.asarray(rgb, dtype=np.float64)) @ _LINEAR_SRGB_TO_LMS.T
    return np.cbrt(lms) @ _LMS_CBRT_TO_OKLAB.T


def oklab_to_rgb(oklab: np.ndarray) -> np.ndarray:
    """Convert ``(n, 3)`` Oklab values back to sRGB in ``[0, 1]`` (clipped)."""
    lms = (np.asarray(oklab, dtype=np.float64) @ _OKLAB_TO_LMS_CBRT.T) ** 3
    return np.clip(_linear_to_srgb(lms @ _LMS_TO_LINEAR_SRGB.T), 0.0, 1.0)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert ``(n, 3)`` sRGB values in ``[0, 1]`` to CIELAB (D65), via scikit-image."""
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb, dtype=np.float64)[np.newaxis])[0]


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Convert ``(n, 3)`` CIELAB values back to sRGB in ``[0, 1]`` (clipped)."""
    from skimage.color import lab2rgb

    return np.clip(lab2rgb(np.asarray(lab, dtype=np.float64)[np.newaxis])[0], 0.0, 1.0)


def rgb_unit_scale(dtype: np.dtype) -> float:
    """Value of full intensity for ``dtype``: 255 for uint8, 1.0 for floats, ..."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return 1.0
    return float(np.iinfo(dtype).max)


def check_fit_range(low: float, high: float, color_space: str, dtype: np.dtype) -> None:
    """Raise ValueError unless values from ``low`` to ``high`` (the image's units) can be
    taken to ``color_space``: ``"lab"`` and ``"oklab"`` need RGB in [0, full intensity]
    (clipping would silently merge every brighter colour into white)."""
    if color_space == "rgb":
        return
    scale = rgb_unit_scale(dtype)
    if low < 0 or high > scale * (1 + 1e-6):
        raise ValueError(
            f"The 'color_space' parameter {color_space!r} needs RGB values in [0, {scale:g}] "
            f"for a {np.dtype(dtype)} image; this image has values in [{low:g}, {high:g}]. "
            "Scale it (e.g. float images to [0, 1]) or use color_space='rgb'."
        )


def to_fit_space(values: np.ndarray, color_space: str, dtype: np.dtype) -> np.ndarray:
    """Map colours in the image's units to the space where distances are measured.

    ``"rgb"`` measures distances in the image's own units (so the fitted
    inertia equals the squared error of the output image); ``"lab"`` and
    ``"oklab"`` first scale RGB to ``[0, 1]`` by the dtype's full intensity.
    """
    values = np.asarray(values, dtype=np.float64)
    if color_space == "rgb":
        return values
    if values.size:
        check_fit_range(values.min(), values.max(), color_space, dtype)
    rgb = values / rgb_unit_scale(dtype)
    if color_space == "lab":
        return rgb_to_lab(rgb)
    return rgb_to_oklab(rgb)


def from_fit_space(points: np.ndarray, color_space: str, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`to_fit_space`; returns float values in the image's units."""
    points = np.asarray(points, dtype=np.float64)
    if color_space == "rgb":
        return points
    rgb = lab_to_rgb(points) if color_space == "lab" else oklab_to_rgb(points)
    return rgb * rgb_unit_scale(dtype)
