"""Exact colour histograms: every pixel becomes an integer code, equal colours equal codes.

Clustering the distinct colours weighted by their pixel counts solves the same
k-means problem as clustering every pixel, at the cost of the histogram.  The
same per-chunk function and the same merge rule serve numpy arrays (one chunk)
and dask arrays (a tree of chunks), so both give bit-identical histograms:
every quantity merged here is an integer count or a maximum, which do not
depend on the order of the merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A dense bincount over 2**24 codes (one per 8-bit RGB colour) costs 134 MB of
# int64 but is ~20x faster than sorting 12 M codes; above 24 bits we sort.
DENSE_CODE_BITS = 24
# Floats and wide integers are encoded on 16-bit levels per channel over their
# own value range: 1/65535 of the range is far below what any palette resolves.
LEVEL_BITS = 16
MAX_CODE_BITS = 64
_ENCODE_SLICE = 2**20


@dataclass(frozen=True)
class Encoding:
    """How the values of one channel-last image map to integer codes and back.

    ``level = round((value - offset[c]) / step)`` per channel; the levels of a
    pixel are packed into one unsigned integer, the first channel in the
    highest bits.  ``exact`` means ``step == 1`` on integer data, so a code
    stands for exactly one colour.
    """

    n_channels: int
    bits: int
    offset: tuple[float, ...]
    step: float
    exact: bool
    dtype: np.dtype

    @property
    def total_bits(self) -> int:
        return self.bits * self.n_channels

    @property
    def dense(self) -> bool:
        return self.total_bits <= DENSE_CODE_BITS

    @property
    def code_dtype(self) -> np.dtype:
        # Dense codes are intp because np.bincount and fancy indexing would
        # otherwise make an intp copy of all codes (96 MB for 12 MP).
        if self.dense:
            return np.dtype(np.intp)
        return np.dtype(np.uint32 if self.total_bits <= 32 else np.uint64)

    @classmethod
    def for_image(cls, dtype: np.dtype, n_channels: int, lo=None, hi=None) -> Encoding:
        """Choose the encoding for ``dtype``; ``lo``/``hi`` are per-channel data bounds.

        Bounds are only needed (and only used) for floats and for integers
        wider than 16 bits.
        """
        dtype = np.dtype(dtype)
        native_bits = 8 if dtype.itemsize == 1 else LEVEL_BITS
        bits = min(native_bits, MAX_CODE_BITS // n_channels)
        if dtype.kind in "ui" and dtype.itemsize <= 2:
            offset = (float(np.iinfo(dtype).min),) * n_channels
            step = float(2 ** (native_bits - bits))
        else:
            lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (n_channels,))
            hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (n_channels,))
            offset = tuple(float(v) for v in lo)
            # One step for all channels keeps Euclidean distances undistorted.
            widest = float(np.max(hi - lo))
            if dtype.kind in "ui" and widest < 2**bits:
                step = 1.0
            else:
                step = widest / (2**bits - 1) if widest > 0 else 1.0
        exact = dtype.kind in "ui" and step == 1.0
        return cls(n_channels, bits, offset, step, exact, dtype)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Codes of ``(n, n_channels)`` pixels, as ``code_dtype``."""
        codes = np.empty(pixels.shape[0], dtype=self.code_dtype)
        # Slices of a million pixels keep the per-channel temporaries small
        # (and in cache) instead of several image-sized arrays.
        for start in range(0, pixels.shape[0], _ENCODE_SLICE):
            stop = start + _ENCODE_SLICE
            self._encode_into(pixels[start:stop], codes[start:stop])
        return codes

    def _encode_into(self, pixels, codes):
        code_dtype = self.code_dtype
        max_level = 2**self.bits - 1
        codes[:] = 0
        for channel in range(self.n_channels):
            values = pixels[:, channel]
            if self.exact and self.offset[channel] == 0 and values.dtype.kind == "u":
                levels = values.astype(code_dtype)
            elif self.exact:
                levels = (values.astype(np.int64) - int(self.offset[channel])).astype(code_dtype)
            else:
                scaled = (values.astype(np.float64) - self.offset[channel]) / self.step
                levels = np.clip(np.rint(scaled), 0, max_level).astype(code_dtype)
            if channel:
                codes <<= code_dtype.type(self.bits)
            codes |= levels

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Values (float64, image units) of the colour each code stands for."""
        codes = np.asarray(codes, dtype=self.code_dtype)
        mask = self.code_dtype.type(2**self.bits - 1)
        values = np.empty((codes.shape[0], self.n_channels), dtype=np.float64)
        for channel in range(self.n_channels):
            shift = self.code_dtype.type(self.bits * (self.n_channels - 1 - channel))
            levels = (codes >> shift) & mask
            values[:, channel] = levels * self.step + self.offset[channel]
        return values


@dataclass(frozen=True)
class ColorHistogram:
    """Distinct codes (sorted) with their pixel counts.

    ``votes`` counts only the pixels that take part in the fit (alpha > 0);
    ``representative`` (inexact encodings only) is, per code, the largest
    original value of each channel, so that an image with few distinct float
    colours gets exactly those colours back.
    """

    codes: np.ndarray
    counts: np.ndarray
    votes: np.ndarray
    representative: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.codes.shape[0])


def _sorted_histogram(codes, voting, pixels, exact):
    """Histogram by sorting; also returns the index of each pixel's code."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    is_start = np.empty(sorted_codes.shape[0], dtype=bool)
    is_start[:1] = True
    np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    counts = np.diff(np.append(starts, sorted_codes.shape[0])).astype(np.int64)
    if voting is None:
        votes = counts
    else:
        votes = np.add.reduceat(voting[order].astype(np.int64), starts)
    representative = None
    if not exact:
        representative = np.maximum.reduceat(pixels[order], starts, axis=0)
    inverse = np.empty(codes.shape[0], dtype=np.intp)
    inverse[order] = np.cumsum(is_start) - 1
    return ColorHistogram(sorted_codes[starts], counts, votes, representative), inverse


