"""Palette + histogram -> labels and image, for a numpy array or per dask block.

Pixels get their label through a lookup on their colour code, never through a
distance computation per pixel: the fit already assigned every distinct colour
to its palette entry.  For dense codes (8-bit RGB, 8/16-bit greyscale) a
direct table maps the code to the label, and one compiled pass writes the
labels and the repainted image together; other encodings look codes up in the
sorted histogram.  Dithering finds every pixel's label itself, as the error
reaches it (:class:`Ditherer`); 8-bit RGB needs no histogram for it at all
(:func:`paint_bytes`), nor to repaint it undithered with a palette it was not
fitted on.
"""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np

from . import _nearest
from ._histogram import ColorHistogram, Encoding
from ._jit import helper, kernel
from ._nearest import (
    Neighbours,
    cell_grid,
    dither_plane,
    dither_rgb,
    dither_rgb_cells,
    no_cell_grid,
)
from ._workers import n_workers, run_in_step, run_parts

# Above this many pixels a numpy image is painted by one thread per core (the
# kernels release the GIL); a 12 MP photo took 0.32 s on one thread here.
# Dask input is already painted chunk by chunk on every core.
_PARALLEL_PIXELS = 2**21
# Pixels whose statistics _paint_byte_rows packs before unpacking: 21-bit fields hold
# 8192 values of 255 (and 2**42 the squared errors of as many, 195 075 at most each).
_PACKED = 8192


def label_dtype(n_labels: int) -> np.dtype:
    """The smallest unsigned dtype holding labels ``0 .. n_labels - 1``.

    uint8 up to 256 labels, else uint16 (k is at most 65 536).  One-based
    labels (napari's, 0 = background) for k colours need ``label_dtype(k + 1)``.
    """
    return np.dtype(np.uint8 if n_labels <= 256 else np.uint16)


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
def _label_codes(pixels, n_color, offset, bits, table, labels):
    """Labels of ``pixels`` (n, channels) through the code -> label ``table``."""
    for i in range(pixels.shape[0]):
        code = 0
        for c in range(n_color):
            code = (code << bits) | (np.int64(pixels[i, c]) - offset)
        labels[i] = table[code]


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


@kernel
def _paint_byte_rows(
    pixels,
    alpha_channel,
    offset,
    ints,
    palette,
    labels,
    image,
    counts,
    sums,
    squared,
    seen,
    distinct,
    first,
    stop,
):
    """Image and statistics of rows ``first`` to ``stop`` of an 8-bit RGB plane whose
    dithered ``labels`` are known (:func:`._nearest.dither_rgb_cells`).

    Each pixel is painted its label's colour, the channels beyond the colours (alpha)
    as they were.  The statistics of the visible pixels are added, in levels (values
    minus ``offset``; ``ints`` the palette's), into ``counts``, ``sums`` and ``squared``
    (int64: exact), and each visible pixel's colour is marked in the bit set ``seen``
    (2**18 words) unless it is empty, ``distinct[0]`` counting the colours newly marked.
    """
    width, n_channels = pixels.shape[1], pixels.shape[2]
    k = ints.shape[0]
    keep_seen = seen.shape[0] > 0
    # Statistics of up to _PACKED pixels a label, three to a word (21 bits each):
    # two additions a pixel instead of five.  Unpacked into the totals when full.
    levels = np.zeros(k, np.int64)  # value sums, per channel
    tallies = np.zeros(k, np.int64)  # pixel count, and squared error above it
    packed = 0
    field = np.int64((1 << 21) - 1)
    for y in range(first, stop):
        for x in range(width):
            best = labels[y, x]
            image[y, x, 0] = palette[best, 0]
            image[y, x, 1] = palette[best, 1]
            image[y, x, 2] = palette[best, 2]
            for c in range(3, n_channels):
                image[y, x, c] = pixels[y, x, c]
            if alpha_channel >= 0 and not pixels[y, x, alpha_channel] > 0:
                continue
            r0 = np.int64(pixels[y, x, 0]) - offset
            r1 = np.int64(pixels[y, x, 1]) - offset
            r2 = np.int64(pixels[y, x, 2]) - offset
            if keep_seen:
                code = (r0 << 16) | (r1 << 8) | r2
                word, bit = code >> 6, np.uint64(code & 63)
                # Counted as marked: no pass over the 2 MB of bits after.
                distinct[0] += np.int64(((seen[word] >> bit) & np.uint64(1)) ^ np.uint64(1))
                seen[word] |= np.uint64(1) << bit
            d0, d1, d2 = r0 - ints[best, 0], r1 - ints[best, 1], r2 - ints[best, 2]
            levels[best] += r0 | (r1 << 21) | (r2 << 42)
            tallies[best] += 1 | ((d0 * d0 + d1 * d1 + d2 * d2) << 21)
            packed += 1
            if packed == _PACKED:
                _unpack(levels, tallies, field, counts, sums, squared)
                packed = 0
    _unpack(levels, tallies, field, counts, sums, squared)


