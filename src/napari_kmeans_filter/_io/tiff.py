"""TIFF files: read by tifffile whole or chunk by chunk, written whole or band by band.

Grey and RGB TIFFs of any dtype are read by tifffile (stacks, ``extrasamples`` alpha),
chunk by chunk through its zarr store above :data:`LAZY_TIFF_BYTES`.  Samples come last
whatever the ``planarconfig``; pages of one kind written one at a time are the frames of
one stack; reduced-resolution pages (previews, pyramid levels) are left out, with a
note.  Other TIFFs (bilevel, palette, CMYK...) go to Pillow.  ImageJ hyperstacks and
OME-TIFFs keep their axes (T, Z, C...) and the physical size of their pixels: read with
them, and written back as such.  Dask arrays are written a part at a time: tiled TIFFs
one band of rows at a time, ImageJ hyperstacks (which ImageJ reads in strips only) one
run of whole pages at a time.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageIOError, _describe, _require_zarr, _shorten
from .icc import _matching_profile
from .pillow import _open_pillow, _reduced_note
from .source import LENGTH_UNITS, InputImage, resolution_in, resolution_sizes
from .zarr import _lazy_array

#: TIFFs whose pixels would take more than this many bytes are read chunk by chunk even
#: without ``--chunked`` (a fixed number, so that the behaviour is the same everywhere).
LAZY_TIFF_BYTES = 1 << 30

#: Size aimed at for one chunk of a TIFF read, or one band of a TIFF written, chunk by
#: chunk.
CHUNK_BYTES = 64 * 2**20


_TILE = 256  # rows and columns of the tiles of TIFFs written chunk by chunk


#: TIFF Orientation -> (swap rows and columns, axes flipped after that), as viewers
#: apply it; tifffile returns the pixels in stored order.
_ORIENTATIONS = {2: (False, "X"), 3: (False, "YX"), 4: (False, "Y"), 5: (True, "")}
_ORIENTATIONS |= {6: (True, "X"), 7: (True, "YX"), 8: (True, "Y")}


#: tifffile's messages about a damaged page chain or a tag entry it cannot decode (a
#: type or offset no writer produces).  tifffile reads on without them: a broken page
#: chain gives fewer frames, a broken strip table missing pixels, and a broken tag of
#: any kind says the bytes around it cannot be trusted either.  (Its messages about
#: ImageJ, OME or shaped metadata it cannot parse are only notes: it falls back to the
#: pages themselves.)
_TIFF_STRUCTURE = re.compile(r"TiffPages? |TiffTag")


def _open_tiff(path: Path, *, chunked: bool, messages: list[str]) -> InputImage:
    """:func:`_parse_tiff`, refusing a TIFF whose structure tifffile found damaged
    (``messages``: what the tifffile logger says, collected as it says it)."""
    start = len(messages)
    try:
        source = _parse_tiff(path, chunked=chunked)
    except ImageIOError:
        _check_tiff_structure(path, messages[start:])
        raise
    _check_tiff_structure(path, messages[start:])
    return source


def _check_tiff_structure(path: Path, messages: list[str]) -> None:
    damage = [message for message in messages if _TIFF_STRUCTURE.search(message)]
    if damage:
        raise ImageIOError(
            f"cannot read image {path}: its TIFF structure is damaged ({_shorten(damage[0])})"
        )


def _parse_tiff(path: Path, *, chunked: bool) -> InputImage:
    import tifffile
    from tifffile import COMPRESSION, EXTRASAMPLE, PHOTOMETRIC

    notes = []
    try:
        with tifffile.TiffFile(path) as tif:
            # tifffile's series are the file's images: a shaped stack, one image per
            # page written on its own, a reduced-resolution page (NewSubfileType bit 0,
            # a preview viewers skip) or the levels of a pyramid (series.levels).
            kept, images, reduced = [], [], 0
            for index, series in enumerate(tif.series):
                if series.keyframe.is_reduced:
                    reduced += len(series.levels)
                    continue
                kept.append(index)
                images.append(series)
                for level in series.levels[1:]:
                    # tifffile also makes a smaller page that follows a larger one a
                    # level; unless the file says it is reduced (or a SubIFD, where
                    # pyramids keep their levels) it is an image of its own.
                    if level.keyframe.is_reduced or level.keyframe.is_subifd:
                        reduced += 1
                    else:
                        images.append(level)
            if not images:
                what = "only reduced-resolution pages" if reduced else "no image"
                raise ImageIOError(f"cannot read image {path}: it holds {what} (damaged?)")
            if reduced:
                notes.append(_reduced_note(reduced))
            if len({_tiff_kind(image) for image in images}) > 1:
                raise ImageIOError(_mixed_tiff_message(path, images))
            # tifffile reads what is there: pixels beyond the end of a file cut short
            # would come back as an error at best, as zeros at worst.
            size = os.path.getsize(path)
            for image in images:
                for one in image.pages:
                    pieces = zip(one.dataoffsets, one.databytecounts, strict=False)
                    if max((offset + count for offset, count in pieces), default=0) > size:
                        raise ImageIOError(
                            f"cannot read image {path}: the file is cut short (its pixels "
                            f"reach beyond its {size} bytes)"
                        )
            series = images[0]
            page = series.keyframe
            shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes
            if len(kept) > 1:
                # Pages written one at a time (tifffile sees one series each) but all of
                # one kind: the frames of one stack, as viewers page through them.
                shape, axes = (len(kept), *shape), "I" + axes
            photometric, extra = PHOTOMETRIC(page.photometric), tuple(page.extrasamples)
            picture = not (
                photometric in (PHOTOMETRIC.MINISBLACK, PHOTOMETRIC.RGB)
                or (photometric == PHOTOMETRIC.YCBCR and page.compression == COMPRESSION.JPEG)
            )
            if picture or page.bitspersample == 1 or EXTRASAMPLE.ASSOCALPHA in extra:
                # Bilevel, MinIsWhite, palette, CMYK, uncompressed YCbCr, Lab, alpha
                # premultiplied: tifffile returns the stored samples, Pillow what
                # viewers show.
                described = f"{page.bitspersample}-bit {photometric.name} samples"
                return _open_pillow(path, tiff=described)
            orientation = _ORIENTATIONS.get(page.tags.valueof(274, 1))
            profile = page.tags.valueof(34675)  # InterColorProfile
            # ImageJ hyperstacks and OME-TIFFs name their axes (T, Z, C...); tifffile's
            # own names for other files (Q, I) say nothing.
            named = (tif.is_imagej or tif.is_ome) and len(kept) == 1
            imagej = dict(tif.imagej_metadata or {}) if tif.is_imagej else None
            pixel_sizes = _pixel_sizes(tif, page, imagej) if named else _resolution(page)
    except ImageIOError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    order, names = _tiff_view_axes(axes, orientation)
    if pixel_sizes and orientation and orientation[0]:
        # rows and columns swapped for viewing: so are the pixels' width and height
        pixel_sizes = {{"X": "Y", "Y": "X"}.get(a, a): size for a, size in pixel_sizes.items()}
    shape = tuple(shape[i] for i in order)
    if "S" in names:
        channel_axis, n_colour = -1, 3 if photometric == PHOTOMETRIC.RGB else 1
    else:
        channel_axis = -1 if len(shape) >= 3 and shape[-1] in (3, 4) else None
        n_colour = 1
    icc_profile, icc_notes = _matching_profile(profile, n_colour, photometric.name)
    return InputImage(
        path,
        "tiff",
        shape,
        dtype.newbyteorder("="),
        lazy=chunked or math.prod(shape) * dtype.itemsize > LAZY_TIFF_BYTES,
        channel_axis=channel_axis,
        alpha="S" in axes and extra[-1:] == (EXTRASAMPLE.UNASSALPHA,),
        read=lambda source: _read_tiff(source, kept, order, names, orientation),
        notes=notes + icc_notes,
        icc_profile=icc_profile,
        axes=tuple(names) if named else None,
        imagej=imagej,
        pixel_sizes=pixel_sizes,
    )


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _pixel_sizes(tif, page, imagej) -> dict[str, tuple[float, str]] | None:
    """The physical size of a pixel along X, Y (and Z) of an OME-TIFF or ImageJ file.

    OME-TIFF: the first image's ``Pixels`` ``PhysicalSizeX/Y/Z`` and their units (µm
    when the file names none, as OME-XML says).  ImageJ: the XResolution and
    YResolution tags, in pixels per ``unit`` of the ImageJ description (inches or
    centimetres by the ResolutionUnit tag when it names none), and ``spacing`` along Z,
    as ImageJ reads its calibration.  None when the file gives no size in a length unit.
    """
    import tifffile
    from tifffile import RESUNIT

    sizes = {}
    if tif.is_ome:
        try:
            image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        except Exception:  # OME-XML tifffile cannot parse: its pages are read all the same
            return None
        for axis in "XYZ":
            value = pixels.get(f"PhysicalSize{axis}")
            unit = LENGTH_UNITS.get(str(pixels.get(f"PhysicalSize{axis}Unit", "µm")))
            if _positive(value) and unit:
                sizes[axis] = (float(value), unit)
    elif imagej is not None:
        unit = imagej.get("unit") or {RESUNIT.INCH: "in", RESUNIT.CENTIMETER: "cm"}.get(
            page.resolutionunit
        )
        unit = LENGTH_UNITS.get(str(unit))
        if unit:
            for axis, resolution in zip("XY", page.resolution, strict=True):
                if _positive(resolution):
                    sizes[axis] = (1.0 / resolution, unit)
            if _positive(imagej.get("spacing")):
                sizes["Z"] = (float(imagej["spacing"]), unit)
    return sizes or None


def _resolution(page) -> dict[str, tuple[float, str]] | None:
    """A plain TIFF's XResolution and YResolution as pixel sizes, when its ResolutionUnit
    is inches (the default) or centimetres: with no unit they give an aspect ratio only.
    Read from the tags themselves: tifffile's ``page.resolution`` makes a missing one 1
    and reads n/0 as n."""
    from tifffile import RESUNIT

    unit = {RESUNIT.INCH: "in", RESUNIT.CENTIMETER: "cm"}.get(page.resolutionunit)
    values = [_rational(page.tags.valueof(code)) for code in (282, 283)]
    return resolution_sizes(values, unit) if unit and None not in values else None


def _rational(value) -> float | None:
    """A TIFF RATIONAL (numerator, denominator) or floating-point tag value, or None."""
    if isinstance(value, tuple) and len(value) == 2:
        numerator, denominator = value
        return numerator / denominator if denominator else None
    return float(value) if isinstance(value, int | float) else None


def _tiff_kind(series) -> tuple:
    """What must agree for images of a TIFF to be frames of one stack."""
    page = series.keyframe
    return (
        tuple(series.shape),
        np.dtype(series.dtype),
        series.axes,
        int(page.photometric),
        tuple(int(value) for value in page.extrasamples),
        page.tags.valueof(274, 1),  # Orientation
    )


def _mixed_tiff_message(path: Path, series: list) -> str:
    """Why the images of a TIFF cannot be read as one stack, in the words of what differs."""
    from tifffile import PHOTOMETRIC

    shapes = [tuple(one.shape) for one in series]
    if len(set(shapes)) > 1:
        what = f"of different shapes {' '.join(map(str, shapes))}"
    else:
        described = [
            f"{np.dtype(one.dtype).name} {PHOTOMETRIC(one.keyframe.photometric).name}"
            for one in series
        ]
        what = f"of shape {shapes[0]} but different kinds ({', '.join(described)})"
    return f"cannot read {path}: it holds {len(series)} images {what}; save them as separate files"


def _tiff_view_axes(axes: str, orientation) -> tuple[list[int], str]:
    """The transposition of the stored axes that shows the image as viewers do, and the
    axes' names after it: rows and columns swapped as the Orientation tag says, samples
    last whatever the planar configuration (a planar RGB TIFF is an RGB picture)."""
    order = list(range(len(axes)))
    if orientation and orientation[0]:
        y, x = axes.index("Y"), axes.index("X")
        order[y], order[x] = x, y
    if "S" in axes:
        s = axes.index("S")
        order = [axis for position, axis in enumerate(order) if position != s] + [order[s]]
        axes = axes.replace("S", "") + "S"
    return order, axes


def _tiff_stack(tif, series: list[int]):
    """The series of ``tif`` numbered ``series`` as one tifffile series, stacked along a
    new first axis: pages written one at a time are one series each, and reading them
    as one series costs one parse of the file and, lazily, one zarr store (2,000 pages:
    a few seconds, not a graph of 2,000 arrays)."""
    import tifffile

    if len(series) == 1:
        return tif.series[series[0]]
    first = tif.series[series[0]]
    pages = [page for index in series for page in tif.series[index].pages]
    shape = (len(series), *first.shape)
    return tifffile.TiffPageSeries(
        pages, shape, first.dtype, "I" + first.axes, parent=tif, kind="pages"
    )


def _read_tiff(source: InputImage, series: list[int], order: list[int], names: str, orientation):
    import tifffile

    if source.lazy:
        import dask.array as xp

        zarr = _require_zarr("reading a TIFF chunk by chunk")
        tif = tifffile.TiffFile(source.path)
        source._closers.append(tif)  # the store reads through its file handle
        store = _tiff_stack(tif, series).aszarr(level=0)
        source._closers.append(store)
        array = _lazy_array(zarr.open_array(store, mode="r"), source.path, str(series))
    else:
        xp = np
        with tifffile.TiffFile(source.path) as tif:
            array = _tiff_stack(tif, series).asarray(level=0)
    array = xp.transpose(array, order)
    for name in orientation[1] if orientation else "":
        array = xp.flip(array, axis=names.index(name))
    if source.lazy:
        from dask.array.core import normalize_chunks

        # TIFF strips are often a few rows each: chunks of whole rows and samples, of
        # about CHUNK_BYTES, instead.
        whole = {names.index("X"), names.index("S") if "S" in names else -1}
        wanted = tuple(-1 if axis in whole else "auto" for axis in range(array.ndim))
        array = array.rechunk(
            normalize_chunks(wanted, array.shape, limit=CHUNK_BYTES, dtype=array.dtype)
        )
    return array


def can_stream_tiff(ndim: int, channel_axis: int | None, axes=None) -> bool:
    """Whether :func:`write_tiff_from_dask` handles this layout.

    Channels last or none; or, with ``axes`` naming the array's axes (an ImageJ
    hyperstack's, an OME-TIFF's: :func:`napari_kmeans_filter._io.output_metadata`), any
    array ending in Y and X, whose leading axes (channels among them) are pages.
    """
    if channel_axis is None or channel_axis % ndim == ndim - 1:
        return True
    return axes is not None and "".join(axes).upper().endswith("YX")


def write_tiff_from_dask(
    path,
    array,
    channel_axis,
    alpha=None,
    *,
    progress=None,
    icc_profile=None,
    axes=None,
    imagej=None,
    pixel_sizes=None,
) -> None:
    """Write a dask array as a zlib-compressed TIFF, a part at a time, keeping named axes.

    Memory holds one part: about :data:`CHUNK_BYTES`, computed one after the other.
    ``axes``, ``imagej`` and ``pixel_sizes`` are those of :func:`write_tiff`, which
    writes the same layouts from memory:

    * an ImageJ hyperstack (``imagej`` and ``axes`` it can hold) is written in strips,
      as ImageJ reads them, from runs of whole pages (planes, with their RGB samples)
      in ImageJ's page order: a part is one page when a page is larger;
    * every other TIFF is tiled, and tifffile takes the tiles in file order (page by
      page, row of tiles by row of tiles), so the array is cut into bands of whole rows,
      a multiple of the tile height: an OME-TIFF (``axes`` OME can hold, with
      ``pixel_sizes`` as ``PhysicalSizeX/Y/Z``), or the layout :func:`_tiff_layout` gives
      ``channel_axis`` and ``alpha`` (channels last, or among the pages when ``axes``
      end in Y and X: :func:`can_stream_tiff`).

    ``progress(fraction)`` is called as each part is computed (the last call: 1.0);
    ``icc_profile`` is embedded.
    """
    import tifffile

    named = _named_layout(array.shape, array.dtype, axes, imagej, pixel_sizes)
    nbytes = math.prod(array.shape) * array.dtype.itemsize
    common = {
        "shape": array.shape,
        "dtype": array.dtype,
        "compression": "zlib",
        "iccprofile": icc_profile or None,
    }
    if named is not None and named.get("imagej"):
        # ImageJ reads strips only (no tiles); tifffile cuts each page it is given into
        # strips. BigTIFF only past classic TIFF's 4 GB, where tifffile itself switches
        # (ImageJ 1.x reads classic TIFF; Fiji and Bio-Formats read both).
        samples = named["metadata"]["axes"].endswith("S")
        n_lead = array.ndim - 2 - samples
        tifffile.imwrite(
            path,
            _computed_pages(_page_runs(array, n_lead), n_lead, progress),
            bigtiff=nbytes > 2**32 - 2**25,
            **common,
            **named,
        )
        return
    if named is not None:
        samples = named["metadata"]["axes"].endswith("S")
        layout = named
    elif channel_axis is not None and channel_axis % array.ndim == array.ndim - 1:
        samples = True
        layout = _tiff_layout(array.shape, array.dtype, channel_axis, alpha)
        layout |= _resolution_tags(pixel_sizes)
    else:
        samples = False  # no channels, or channels among the pages
        layout = {"photometric": "minisblack"} | _resolution_tags(pixel_sizes)
    y = array.ndim - 2 - samples
    row_bytes = array.dtype.itemsize * math.prod(array.shape[y + 1 :])
    rows = max(1, CHUNK_BYTES // (row_bytes * _TILE)) * _TILE
    array = array.rechunk((1,) * y + (rows,) + array.shape[y + 1 :])
    n_blocks = math.prod(array.numblocks)

    def tiles():
        for number, index in enumerate(np.ndindex(*array.numblocks), start=1):
            band = np.asarray(array.blocks[index].compute())[(0,) * y]
            # Told as the band is computed: tifffile asks for no tile past the last one,
            # so a report after a band's tiles never came for the last band.
            if progress is not None:
                progress(number / n_blocks)
            for top in range(0, band.shape[0], _TILE):
                for left in range(0, band.shape[1], _TILE):
                    yield band[top : top + _TILE, left : left + _TILE]

    tifffile.imwrite(
        path,
        tiles(),
        tile=(_TILE, _TILE),
        bigtiff=nbytes > 2**31,  # size unknown yet
        **common,
        **layout,
    )


def _page_runs(array, n_pages_axes: int):
    """``array`` rechunked into runs of whole pages (its last ``ndim - n_pages_axes``
    axes) of about :data:`CHUNK_BYTES`, whose blocks in C order hold the pages in C
    order: the innermost page axes whole as long as they fit, then one partly, every
    axis outside it one page at a time."""
    page_shape = array.shape[n_pages_axes:]
    budget = max(1, CHUNK_BYTES // max(1, array.dtype.itemsize * math.prod(page_shape)))
    lead = []
    for size in reversed(array.shape[:n_pages_axes]):
        take = max(1, min(size, budget))
        lead.append(take)
        budget = budget // size if take == size else 0
    return array.rechunk((*reversed(lead), *page_shape))


def _computed_pages(array, n_lead: int, progress):
    """The pages of a :func:`_page_runs` array (``n_lead`` page axes) in file order, one
    block computed at a time; ``progress`` is told as each block is computed (tifffile
    asks for no item past the last page, so a report after it would never come)."""
    page_shape = array.shape[n_lead:]
    n_blocks = math.prod(array.numblocks)
    for number, index in enumerate(np.ndindex(*array.numblocks), start=1):
        block = np.asarray(array.blocks[index].compute())
        if progress is not None:
            progress(number / n_blocks)
        yield from block.reshape(-1, *page_shape)


#: ImageJ hyperstack axes, in the one order ImageJ accepts (any may be missing but Y, X).
_IMAGEJ_AXES = "TZCYXS"
#: Sample types ImageJ opens (tifffile refuses others with ``imagej=True``).
_IMAGEJ_DTYPES = ("uint8", "uint16", "float32")
#: ImageJ metadata kept from an input hyperstack (calibration; the rest is recomputed).
_IMAGEJ_KEPT = ("spacing", "unit", "finterval", "fps", "loop", "mode")
#: ImageJ's names of OME length units where they differ (it reads "micron" everywhere).
_IMAGEJ_UNITS = {"µm": "micron", "in": "inch"}


def imagej_axes(axes, shape, dtype) -> str | None:
    """``axes`` as the axes of an ImageJ hyperstack of that shape and dtype, or None.

    ImageJ holds T, Z, C, Y, X (and S, RGB samples of uint8) in that order, of uint8,
    uint16 or float32 samples.
    """
    if axes is None:
        return None
    text = "".join(axes).upper()
    if len(text) != len(shape) or len(set(text)) != len(text) or not {"Y", "X"} <= set(text):
        return None
    if any(axis not in _IMAGEJ_AXES for axis in text) or text != "".join(
        axis for axis in _IMAGEJ_AXES if axis in text
    ):
        return None
    if np.dtype(dtype).name not in _IMAGEJ_DTYPES:
        return None
    if "S" in text and (np.dtype(dtype) != np.uint8 or shape[-1] != 3):
        return None
    return text


def ome_tiff_axes(axes, shape) -> str | None:
    """``axes`` as the axes of an OME-TIFF of that shape, or None.

    OME-TIFF holds T, C and Z in any order before Y and X (OME's dimension orders
    XYZCT ... XYTZC), and RGB samples (S, three) last.
    """
    if axes is None:
        return None
    text = "".join(axes).upper()
    if len(text) != len(shape) or len(set(text)) != len(text):
        return None
    planes = text.removesuffix("S")
    if not planes.endswith("YX") or any(axis not in "TCZ" for axis in planes[:-2]):
        return None
    if text.endswith("S") and shape[-1] != 3:
        return None
    return text


def _named_layout(shape, dtype, axes, imagej, pixel_sizes) -> dict | None:
    """``tifffile.imwrite`` keywords of an ImageJ hyperstack or OME-TIFF with ``axes``
    (see :func:`write_tiff`), or None for a plain TIFF."""
    hyperstack = imagej_axes(axes, shape, dtype) if imagej is not None else None
    if hyperstack is not None:
        metadata = {key: value for key, value in imagej.items() if key in _IMAGEJ_KEPT}
        if "C" not in hyperstack:
            metadata.pop("mode", None)  # composite/colour display needs channels
        metadata["axes"] = hyperstack
        photometric = "rgb" if "S" in hyperstack else "minisblack"
        layout = {"imagej": True, "photometric": photometric, "metadata": metadata}
        return layout | _imagej_calibration(pixel_sizes, metadata)
    ome = ome_tiff_axes(axes, shape)
    # A plain 2-D image needs OME-XML only to carry its pixel size.
    if ome is not None and (ome not in ("YX", "YXS") or pixel_sizes):
        metadata = {"axes": ome}
        for axis, (value, unit) in sorted((pixel_sizes or {}).items()):
            metadata[f"PhysicalSize{axis}"] = value
            metadata[f"PhysicalSize{axis}Unit"] = unit
        photometric = "rgb" if ome.endswith("S") else "minisblack"
        return {"ome": True, "photometric": photometric, "metadata": metadata}
    return None


def _imagej_calibration(pixel_sizes, metadata: dict) -> dict:
    """The ``resolution`` keyword of an ImageJ hyperstack from ``pixel_sizes``, its
    ``unit`` and Z ``spacing`` set in ``metadata`` where the input's ImageJ metadata did
    not already give them.  ImageJ has one unit for X, Y and Z: without X and Y sizes in
    one unit there is no calibration, and a Z size in another unit is left out."""
    if not pixel_sizes or "X" not in pixel_sizes or "Y" not in pixel_sizes:
        return {}
    (width, unit), (height, y_unit) = pixel_sizes["X"], pixel_sizes["Y"]
    if y_unit != unit:
        return {}
    metadata.setdefault("unit", _IMAGEJ_UNITS.get(unit, unit))
    if "Z" in pixel_sizes and pixel_sizes["Z"][1] == unit:
        metadata.setdefault("spacing", pixel_sizes["Z"][0])
    # pixels per unit; ImageJ's ResolutionUnit stays NONE (tifffile's default for ImageJ)
    return {"resolution": (1.0 / width, 1.0 / height)}


def write_tiff(
    path,
    array,
    channel_axis,
    alpha=None,
    *,
    icc_profile=None,
    axes=None,
    imagej=None,
    pixel_sizes=None,
) -> None:
    """Write an in-memory array as a zlib-compressed TIFF, keeping named axes.

    With ``imagej`` (the input's ImageJ metadata) and ``axes`` an ImageJ hyperstack can
    hold (:func:`imagej_axes`: e.g. "TZCYX" of the input, "TZYX" for its labels), an
    ImageJ hyperstack with those axes and the input's calibration (``pixel_sizes`` as
    its X/Y resolution, unit and Z spacing).  Otherwise, with ``axes`` an OME-TIFF can
    hold (:func:`ome_tiff_axes`: an OME-TIFF or OME-Zarr input's), an OME-TIFF with
    those axes and ``pixel_sizes`` as ``PhysicalSizeX/Y/Z`` (a plain 2-D image without
    pixel sizes is a plain TIFF).  Otherwise the layout :func:`_tiff_layout` gives
    ``channel_axis`` and ``alpha``.

    Parameters
    ----------
    pixel_sizes : dict, optional
        ``{"X": (value, unit), "Y": ..., "Z": ...}``, OME length units
        (:attr:`InputImage.pixel_sizes`).
    """
    import tifffile

    options = {"compression": "zlib", "iccprofile": icc_profile or None}
    layout = _named_layout(array.shape, array.dtype, axes, imagej, pixel_sizes)
    if layout is None:
        layout = _tiff_layout(array.shape, array.dtype, channel_axis, alpha)
        layout |= _resolution_tags(pixel_sizes)
    tifffile.imwrite(path, array, **options, **layout)


def _resolution_tags(pixel_sizes) -> dict:
    """The ``resolution`` and ``resolutionunit`` keywords of a plain TIFF with
    ``pixel_sizes`` along X and Y: pixels per inch when they are in inches, else per
    centimetre; none without both."""
    unit = "in" if (pixel_sizes or {}).get("X", (0, ""))[1] == "in" else "cm"
    resolution = resolution_in(pixel_sizes, unit)
    if resolution is None:
        return {}
    return {"resolution": resolution, "resolutionunit": "INCH" if unit == "in" else "CENTIMETER"}


def _tiff_layout(shape, dtype, channel_axis, alpha) -> dict:
    """Photometric interpretation, planar layout and alpha tag that round-trip ``shape``."""
    if channel_axis is None:
        return {"photometric": "minisblack"}
    ndim = len(shape)
    axis = channel_axis % ndim
    channels = shape[axis]
    alpha = bool(channels == 4 and axis == ndim - 1 if alpha is None else alpha)
    # tifffile writes RGB samples of every integer and float dtype (SampleFormat says
    # which): three colour channels are tagged RGB whatever their dtype.
    rgb = channels - alpha == 3 and np.dtype(dtype).kind in "uif"
    layout: dict[str, Any] = {"photometric": "rgb" if rgb else "minisblack"}
    if axis in (ndim - 1, ndim - 3):
        layout["planarconfig"] = "contig" if axis == ndim - 1 else "separate"
    extra = channels - (3 if rgb else 1)
    if extra > 0:
        layout["extrasamples"] = ("unspecified",) * (extra - alpha) + ("unassalpha",) * alpha
    return layout