def _dense_histogram(codes, voting, n_bits):
    counts = np.bincount(codes, minlength=2**n_bits)
    present = np.flatnonzero(counts)
    present_counts = counts[present].astype(np.int64)
    if voting is None:
        # The same object for both marks "every pixel votes" for the merge.
        return ColorHistogram(present.astype(codes.dtype), present_counts, present_counts)
    votes = np.bincount(codes[voting], minlength=2**n_bits)[present]
    return ColorHistogram(present.astype(codes.dtype), present_counts, votes.astype(np.int64))


def histogram_of_pixels(pixels, encoding: Encoding, alpha=None, *, keep_index=False):
    """Histogram of ``(n, C)`` colour pixels; ``alpha`` (n,) marks voters by ``alpha > 0``.

    With ``keep_index`` also returns what maps each pixel to its histogram row
    cheaply later: the codes (dense encodings) or the row index (sorted ones).
    """
    codes = encoding.encode(pixels)
    voting = None if alpha is None else np.asarray(alpha) > 0
    if encoding.dense:
        histogram = _dense_histogram(codes, voting, encoding.total_bits)
        index = codes
    else:
        histogram, index = _sorted_histogram(codes, voting, pixels, encoding.exact)
    return (histogram, index) if keep_index else histogram


def merge_histograms(parts, encoding: Encoding) -> ColorHistogram:
    """Merge histograms of disjoint pixel sets into the histogram of their union."""
    parts = [part for part in parts if len(part)]
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return ColorHistogram(np.zeros(0, encoding.code_dtype), empty, empty)
    if len(parts) == 1:
        return parts[0]
    codes = np.concatenate([part.codes for part in parts])
    counts = np.concatenate([part.counts for part in parts])
    votes = np.concatenate([part.votes for part in parts])
    if encoding.dense:
        # float64 weights are exact for counts below 2**53 pixels.
        size = 2**encoding.total_bits
        merged_counts = np.bincount(codes, weights=counts, minlength=size)
        present = np.flatnonzero(merged_counts)
        if all(part.votes is part.counts for part in parts):
            # Every pixel votes (no alpha): skip a second 2**24-entry table.
            merged_counts = merged_counts[present].astype(np.int64)
            return ColorHistogram(present.astype(encoding.code_dtype), merged_counts, merged_counts)
        merged_votes = np.bincount(codes, weights=votes, minlength=size)[present]
        return ColorHistogram(
            present.astype(encoding.code_dtype),
            merged_counts[present].astype(np.int64),
            merged_votes.astype(np.int64),
        )
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    is_start = np.empty(sorted_codes.shape[0], dtype=bool)
    is_start[:1] = True
    np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    representative = None
    if parts[0].representative is not None:
        stacked = np.concatenate([part.representative for part in parts])[order]
        representative = np.maximum.reduceat(stacked, starts, axis=0)
    return ColorHistogram(
        sorted_codes[starts],
        np.add.reduceat(counts[order], starts),
        np.add.reduceat(votes[order], starts),
        representative,
    )


def lookup_labels(codes, histogram: ColorHistogram, row_labels, encoding: Encoding, label_dtype):
    """Label of each pixel code, given the label of each histogram row."""
    if encoding.dense:
        table = np.zeros(2**encoding.total_bits, dtype=label_dtype)
        table[histogram.codes] = row_labels
        return table[codes]
    rows = np.searchsorted(histogram.codes, codes)
    return np.asarray(row_labels, dtype=label_dtype)[rows]