@helper
def _unpack(levels, tallies, field, counts, sums, squared):
    """Add the packed statistics of :func:`_paint_byte_rows` into the totals, and clear them."""
    for j in range(levels.shape[0]):
        value, tally = levels[j], tallies[j]
        if tally == 0:
            continue
        sums[j, 0] += value & field
        sums[j, 1] += (value >> 21) & field
        sums[j, 2] += value >> 42
        counts[j] += tally & field
        squared[j] += tally >> 21
        levels[j] = 0
        tallies[j] = 0


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
        # One memory layout for the kernels (see _histogram._dense_histogram): a strided
        # view would compile second versions of them.
        pixels = np.ascontiguousarray(pixels)
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
                self.paint_labelled(pixels[part], labels[part], image[part])

        n_parts = min(n_workers(), max(1, pixels.shape[0] // _PARALLEL_PIXELS))
        bounds = np.linspace(0, pixels.shape[0], n_parts + 1).astype(int)
        parts = [slice(a, b) for a, b in itertools.pairwise(bounds)]
        run_parts(work, parts, n_parts)
        return labels, image

    def paint_labelled(self, pixels, labels, image) -> None:
        """Write into ``image`` (n, channels) ``pixels`` (n, channels) whose ``labels`` are
        known: each its label's colour, the channels beyond the colours (alpha) as they were."""
        n_color = self.encoding.n_channels
        if pixels.dtype == np.float16:  # numba has no float16
            image[:, :n_color] = self.colors[labels]
            image[:, n_color:] = pixels[:, n_color:]
            return
        _paint_labels(labels, pixels, n_color, self.colors, image)

    def labels(self, pixels):
        """Labels of channel-last ``pixels`` of shape (n, channels), without painting."""
        encoding = self.encoding
        n_color = encoding.n_channels
        labels = np.empty(pixels.shape[0], dtype=self.label_dtype)
        if encoding.dense:
            table = self._code_table()
            _label_codes(pixels, n_color, encoding.offset, encoding.bits, table, labels)
        else:
            rows = np.searchsorted(self.codes, encoding.encode(pixels[:, :n_color]))
            np.take(self.row_labels, rows, out=labels)
        return labels

    def labels_of_block(self, block):
        """Labels of a channel-last block (a dask chunk)."""
        return self.labels(block.reshape(-1, block.shape[-1])).reshape(block.shape[:-1])

    def image_of_block(self, block):
        """Repainted channel-last block (a dask chunk)."""
        _, image = self.paint(block.reshape(-1, block.shape[-1]))
        return image.reshape(block.shape)


# --------------------------------------------------------------------------- dithering

# Up to this many colours every pixel's nearest colour is found by comparing
# them all; above it, among a per-cell candidate list (RGB) or by walking the
# distance table from the undithered colour (other channel counts): the
# kernels of :mod:`._nearest`.  RGB kernel alone, ns a pixel on the cat /
# astronaut / 2 MP mosaic (compare all / candidate lists): k=16 35/37/35 vs
# 48/48/44, 64 83/83/82 vs 108/60/62, 256 268/274/273 vs 155/141/77 (each list
# costs 2k distances to make, and the cat's dithered values fall in 5 k cells).
_BRUTE_FORCE_K = 48
# 8-bit colour at level 1 is dithered by :func:`._nearest.dither_rgb_cells` (the
# same labels, in integers) above this many colours, by the kernels above otherwise.
_BYTE_CELLS_FROM_K = 0
# That kernel compares every colour (branch-free, vectorised) up to this many
# colours, or up to _BRUTE_FORCE_K if higher, and searches cells above it.  Whole
# dithered call with int32 keys, ms, the cat / astronaut / 2 MP mosaic, comparing all
# against cells: k=64 3.28 / 7.53 / 42.6 against 4.53 / 9.26 / 50.3; k=128 4.38 / 8.16 /
# 56.9 against 4.94 / 8.57 / 54.0; k=256 5.88 / 10.9 / 78.2 against 5.34 / 9.60 / 56.4
# (the noisy photo, whose values fall in the most cells, gains the most from them).
_BYTE_COMPARE_ALL_K = 64
# Its cells: 2**_fine_bits(k) levels an axis, their lists made from those of coarse
# cells of 2**_COARSE_BITS levels (8**3), and kept in at most _MAX_BLOCKS blocks of
# _nearest._LANES colours (16 bytes a colour; a cell made past them searches its coarse
# list).  Making lists costs as much as searching them: ns a pixel, whole call, on
# the cat / astronaut / 2 MP mosaic, cells of 16 levels against 8: k=256 47 / 36 / 29
# against 51 / 50 / 35 (the astronaut's values fall in 14 k cells of 8 levels); k=1024
# 74 / 52 / 41 against 70 / 57 / 38, as colours get closer.
_COARSE_BITS = 5
_MAX_BLOCKS = 2**16
# 8-bit RGB is dithered in bands of at most this many pixels (whole rows), each painted
# and counted on a second core while the next is dithered: the painting and counting
# took a fifth of the time in line (k = 16: 23 -> 18 ns a pixel on the 2 MP mosaic).
_BAND_PIXELS = 2**15
_LAST_BAND_PIXELS = 2**12  # the last bands: see _bands
# Undithered, an image of this many pixels or more is searched in parts on every core.
_PARALLEL_SEARCH_PIXELS = 2**20
_SEEN_WORDS = 2**24 // 64  # a bit per 8-bit RGB colour
#: The most colours :func:`paint_bytes` takes (12 bits of index in its keys).
BYTE_SEARCH_MAX_K = 4096
# An undithered repaint searches every pixel (paint_bytes) when a sample of this many
# pixels has at least a quarter distinct colours; an image of few colours is repainted
# faster through its histogram: 12 MP of 20 colours 87 -> 219 ms by the search, a noisy
# 12 MP photo 235 -> 112 ms.
_SAMPLE_PIXELS = 4096


def _bands(n_planes: int, height: int, width: int) -> list[list[tuple[int, int, int]]]:
    """The bands of at most _BAND_PIXELS (or one row) that planes of ``height`` rows of
    ``width`` are searched and painted in: each a list of ``(plane, first row, stop
    row)`` segments, a band's segments running on from plane to plane (a stack of
    tiny planes is a few bands, each handed over to the second core once).

    The last bands are shorter, each at most half the pixels still to come (down to
    _LAST_BAND_PIXELS): the caller waits for the painting of the last band, which
    starts when its search ends (the cat dithered at k = 64: 0.18-0.2 -> 0.05 ms from
    the last search to the last painted pixel, of a 3.3 ms call).  At most
    _BAND_PIXELS in all are one band: a small block (of a dask image) hands nothing
    over (2048 x 2048 pixels in blocks of 128 x 128, dithered: 0.37 s in three bands a
    block, 0.23 s in one).
    """
    width = max(width, 1)
    remaining = n_planes * height * width

    if remaining <= _BAND_PIXELS:  # all in one band, with no hand-over (a small block)
        return [[(p, 0, height) for p in range(n_planes)]] if remaining else []

    def budget():
        return min(_BAND_PIXELS, max(remaining // 2, _LAST_BAND_PIXELS))

    bands, band, size, most = [], [], 0, budget()
    for p in range(n_planes):
        first = 0
        while first < height:
            stop = min(height, first + max(1, (most - size) // width))
            band.append((p, first, stop))
            size += (stop - first) * width
            first = stop
            if size + width > most:  # not a row more
                bands.append(band)
                remaining -= size
                band, size, most = [], 0, budget()
    if band:
        bands.append(band)
    return bands


def _fine_bits(n_colors: int) -> int:
    """log2 of the levels an axis of :func:`._nearest.dither_rgb_cells`'s cells."""
    return 4 if n_colors <= 512 else 3


class _Scratch(threading.local):
    """The byte kernel's working arrays, kept per thread and reused: faulting in
    fresh pages costs more here than filling them (see ``_histogram._Scratch``)."""

    def get(self, name: str, shape, dtype) -> np.ndarray:
        array = self.__dict__.get(name)
        size = int(np.prod(shape))
        if array is None or array.size < size or array.dtype != dtype:
            array = self.__dict__[name] = np.empty(size, dtype)
        return array[:size].reshape(shape)


_scratch = _Scratch()


class Ditherer:
    """Dithered labels and image for one palette, plane by plane.

    Parameters
    ----------
    encoding : Encoding
        The image's encoding (channels and dtype).
    colors : ndarray, shape (k, C)
        The palette in the image's dtype.
    level : float
        Share of the error passed on, in (0, 1]; 0 (none: each pixel its nearest
        colour) for 8-bit RGB only, whose kernel then searches without diffusing.
    has_alpha : bool
        Whether the last channel is alpha.
    extremes : (float, float)
        The smallest and largest colour value of the image (float images are
        clamped to them).
    painter : Painter, optional
        Gives the undithered labels that start every nearest-colour search of
        the general kernel and that fully transparent pixels keep; needed
        unless the image is RGB without alpha.
    """

    def __init__(self, encoding, colors, level: float, has_alpha: bool, extremes, painter=None):
        self.encoding = encoding
        self.painter = painter
        self.palette = np.ascontiguousarray(colors)
        self.label_dtype = label_dtype(len(colors))
        self.level = float(level)
        self.has_alpha = has_alpha
        self.colors = self.palette.astype(np.float64)
        # Values plus diffused error are clamped to what the image can hold
        # (integers) or holds (floats): clamping to the palette's bounding box
        # instead biased the diffusion (blurred error on the cat at k = 8:
        # 50.7 against 33.1; undithered 42.7).
        dtype = encoding.dtype
        # Integer images receive diffused error in whole steps (see dither_plane).
        self.whole = dtype.kind in "ui"
        if dtype.kind in "ui":
            low, high = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
        else:
            low, high = extremes
        n_color = self.colors.shape[1]
        self.low, self.high = np.full(n_color, low), np.full(n_color, high)
        self.bytewise = (
            n_color == 3
            and dtype.kind in "ui"
            and dtype.itemsize == 1
            and self.level in (0.0, 1.0)
            and _BYTE_CELLS_FROM_K < len(colors) <= BYTE_SEARCH_MAX_K
        )
        # The byte kernel needs no neighbour table (1.2 ms of a 4 ms dithering of the cat).
        self.neighbours = None if self.bytewise else Neighbours(self.colors)

    def paint(self, block, seen=None, distinct=None):
        """``(labels, image, counts, sums, squared)`` of a channel-last block.

        The last two spatial axes of ``block`` are the planes' rows and
        columns; leading axes are dithered plane by plane.  ``seen`` (8-bit
        RGB at level 1 or 0 only: 2**18 uint64, zeroed here) gets a bit set for every
        visible pixel's colour, and ``distinct`` (int64, one) counts them.
        """
        n_color = self.encoding.n_channels
        k = self.colors.shape[0]
        if self.painter is None or (n_color == 3 and not self.has_alpha):
            # The RGB kernels read the undithered labels only for transparent
            # pixels: their lookup (and its 16 MB code table) is spared.
            guess = np.zeros((*block.shape[:-3], 1, 1), dtype=self.label_dtype)
        else:
            guess = self.painter.labels(block.reshape(-1, block.shape[-1]))
            guess = guess.reshape(block.shape[:-1])
        labels = np.empty(block.shape[:-1], dtype=self.label_dtype)
        image = np.empty(block.shape, dtype=block.dtype)
        counts = np.zeros(k, dtype=np.int64)
        sums = np.zeros((k, n_color))
        squared = np.zeros(k)
        alpha_channel = block.shape[-1] - 1 if self.has_alpha else -1
        if block.size == 0:
            # A zero-size dask chunk: nothing to dither (and reshape(-1, ...) is ambiguous).
            return labels, image, counts, sums, squared
        planes = block.reshape(-1, *block.shape[-3:])
        plane_labels = labels.reshape(-1, *labels.shape[-2:])
        plane_guess = guess.reshape(-1, *guess.shape[-2:])
        plane_image = image.reshape(-1, *image.shape[-3:])
        if self.bytewise:
            stats = self._paint_bytes(
                planes, alpha_channel, plane_guess, plane_labels, plane_image, seen, distinct
            )
            return labels, image, *stats
        # numba has no float16: such planes are dithered in float32.
        half = planes.dtype == np.float16
        pixels = planes.astype(np.float32) if half else planes
        palette = self.palette.astype(np.float32) if half else self.palette
        if n_color == 3 and k > _BRUTE_FORCE_K:
            # Candidate lists are per call: a dask chunk's thread has its own.
            n_pixels = int(np.prod(block.shape[:-1]))
            grid = cell_grid(self.low, self.high, k, n_pixels)
        else:
            grid = no_cell_grid()
        order, gaps = self.neighbours.order, self.neighbours.gaps
        for p in range(planes.shape[0]):
            out = np.empty(pixels[p].shape, np.float32) if half else plane_image[p]
            common = (self.colors, order, gaps, plane_guess[p], self.level)
            common += (self.low, self.high, palette, plane_labels[p], out, counts, sums)
            if n_color == 3:
                dither_rgb(
                    pixels[p], alpha_channel, *common, squared, _BRUTE_FORCE_K, self.whole, *grid
                )
            else:
                dither_plane(
                    pixels[p], n_color, alpha_channel, *common, squared, _BRUTE_FORCE_K, self.whole
                )
            if half:
                plane_image[p] = out
        return labels, image, counts, sums, squared

    def _paint_bytes(self, planes, alpha_channel, guess, labels, image, seen, distinct):
        """:meth:`paint` of 8-bit RGB planes; returns the statistics ``(counts, sums,
        squared)``.

        Dithered, the planes are searched in bands of rows by
        :func:`._nearest.dither_rgb_cells` (the labels: the chain from one pixel to the
        next), and each finished band is painted and counted by
        :func:`_paint_byte_rows` on a second core meanwhile
        (:func:`._workers.run_in_step`).  Undithered (level 0) the rows do not wait
        for each other: a large image's rows are split between the cores, each part
        searched and painted on its own, with its own cells and counts.
        """
        k = self.colors.shape[0]
        offset = int(np.iinfo(self.encoding.dtype).min)
        ints = self.palette.astype(np.int64) - offset
        n_planes, height, width = planes.shape[:3]
        seen = np.zeros(0, np.uint64) if seen is None else seen
        distinct = np.zeros(1, np.int64) if distinct is None else distinct
        diffuse = self.level > 0
        n_parts = 1
        if not diffuse and alpha_channel < 0:
            # Rows are independent: one plane of all the planes' rows, in parts on
            # every core when large (the undithered labels of fully transparent pixels
            # are not searched here).
            n_parts = min(n_workers(), labels.size // _PARALLEL_SEARCH_PIXELS + 1)
            planes, labels, image = (
                a.reshape(1, n_planes * height, *a.shape[2:]) for a in (planes, labels, image)
            )
            n_planes, height, guess = 1, n_planes * height, guess[:1]
        # Each part its own statistics; the colours it sees in a bit set of its own.
        stats = [_ByteStats(k, seen)]
        stats += [_ByteStats(k, np.empty(seen.size, np.uint64)) for _ in range(n_parts - 1)]
        compare_all = max(_BYTE_COMPARE_ALL_K, _BRUTE_FORCE_K)

        def search(band):
            segments, cells, errors = band
            for p, first, stop in segments:
                if first == 0:
                    errors.fill(0)  # a new plane
                dither_rgb_cells(
                    planes[p],
                    alpha_channel,
                    offset,
                    ints,
                    guess[p],
                    labels[p],
                    errors,
                    first,
                    stop,
                    diffuse,
                    compare_all,
                    cells.fine_bits,
                    cells.state,
                    cells.blocks,
                    cells.used,
                    _COARSE_BITS,
                    cells.coarse_made,
                    cells.coarse,
                )

        def paint(band, part=0):
            totals = stats[part]
            for p, first, stop in band[0]:
                _paint_byte_rows(
                    planes[p],
                    alpha_channel,
                    offset,
                    ints,
                    self.palette,
                    labels[p],
                    image[p],
                    totals.counts,
                    totals.sums,
                    totals.squared,
                    totals.marks(),
                    totals.distinct,
                    first,
                    stop,
                )

        if n_parts == 1:
            cells = _Cells(k, n_planes * height * width)
            errors = np.zeros((2, 3 * (width + 2)), np.int64)
            bands = [(segments, cells, errors) for segments in _bands(n_planes, height, width)]
            run_in_step(search, paint, bands)
        else:
            bounds = np.linspace(0, height, n_parts + 1).astype(int)

            def part_work(part):
                first, stop = bounds[part], bounds[part + 1]
                errors = np.zeros((2, 3 * (width + 2)), np.int64)  # written, not read
                band = ([(0, first, stop)], _Cells(k, (stop - first) * width), errors)
                search(band)
                paint(band, part)

            run_parts(part_work, list(range(n_parts)), n_parts)
        counts, sums, squared = _ByteStats.total(stats, distinct)
        # Exact integers (< 2**53 below 4e10 pixels): as float64 the same values
        # the float kernels sum pixel by pixel.
        sums += offset * counts[:, np.newaxis]  # the kernel sums levels (value - offset)
        return counts, sums.astype(np.float64), squared.astype(np.float64)


class _Cells:
    """The working arrays of :func:`._nearest.dither_rgb_cells`'s cells for one search
    of a palette of ``k`` colours over at most ``n_pixels``: the calling thread's, reset
    (cells are made as values fall in them, and the palette may differ call to call)."""

    def __init__(self, k: int, n_pixels: int):
        self.fine_bits = _fine_bits(k)
        fine_side, coarse_side = 256 >> self.fine_bits, 256 >> _COARSE_BITS
        self.state = _scratch.get("state", fine_side**3, np.int32)
        self.state.fill(-1)
        lanes = _nearest._LANES
        n_blocks = max(1, min(fine_side**3 * ((k + lanes) // lanes), n_pixels, _MAX_BLOCKS))
        # Blocks and coarse lists are written before they are read.
        self.blocks = _scratch.get("blocks", (4, n_blocks * lanes), np.int32)
        self.coarse_made = _scratch.get("coarse_made", coarse_side**3, np.uint8)
        self.coarse_made.fill(0)
        self.coarse = _scratch.get("coarse", (coarse_side**3, k + 2), np.int32)
        self.used = np.zeros(1, np.int64)


class _ByteStats:
    """Per-colour statistics of :func:`_paint_byte_rows` in levels (exact int64), and
    the bit set ``seen`` of the colours seen (empty: none counted), for one part of an
    image.  ``seen`` is zeroed on its first use (:meth:`marks`), in the thread that
    paints: 2 MB, 36 us that the thread searching the first band no longer waits for."""

    def __init__(self, k: int, seen):
        self.counts = np.zeros(k, np.int64)
        self.sums = np.zeros((k, 3), np.int64)
        self.squared = np.zeros(k, np.int64)
        self.seen = seen
        self.distinct = np.zeros(1, np.int64)
        self._zeroed = False

    def marks(self):
        """The bit set ``seen``, zeroed the first time."""
        if not self._zeroed:
            self.seen.fill(0)
            self._zeroed = True
        return self.seen

    @staticmethod
    def total(parts, distinct):
        """The parts' ``(counts, sums, squared)``; their colours joined into the first
        part's bit set, whose newly seen colours are added to ``distinct[0]``."""
        first = parts[0]
        for part in parts[1:]:
            first.counts += part.counts
            first.sums += part.sums
            first.squared += part.squared
            if first.seen.size:
                new = part.marks() & ~first.marks()
                first.distinct[0] += int(np.bitwise_count(new).sum())
                first.seen |= part.seen
        distinct[0] += first.distinct[0]
        return first.counts, first.sums, first.squared


def searching_pays(data) -> bool:
    """Whether an undithered repaint of the numpy 8-bit RGB ``data`` (channel-last) is
    faster by :func:`paint_bytes` than through its colour histogram: whether an even
    sample of its pixels has many distinct colours (a photo, not a graphic)."""
    n_pixels = int(np.prod(data.shape[:-1]))
    step = max(1, n_pixels // _SAMPLE_PIXELS)
    if data.flags.c_contiguous:
        sample = data.reshape(-1, data.shape[-1])[::step]
    else:  # (no copy of the image for a sample)
        sample = data[np.unravel_index(np.arange(0, n_pixels, step), data.shape[:-1])]
    codes = np.sort(Encoding.for_image(data.dtype, 3).encode(sample[:, :3]))
    distinct = 1 + np.count_nonzero(codes[1:] != codes[:-1])  # (np.unique took 4x as long)
    return 4 * distinct >= len(codes)


def paint_bytes(data, colors, level: float):
    """``(labels, image, counts, sums, squared, n_colors)`` of a numpy 8-bit RGB image
    without alpha (channel-last), fully dithered (``level`` 1) or each pixel its nearest
    RGB colour (0), with no histogram: the statistics are counted as the labels are
    found, and the distinct colours (``n_colors``) in a bit set."""
    encoding = Encoding.for_image(data.dtype, 3)
    ditherer = Ditherer(encoding, colors, level, False, None)
    seen = _scratch.get("seen", _SEEN_WORDS, np.uint64)  # zeroed where it is painted
    distinct = np.zeros(1, np.int64)
    labels, image, counts, sums, squared = ditherer.paint(data, seen, distinct)
    n_colors = int(distinct[0])
    return labels, image, counts, sums, squared, n_colors


# --------------------------------------------------------------------------- images


def paint_image(layout, histogram, index, assignment, colors, dither):
    """Labels and repainted image of a :class:`~._layout.Layout`, and, when
    dithering, the per-label statistics.

    Without dithering the statistics come from the histogram (None here);
    with it they are counted pixel by pixel: ``(counts, sums, squared)``.
    Numpy now, dask lazily.  A dithered dask image is dithered once per block, by
    a task that keeps the block's labels and the statistics the dithering counted;
    its image is painted from its labels (a dithered pixel takes its label's
    colour).  The labels are kept in memory (``persist``) when they are at most
    ``_KEEP_LABELS_BYTES``, so that the pass which counts the statistics now is the
    only one, else they are dithered again when computed (labels and image
    together: once).
    """
    painter = Painter(histogram, layout.encoding, assignment.row_labels, colors)
    if dither:
        ditherer = Ditherer(
            layout.encoding, colors, dither, layout.has_alpha, assignment.extremes, painter
        )
    if not layout.is_dask:
        if dither:
            labels, image, *stats = ditherer.paint(layout.data)
            return labels, layout.restore(image), stats
        pixels = layout.data.reshape(-1, layout.data.shape[-1])
        kind, rows = index
        labels, image = painter.paint(pixels, rows if kind == "rows" else None)
        labels = labels.reshape(layout.spatial_shape)
        return labels, layout.restore(image.reshape(layout.data.shape)), None

    import dask
    import dask.array as da

    # One graph key holds the painter (its lookup table can be 32 MB): every
    # task refers to it instead of carrying a copy.
    key = dask.delayed(ditherer if dither else painter, pure=True)
    data = layout.data
    spatial = data.ndim - 1
    label_meta = np.empty((0,) * spatial, painter.label_dtype)
    image_meta = np.empty((0,) * data.ndim, data.dtype)
    if not dither:
        labels = da.map_blocks(
            _labels_of_block,
            data,
            key,
            drop_axis=spatial,
            dtype=painter.label_dtype,
            meta=label_meta,
        )
        image = da.map_blocks(_image_of_block, data, key, dtype=data.dtype, meta=image_meta)
        return labels, layout.restore(image), None

    # Each block dithered by one task, which keeps its labels and statistics (an object
    # array of one cell a block): dithering and counting a 4 MP image in one block took
    # 0.37 s when the statistics were counted again from the labels by numpy, 0.06 s
    # numpy's whole call.
    one_a_block = tuple((1,) * len(sizes) for sizes in data.chunks[:spatial])
    object_meta = np.empty((0,) * spatial, dtype=object)
    cells = da.map_blocks(
        _dithered_block,
        data,
        key,
        drop_axis=spatial,
        chunks=one_a_block,
        dtype=object,
        meta=object_meta,
    )
    if painter.label_dtype.itemsize * math.prod(layout.spatial_shape) <= _KEEP_LABELS_BYTES:
        # One pass reads and dithers every block, and keeps its labels and counts.
        (cells,) = dask.persist(cells)
    per_block = cells.map_blocks(_stats_of_cell, dtype=object, meta=object_meta).compute()
    stats = [sum(cell[i] for cell in per_block.ravel()) for i in range(3)]
    labels = cells.map_blocks(
        _labels_of_cell, chunks=data.chunks[:spatial], dtype=painter.label_dtype, meta=label_meta
    )
    paired = labels[..., np.newaxis]  # with a channel axis of one chunk, to pair with ``data``
    image = da.map_blocks(_image_of_labels, data, paired, key, dtype=data.dtype, meta=image_meta)
    return labels, layout.restore(image), stats


# Dithered labels of a dask image up to this size stay in memory after the pass that
# counts the statistics (a 128-megapixel image's uint8 labels), rather than being
# dithered again when the result is computed; larger ones would press on the 700 MB
# a lazy run of a 1 GB stack stays within (issue 19), so they are recomputed.
_KEEP_LABELS_BYTES = 128 * 2**20


def _labels_of_block(block, painter):
    return painter.labels_of_block(block)


def _image_of_block(block, painter):
    return painter.image_of_block(block)


def _dithered_block(block, ditherer):
    """A dithered block's ``(labels, (counts, sums, squared))`` in a one-cell object array."""
    labels, _, *stats = ditherer.paint(block)
    cell = np.empty((1,) * (block.ndim - 1), dtype=object)
    cell.flat[0] = (labels, stats)
    return cell


def _stats_of_cell(cell):
    out = np.empty(cell.shape, dtype=object)
    out.flat[0] = cell.flat[0][1]
    return out


def _labels_of_cell(cell):
    return cell.flat[0][0]


def _image_of_labels(block, labels, ditherer):
    """The dithered image of a block from its labels: each pixel its label's colour,
    the channels beyond the colours (alpha) as they were, as :meth:`Ditherer.paint`
    writes it."""
    image = np.empty(block.shape, block.dtype)
    channels = block.shape[-1]
    ditherer.painter.paint_labelled(
        block.reshape(-1, channels), labels.reshape(-1), image.reshape(-1, channels)
    )
    return image
