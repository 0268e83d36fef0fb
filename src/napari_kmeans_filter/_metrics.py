"""How close a repainted image is to its input: PSNR and mean CIEDE2000.

Both are measured over the visible pixels (alpha > 0) and computed from the
colour histogram (each distinct colour weighted by its pixel count), never
pixel by pixel.
"""

from __future__ import annotations

import math

import numpy as np

from ._colorspace import rgb_to_lab, rgb_unit_scale
from ._histogram import ColorHistogram, Encoding

_SLICE_ROWS = 2**20


def psnr(mse: float, dtype: np.dtype, value_range: float) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(peak**2 / mse)``.

    The peak is 255 for 8-bit integer images and the data's own range
    (``value_range``: max - min of the visible colour values) for every other
    dtype, whose bit depth is not known (12-bit values in uint16 would read
    24 dB better against 65535): the same picture stored as uint8, float in
    [0, 1] or 12-bit values in uint16 reads the same when its values span that
    range, and lower in the other dtypes when they do not.  Infinite for a
    lossless result.
    """
    if mse == 0:
        return math.inf
    dtype = np.dtype(dtype)
    if dtype.kind in "ui" and dtype.itemsize == 1:
        peak = float(np.iinfo(dtype).max) - float(np.iinfo(dtype).min)
    else:
        peak = value_range
    if peak == 0:
        return 0.0
    return 10 * math.log10(peak**2 / mse)


class MeanDeltaE:
    """Mean CIEDE2000 colour difference over the visible pixels of one histogram.

    The image's colours are read as sRGB scaled by the dtype's full intensity
    (255 for uint8, 1.0 for floats), converted to CIELAB (D65) and compared
    with the palette colour of their row by
    :func:`skimage.color.deltaE_ciede2000` (Sharma, Wu and Dalal, "The
    CIEDE2000 color-difference formula", Color Res. Appl. 30, 2005).  The
    image's colours are converted once; each call converts only the palette.
    """

    def __init__(self, histogram: ColorHistogram, encoding: Encoding):
        self.histogram = histogram
        self.encoding = encoding
        weights = histogram.pixel_counts.astype(np.float64)
        self.rows = np.flatnonzero(weights > 0)
        self.weights = weights[self.rows]
        self.scale = rgb_unit_scale(encoding.dtype)
        self.lab = np.concatenate(
            [
                rgb_to_lab(
                    self._unit(
                        encoding.decode(histogram.codes[self.rows[start : start + _SLICE_ROWS]])
                    )
                )
                for start in range(0, len(self.rows), _SLICE_ROWS)
            ]
        )

    def _unit(self, colors):
        return np.clip(colors.astype(np.float64) / self.scale, 0.0, 1.0)

    def __call__(self, colors: np.ndarray, row_labels: np.ndarray) -> float:
        from skimage.color import deltaE_ciede2000

        palette_lab = rgb_to_lab(self._unit(colors))
        labels = row_labels[self.rows]
        total = 0.0
        for start in range(0, len(self.rows), _SLICE_ROWS):
            part = slice(start, start + _SLICE_ROWS)
            difference = deltaE_ciede2000(self.lab[part], palette_lab[labels[part]])
            total += float(difference @ self.weights[part])
        return total / float(self.weights.sum())
