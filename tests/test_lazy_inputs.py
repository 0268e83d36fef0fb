"""Lazy inputs with awkward chunks through every public function: the numpy result, or
one clear error before any work (issue 17, rows 7-10 and the lazy-input family).

Two kinds of chunking that dask produces in ordinary use:

* a zero-size chunk (slicing, ``da.concatenate`` with an empty piece), and
* unknown (NaN) chunk sizes (boolean indexing of a stack).

Each goes through ``quantize`` (plain, dithered, masked, weighted, both), ``fit_palette``
(plain, masked, weighted) and ``apply_palette`` (plain, dithered), and every result of
``quantize`` and ``apply_palette`` through ``QuantizeResult.cluster_stats`` (whole image and
per frame); a mask or weights come as dask arrays chunked like the image or as numpy arrays.
With a zero-size chunk the result must equal numpy's; with unknown sizes it must equal
numpy's or be the library's own ValueError naming ``compute_chunk_sizes`` -- and when a
per-pixel parameter is refused, its name and the unknown sizes, before any block is computed.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_kmeans_filter import apply_palette, fit_palette, quantize
from napari_kmeans_filter._contract import InvalidParameterError

da = pytest.importorskip("dask.array")

RNG = np.random.default_rng(17)
FRAMES = RNG.integers(0, 256, (3, 20, 40, 3)).astype(np.uint8)
KEEP = np.array([True, False, True])
PALETTE = fit_palette(FRAMES, 6, random_state=0)


class BlockCounter:
    """Counts the blocks of the lazy inputs that dask computes."""

    def __init__(self):
        self.n = 0
        self._lock = threading.Lock()

    def __call__(self, block):
        with self._lock:
            self.n += 1
        return block

    def wrap(self, lazy):
        return lazy.map_blocks(self, dtype=lazy.dtype, meta=np.empty((0,) * lazy.ndim, lazy.dtype))


def zero_size_chunk() -> tuple[np.ndarray, object]:
    """A stack whose frame and row axes have a chunk of size 0, and its numpy twin."""
    return FRAMES, da.from_array(FRAMES, chunks=((1, 0, 2), (10, 0, 10), 40, 3))


def unknown_chunks() -> tuple[np.ndarray, object]:
    """Frames picked by a lazy boolean index: chunk sizes NaN along the frame axis."""
    lazy = da.from_array(FRAMES, chunks=(1, 20, 40, 3))[da.from_array(KEEP, chunks=1)]
    assert np.isnan(lazy.chunks[0][0])
    return FRAMES[KEEP], lazy


def weights_like(spatial_shape) -> np.ndarray:
    return np.linspace(0.5, 2.0, np.prod(spatial_shape)).reshape(spatial_shape)


def mask_like(spatial_shape) -> np.ndarray:
    mask = np.zeros(spatial_shape, bool)
    mask[..., ::2, :] = True
    return mask


def lazy_like(values: np.ndarray, lazy) -> object:
    """``values`` (the eager image's spatial shape) as a dask array chunked like
    ``lazy``'s spatial axes, unknown sizes included."""
    if np.isnan(lazy.chunks[0][0]):
        full = np.zeros(FRAMES.shape[:-1], values.dtype)
        full[KEEP] = values
        return da.from_array(full, chunks=(1, 20, 40))[da.from_array(KEEP, chunks=1)]
    return da.from_array(values, chunks=lazy.chunks[:-1])


def run(call: str, image, spatial_shape, per_pixel=lambda values: values):
    """One public call on ``image``, then the method the call names; arrays returned as numpy.

    ``call`` reads "<function> [dither] [mask] [weight] [-> cluster_stats [frames]]".
    ``spatial_shape`` is the eager twin's (a lazy image of unknown chunk sizes has NaN in its
    shape); ``per_pixel`` turns a mask or weights of that shape into the kind under test.
    """
    function, _, method = call.partition(" -> ")
    name, *options = function.split()
    kwargs = {}
    if "dither" in options:
        kwargs["dither"] = True
    if "mask" in options:
        kwargs["mask"] = per_pixel(mask_like(spatial_shape))
    if "weight" in options:
        kwargs["sample_weight"] = per_pixel(weights_like(spatial_shape))
    if name == "fit_palette":
        palette = fit_palette(image, 6, random_state=0, **kwargs)
        return np.asarray(palette.colors), np.asarray(palette.counts)
    if name == "apply_palette":
        result = apply_palette(image, PALETTE, **kwargs)
    else:
        result = quantize(image, 6, random_state=0, **kwargs)
    if not method:
        return np.asarray(result.image), np.asarray(result.labels)
    stats = result.cluster_stats(frame_axis=0 if method.endswith("frames") else None)
    return {key: np.asarray(value) for key, value in stats.items()}


def assert_same(lazy_result, eager_result) -> None:
    if isinstance(eager_result, dict):
        assert lazy_result.keys() == eager_result.keys()
        for key in eager_result:
            np.testing.assert_allclose(lazy_result[key], eager_result[key], equal_nan=True)
    else:
        for lazy_array, eager_array in zip(lazy_result, eager_result, strict=True):
            np.testing.assert_array_equal(lazy_array, eager_array)


FUNCTIONS = {
    "quantize": ["", "dither", "mask", "weight", "mask weight", "dither mask"],
    "fit_palette": ["", "mask", "weight"],
    "apply_palette": ["", "dither"],
}
METHODS = ["", "cluster_stats", "cluster_stats frames"]
CALLS = [
    " ".join(filter(None, [name, options])) + (f" -> {method}" if method else "")
    for name, all_options in FUNCTIONS.items()
    for options in all_options
    for method in (METHODS if name != "fit_palette" else [""])
]


def _cases():
    for chunking in ("zero-size", "unknown"):
        for call in CALLS:
            function = call.partition(" -> ")[0]
            has_per_pixel = "mask" in function or "weight" in function
            for per_pixel in ("lazy", "numpy") if has_per_pixel else ("none",):
                yield pytest.param(chunking, call, per_pixel, id=f"{chunking}-{call}-{per_pixel}")


@pytest.mark.parametrize(("chunking", "call", "per_pixel"), list(_cases()))
def test_awkward_chunks_give_numpy_result_or_one_clear_error(chunking, call, per_pixel):
    eager, lazy = zero_size_chunk() if chunking == "zero-size" else unknown_chunks()
    spatial_shape = eager.shape[:-1]
    expected = run(call, eager, spatial_shape)
    if chunking == "zero-size" and "dither" in call:
        # Dithering diffuses errors within each chunk (documented), and these chunks split the
        # planes: the twin is the same chunking without the empty pieces.
        twin = da.from_array(FRAMES, chunks=((1, 2), (10, 10), 40, 3))
        expected = run(call, twin, spatial_shape, lambda values: lazy_like(values, twin))
    counter = BlockCounter()

    def make(values):
        return counter.wrap(lazy_like(values, lazy)) if per_pixel == "lazy" else values

    try:
        got = run(call, counter.wrap(lazy), spatial_shape, make)
    except InvalidParameterError as exc:
        # Unknown chunk sizes may be refused, if the message says what to do ...
        assert chunking == "unknown" and "compute_chunk_sizes()" in str(exc), exc
        assert "unknown" in str(exc), exc
        if exc.parameter in ("mask", "sample_weight"):
            # ... and a per-pixel array that cannot be matched to the pixels before any work.
            assert exc.parameter in str(exc) and "unknown" in str(exc), exc
            assert counter.n == 0, f"{counter.n} blocks computed before the error"
        else:
            assert call.endswith("cluster_stats frames"), exc
        return
    assert_same(got, expected)


def test_unknown_sizes_error_says_which_array_to_fix():
    eager, lazy = unknown_chunks()
    mask = mask_like(eager.shape[:-1])
    with pytest.raises(InvalidParameterError, match=r"on the image first") as exc:
        quantize(lazy, 4, mask=mask)
    assert exc.value.parameter == "mask"
    known = da.from_array(eager, chunks=(1, 20, 40, 3))
    with pytest.raises(InvalidParameterError, match=r"on the sample_weight first"):
        quantize(known, 4, sample_weight=lazy_like(weights_like(eager.shape[:-1]), lazy))
    with pytest.raises(InvalidParameterError, match=r"on both the image and the mask first"):
        quantize(lazy, 4, mask=lazy_like(mask, lazy))
    # Doing what the message says works, and gives numpy's result.
    fixed = quantize(lazy.compute_chunk_sizes(), 4, mask=mask, random_state=0)
    np.testing.assert_array_equal(
        np.asarray(fixed.labels), quantize(eager, 4, mask=mask, random_state=0).labels
    )


WEIGHT_CHUNKINGS = {
    "regular": ((10, 10), (40,)),
    "zero-size": ((10, 0, 10), (40,)),
}


@pytest.mark.parametrize("chunks", WEIGHT_CHUNKINGS.values(), ids=WEIGHT_CHUNKINGS.keys())
@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
@pytest.mark.parametrize("function", [quantize, fit_palette])
def test_row9_lazy_weights_are_refused_like_numpy(function, bad, chunks):
    image = FRAMES[0]
    weight = np.ones(image.shape[:-1])
    weight[3, 3] = bad
    with pytest.raises(ValueError) as eager:
        function(image, 4, sample_weight=weight)
    with pytest.raises(ValueError) as lazy:
        function(
            da.from_array(image, chunks=(*chunks, 3)),
            4,
            sample_weight=da.from_array(weight, chunks=chunks),
        )
    assert str(lazy.value) == str(eager.value)


@pytest.mark.parametrize("chunks", WEIGHT_CHUNKINGS.values(), ids=WEIGHT_CHUNKINGS.keys())
@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
@pytest.mark.parametrize("function", [quantize, fit_palette])
def test_row9_lazy_masks_holding_numbers_are_refused_like_numpy(function, bad, chunks):
    """A mask is boolean: one of numbers (negative, NaN or inf among them) is refused, lazy
    as numpy, before any work."""
    image = FRAMES[0]
    mask = np.ones(image.shape[:-1])
    mask[3, 3] = bad
    with pytest.raises(InvalidParameterError) as eager:
        function(image, 4, mask=mask)
    counter = BlockCounter()
    with pytest.raises(InvalidParameterError) as lazy:
        function(
            counter.wrap(da.from_array(image, chunks=(*chunks, 3))),
            4,
            mask=counter.wrap(da.from_array(mask, chunks=chunks)),
        )
    assert str(lazy.value) == str(eager.value)
    assert counter.n == 0


def _no_vote(kind: str, shape) -> dict:
    if kind == "mask all False":
        return {"mask": np.zeros(shape, bool)}
    return {"sample_weight": np.zeros(shape)}


@pytest.mark.parametrize("chunks", WEIGHT_CHUNKINGS.values(), ids=WEIGHT_CHUNKINGS.keys())
@pytest.mark.parametrize("kind", ["mask all False", "weights all 0"])
@pytest.mark.parametrize("function", [quantize, fit_palette])
def test_row9_lazy_per_pixel_arrays_with_no_vote_are_refused_like_numpy(function, kind, chunks):
    image = FRAMES[0]
    eager_kwargs = _no_vote(kind, image.shape[:-1])
    lazy_kwargs = {key: da.from_array(value, chunks=chunks) for key, value in eager_kwargs.items()}
    with pytest.raises(InvalidParameterError) as eager:
        function(image, 4, **eager_kwargs)
    with pytest.raises(InvalidParameterError) as lazy:
        function(da.from_array(image, chunks=(*chunks, 3)), 4, **lazy_kwargs)
    assert lazy.value.parameter == eager.value.parameter
    assert lazy.value.requirement == eager.value.requirement


@pytest.mark.parametrize("chunks", WEIGHT_CHUNKINGS.values(), ids=WEIGHT_CHUNKINGS.keys())
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("function", [quantize, fit_palette, apply_palette])
def test_row9_lazy_float_images_with_nan_or_inf_are_refused_like_numpy(function, bad, chunks):
    image = FRAMES[0].astype(np.float32) / 255
    image[3, 3, 1] = bad
    second = PALETTE.colors.astype(np.float32) / 255 if function is apply_palette else 4
    if function is apply_palette:
        from napari_kmeans_filter import Palette

        second = Palette(second, np.ones(len(second), np.int64))
    with pytest.raises(ValueError) as eager:
        function(image, second)
    with pytest.raises(ValueError) as lazy:
        function(da.from_array(image, chunks=(*chunks, 3)), second)
    assert type(lazy.value) is type(eager.value)
    assert str(lazy.value) == str(eager.value)


@pytest.mark.parametrize("scale", [1e200, 1e300])
def test_row10_huge_floats_give_a_result_or_name_the_range(scale):
    image = np.random.default_rng(0).random((20, 30, 3)) * scale
    try:
        result = quantize(image, 2, random_state=0)
    except ValueError as exc:
        assert "range" in str(exc), exc
        return
    assert np.isfinite(result.palette.colors).all()
    assert len(np.unique(np.asarray(result.labels))) == 2


# --------------------------------------------------------------------------- the estimator

ROWS = FRAMES[:, :2].reshape(-1, 3).astype(np.float64)  # 240 pixels as scikit-learn's rows
ROW_WEIGHTS = np.linspace(0.5, 2.0, len(ROWS))


def awkward_rows(values: np.ndarray, chunking: str):
    """``values`` (rows first) as a dask array with a zero-size chunk or unknown row chunks."""
    rest = values.shape[1:]
    if chunking == "zero-size":
        return da.from_array(values, chunks=((100, 0, 140), *rest))
    keep = da.from_array(np.ones(len(values), bool), chunks=((100, 140),))
    return da.from_array(values, chunks=((100, 140), *rest))[keep]


@pytest.mark.parametrize("weights", ["none", "numpy", "lazy"])
@pytest.mark.parametrize("chunking", ["zero-size", "unknown"])
@pytest.mark.parametrize("method", ["fit", "predict", "transform", "score"])
def test_estimator_with_awkward_chunks_gives_numpy_result_or_one_clear_error(
    method, chunking, weights
):
    from napari_kmeans_filter import KMeansQuantizer

    eager_weight = None if weights == "none" else ROW_WEIGHTS
    lazy_weight = {
        "none": None,
        "numpy": ROW_WEIGHTS,
        "lazy": awkward_rows(ROW_WEIGHTS, chunking),
    }[weights]
    expected = KMeansQuantizer(n_clusters=5, random_state=0).fit(ROWS, sample_weight=eager_weight)
    try:
        if method == "fit":
            lazy = KMeansQuantizer(n_clusters=5, random_state=0)
            lazy.fit(awkward_rows(ROWS, chunking), sample_weight=lazy_weight)
            np.testing.assert_allclose(lazy.cluster_centers_, expected.cluster_centers_)
            np.testing.assert_array_equal(np.asarray(lazy.labels_), expected.labels_)
            assert lazy.inertia_ == pytest.approx(expected.inertia_)
        elif method == "score":
            got = expected.score(awkward_rows(ROWS, chunking), sample_weight=lazy_weight)
            assert got == pytest.approx(expected.score(ROWS, sample_weight=eager_weight))
        else:
            got = np.asarray(getattr(expected, method)(awkward_rows(ROWS, chunking)))
            np.testing.assert_allclose(got, getattr(expected, method)(ROWS))
    except ValueError as exc:
        assert chunking == "unknown" and "compute_chunk_sizes" in str(exc), exc
