"""Palette + histogram -> labels and image, for a numpy array or per dask block.

Pixels get their label through a lookup on their colour code, never through a
distance computation per pixel: the fit already assigned every distinct colour
to its palette entry.  For dense codes (8-bit RGB, 8/16-bit greyscale) a
direct table maps the code to the label, and one compiled pass writes the
labels and the repainted image together; other encodings look codes up in the
sorted histogram.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._histogram import ColorHistogram, Encoding
from ._jit import kernel


# Above this many pixels a numpy image is painted by one thread per core (the
# kernels release the GIL); a 12 MP photo took 0.32 s on one thread here.
# Dask input is already painted chunk by chunk on every core.
_PARALLEL_PIXELS = 2**21


def _n_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def label_dtype(n_colors: int) -> np.dtype:
    return np.dtype(np.uint8 if n_colors <= 256 else np.uint16)


@kernel
def _paint_codes(pixels, n_color, offset, bits, table, colors, labels, image):
    """Labels and image of ``pixels`` (n, channels) through the code -> label ``table``.

    Channels after the colour ones (alpha) are copied unchanged.
    """
    n, n_channels = pixels.shape
    for i in range(n):
        code = 0
        for c in range(n_color):
            code = (code << bits) | (np.int64(pixels[i, c]) - offset)
        label = table[code]
        labels[i] = label
        for c in range(n_color):
            image[i, c] = colors[label, c]
        for c in range(n_color, n_channels):
            image[i, c] = pixels[i, c]


@kernel
def _paint_labels(labels, pixels, n_color, colors, image):
    """Image of ``pixels`` (n, channels) whose labels are known."""
    n, n_channels = pixels.shape
    for i in range(n):
        label = labels[i]
        for c in range(n_color):
            image[i, c] = colors[label, c]
        for c in range(n_color, n_channels):
            image[i, c] = pixels[i, c]


class Painter:
    """Labels and repainted pixels for one palette and one image's histogram.

    Parameters
    ----------
    histogram, encoding
        The histogram whose rows ``row_labels`` indexes.
    row_labels : ndarray of intp, shape (len(histogram),)
        Palette index of every histogram row.
    colors : ndarray, shape (k, C)
        The palette in the image's dtype.
    """

    def __init__(self, histogram: ColorHistogram, encoding: Encoding, row_labels, colors):
        self.encoding = encoding
        self.colors = np.ascontiguousarray(colors)
        self.label_dtype = label_dtype(len(colors))
        self.row_labels = np.asarray(row_labels).astype(self.label_dtype)
        self.codes = histogram.codes
        self._table = None

    def __getstate__(self):
        # Ship the compact histogram to dask workers; each builds its own table.
        state = self.__dict__.copy()
        state["_table"] = None
        return state

    def _code_table(self):
        """Direct code -> label table of a dense encoding, built on first use."""
        if self._table is None:
            # Only entries of codes in the histogram are ever read.
            table = np.empty(2**self.encoding.total_bits, dtype=self.label_dtype)
            table[self.codes.astype(np.intp)] = self.row_labels
            self._table = table
        return self._table

    def paint(self, pixels, rows=None):
        """``(labels, image)`` of channel-last ``pixels`` of shape (n, channels).

        ``rows`` (the pixels' histogram rows) saves the lookup when known.
        """
        n_color = self.encoding.n_channels
        labels = np.empty(pixels.shape[0], dtype=self.label_dtype)
        image = np.empty(pixels.shape, dtype=pixels.dtype)
        encoding = self.encoding
        if encoding.dense:
            table = self._code_table()

            def work(part):
                _paint_codes(
                    pixels[part],
                    n_color,
                    encoding.offset,
                    encoding.bits,
                    table,
                    self.colors,
                    labels[part],
                    image[part],
                )

        else:
            if rows is None:
                rows = np.searchsorted(self.codes, encoding.encode(pixels[:, :n_color]))
            np.take(self.row_labels, rows, out=labels)

            def work(part):
                _paint_labels(labels[part], pixels[part], n_color, self.colors, image[part])

        n_parts = min(_n_workers(), max(1, pixels.shape[0] // _PARALLEL_PIXELS))
        bounds = np.linspace(0, pixels.shape[0], n_parts + 1).astype(int)
        parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        if n_parts == 1:
            work(parts[0])
        else:
            with ThreadPoolExecutor(n_parts) as pool:
                list(pool.map(work, parts))
        return labels, image

    def labels_of_block(self, block):
        """Labels of a channel-last block (a dask chunk)."""
        labels, _ = self.paint(block.reshape(-1, block.shape[-1]))
        return labels.reshape(block.shape[:-1])

    def image_of_block(self, block):
        """Repainted channel-last block (a dask chunk)."""
        _, image = self.paint(block.reshape(-1, block.shape[-1]))
        return image.reshape(block.shape)
