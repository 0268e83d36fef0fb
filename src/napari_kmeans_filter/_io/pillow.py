"""Pictures read by Pillow as viewers show them (PNG, JPEG, JPEG 2000, GIF, WebP, BMP,
PBM, and TIFFs that are not plain grey or RGB).

Pillow converts every mode to what viewers show: bilevel to black and white, palettes to
their colours, CMYK, YCbCr and Lab to RGB, tRNS colour keys and palette transparency to
alpha, with the EXIF orientation applied.  Every frame is read (animated GIF, APNG and
WebP, multi-page TIFF) into one (T, Y, X[, C]) stack.  Where Pillow reduces samples to 8
bits (16-bit colour PNG and JPEG 2000) imagecodecs decodes them instead, and large plain
8-bit PNGs too (the same pixels, faster).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageIOError, _describe
from .icc import _matching_profile
from .source import InputImage, resolution_in, resolution_sizes

#: The 8-bit mode viewers show each Pillow mode in (others: RGB, e.g. CMYK, YCbCr, LAB).
#: A tRNS colour key or palette transparency in ``info`` adds alpha.
_VIEW_MODES = {"1": "L", "L": "L", "LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA"}
_VIEW_MODES |= {"RGBa": "RGBA"}
#: The EXIF tag of the orientation (1: as stored).
_ORIENTATION = 0x0112
#: Plain 8-bit PNGs of at least this many pixels are decoded by imagecodecs (libpng), the
#: rest by Pillow: the same pixels, 0.23 s against 0.39 s for a 12 MP photo, 0.44 against
#: 0.69 s at 24 MP; below ~1 MP importing imagecodecs (~10 ms) costs more than it saves.
_FAST_PNG_PIXELS = 2_000_000
#: The PNG chunks a plain PNG may hold: its pixels, and the size, time and text chunks.
#: Others change Pillow's reading (tRNS adds alpha, eXIf turns the picture, acTL makes
#: frames), or libpng checks them and prints its warnings on stderr (iCCP: "known
#: incorrect sRGB profile", gAMA / cHRM / sRGB mismatches): Pillow reads those files.
_PLAIN_PNG_CHUNKS = {b"IHDR", b"IDAT", b"IEND", b"pHYs", b"tIME", b"tEXt", b"zTXt", b"iTXt"}
#: Modes kept as arrays of their own dtype.
_ARRAY_MODES = {"I;16": np.uint16, "I;16L": np.uint16, "I;16B": np.uint16, "I": np.int32}
_ARRAY_MODES |= {"F": np.float32}


def _open_pillow(path: Path, *, tiff: str | None = None) -> InputImage:
    from PIL import UnidentifiedImageError

    try:
        picture = _read_pictures(path)
    except UnidentifiedImageError:
        what = f"a TIFF with {tiff}" if tiff else "not a recognised image format"
        if path.suffix.lower() == ".npy":  # an output format only
            what += " (.npy is written, not read: np.load it and use the Python API)"
        raise ImageIOError(f"cannot read image {path}: {what}") from None
    except ImageIOError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    array, n_frames = picture.array, picture.n_frames
    _keep_decoded(path, array)
    has_channels = array.ndim == 3 + (n_frames > 1)
    n_colour = (3 if array.shape[-1] >= 3 else 1) if has_channels else 1
    icc_profile, icc_notes = _matching_profile(picture.icc_profile, n_colour, picture.mode)
    return InputImage(
        path,
        "pillow",
        array.shape,
        array.dtype.newbyteorder("="),
        lazy=False,
        channel_axis=-1 if has_channels else None,
        alpha=has_channels and array.shape[-1] in (2, 4),
        read=lambda source: _take_decoded(source.path),
        n_frames=n_frames,
        notes=picture.notes + icc_notes,
        icc_profile=icc_profile,
        pixel_sizes=picture.pixel_sizes,
    )


# The pixels decoded by the latest open, until read: Pillow's only way to learn a picture's
# shape and dtype as viewers show it (frames, modes, transparency, orientation) is to
# decode it, and decoding twice cost a second read (a 24 MP PNG: 0.65 s of 4.9 s of a
# command-line run). One slot, so that a batch, which opens every input before reading
# any, holds one decoded picture at most.
_decoded: tuple | None = None


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _keep_decoded(path: Path, array: np.ndarray) -> None:
    global _decoded
    try:
        _decoded = (_file_key(path), array)
    except OSError:
        _decoded = None


def _take_decoded(path: Path) -> np.ndarray:
    """The pixels of ``path``: those the latest open decoded if the file is unchanged since
    (given once), else decoded now."""
    global _decoded
    kept, _decoded = _decoded, None
    if kept is not None:
        try:
            if kept[0] == _file_key(path):
                return kept[1]
        except OSError:
            pass
    return _read_pictures(path).array


@dataclass
class _Picture:
    """What :func:`_read_pictures` found in a picture file."""

    array: np.ndarray
    n_frames: int
    mode: str  # Pillow's mode of the first frame, as stored
    notes: list[str]
    icc_profile: bytes | None
    pixel_sizes: dict | None = None


def _read_pictures(path: Path) -> _Picture:
    """Every frame of a picture file as viewers show it, and what else a user should
    know: the frames' count, notes, the ICC profile, the resolution."""
    from PIL import Image, ImageSequence, TiffImagePlugin

    # Pillow 13's own decoder of uncompressed TIFFs garbles the pixels when the
    # Orientation tag swaps rows and columns (5 to 8); libtiff, which Pillow uses for
    # every compressed TIFF, gets them right.
    libtiff, TiffImagePlugin.READ_LIBTIFF = TiffImagePlugin.READ_LIBTIFF, True
    notes: list[str] = []
    try:
        with Image.open(path) as image:
            n_frames = getattr(image, "n_frames", 1)
            mode, profile = image.mode, image.info.get("icc_profile") or None
            sizes = _picture_sizes(image)
            if sizes and image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                sizes = {"X": sizes["Y"], "Y": sizes["X"]}  # turned by a quarter
            if image.format == "PNG" and _png_is_16bit_colour(path):
                array = _read_png16(path, image, n_frames)
                return _Picture(array, n_frames, mode, notes, profile, sizes)
            if (
                image.format == "PNG"
                and image.width * image.height >= _FAST_PNG_PIXELS
                and _png_is_plain_8bit(path)
            ):
                array = _read_png_plain(path)
                if array is not None:
                    return _Picture(array, 1, mode, notes, profile, sizes)
            if image.format == "JPEG2000" and image.mode in ("LA", "RGB", "RGBA"):
                # Pillow reduces colour and grey+alpha samples of more than 8 bits to 8
                # (16-bit grey it reads whole, as I;16, shifted to the full range).
                array = _read_jpeg2k_deep(path)
                if array is not None:
                    return _Picture(array, 1, mode, notes, profile, sizes)
            frames, reduced = [], 0
            for frame in ImageSequence.Iterator(image):
                if image.format == "TIFF" and _is_reduced_tiff_frame(frame):
                    reduced += 1  # a preview of another page, not a frame of its own
                    continue
                frames.append(_view_frame(frame))
    finally:
        TiffImagePlugin.READ_LIBTIFF = libtiff
    if reduced:
        notes.append(_reduced_note(reduced))
    return _Picture(_stack(frames, path), len(frames), mode, notes, profile, sizes)


#: TIFF's (and EXIF's) ResolutionUnit (1 none, 2 inches, its default; 3 centimetres),
#: XResolution, YResolution.
_EXIF_UNIT, _EXIF_X, _EXIF_Y = 0x0128, 0x011A, 0x011B


def _picture_sizes(image) -> dict | None:
    """The pixel size a picture file states (its resolution), or None.

    Pillow's ``info["dpi"]``, except where it is not the file's: a JPEG's comes from its
    JFIF density, else its EXIF resolution, and Pillow makes up 72 dpi for a JPEG with
    EXIF but neither, and reads only EXIF's XResolution for both axes; so a JPEG's is read
    here. PNG's pHYs and BMP's header count pixels per metre, which Pillow turns into
    dpi: they are kept in metres (a TIFF output then gets pixels per centimetre, not
    299.9994 dpi). A TIFF's in centimetres Pillow turns into dpi too: it is read from
    the tags in the file's unit (a TIFF output keeps it).
    """
    info = image.info
    if image.format == "TIFF":
        tags = image.tag_v2
        unit = {2: "in", 3: "cm"}.get(tags.get(_EXIF_UNIT, 2))
        if unit and _EXIF_X in tags and _EXIF_Y in tags:
            return resolution_sizes((tags[_EXIF_X], tags[_EXIF_Y]), unit)
        return None
    if image.format in ("JPEG", "MPO"):
        unit = {1: "in", 2: "cm"}.get(info.get("jfif_unit"))
        if unit:
            return resolution_sizes(info.get("jfif_density"), unit)
        exif = image.getexif()
        unit = {2: "in", 3: "cm"}.get(exif.get(_EXIF_UNIT, 2))
        if unit and _EXIF_X in exif and _EXIF_Y in exif:
            return resolution_sizes((exif[_EXIF_X], exif[_EXIF_Y]), unit)
        return None
    if image.format in ("PNG", "BMP") and "dpi" in info:
        per_metre = resolution_in(resolution_sizes(info["dpi"], "in"), "m")
        # the file's whole pixels per metre
        return per_metre and resolution_sizes([round(value) for value in per_metre], "m")
    return resolution_sizes(info.get("dpi"), "in")


def _is_reduced_tiff_frame(frame) -> bool:
    """Whether a TIFF page is a reduced-resolution version of another (a preview or
    thumbnail): NewSubfileType bit 0, or the old SubfileType 2."""
    tags = frame.tag_v2
    return bool(int(tags.get(254, 0)) & 1) or int(tags.get(255, 1)) == 2


def _reduced_note(count: int) -> str:
    pages = "page" if count == 1 else "pages"
    return (
        f"left out {count} reduced-resolution {pages} (a preview or pyramid level); "
        "the full-size image is read"
    )


def _view_frame(frame):
    """One frame as viewers show it: a Pillow image in mode L, LA, RGB or RGBA, or an
    array for the 16-bit, 32-bit and float modes."""
    from PIL import ImageOps

    transparency = frame.info.get("transparency")
    indexed = frame.mode in ("P", "PA")
    # 16-bit PGM (and PNG in old Pillow) opens as 32-bit "I": they hold 16 bits at most.
    sixteen_bits = frame.mode == "I" and frame.format in ("PNG", "PPM")
    # TIFFs are turned by Pillow when loaded. Pillow's exif_transpose copies an image that
    # needs no turn (most): 0.15 s for a 24 MP photo.
    frame.load()  # a PNG's eXIf chunk may follow its pixels
    if frame.getexif().get(_ORIENTATION, 1) != 1:
        frame = ImageOps.exif_transpose(frame)
    if frame.mode in _ARRAY_MODES:
        dtype = np.uint16 if sixteen_bits else _ARRAY_MODES[frame.mode]
        array = np.asarray(frame).astype(np.dtype(dtype).newbyteorder("="))
        if transparency is not None and dtype == np.uint16:
            # Pillow clips 16-bit grey to 8 bits when it adds alpha: the tRNS key is
            # applied here, keyed pixels transparent.
            return np.dstack([array, np.where(array == transparency, 0, 65535)]).astype(dtype)
        return array
    mode = _VIEW_MODES.get(frame.mode, "RGB")
    if transparency is not None and mode in ("L", "RGB"):
        mode += "A"
    converted = frame.convert(mode)
    converted.info["indexed"] = indexed
    return converted


def _stack(frames: list, path: Path) -> np.ndarray:
    """The frames as one array: the frame itself, or a (T, Y, X[, C]) stack.

    A GIF's first frame is indexed and Pillow composites the later ones in RGB(A), so
    the 8-bit frames get one mode: colour if any has colour, alpha if any has alpha.  An
    indexed file whose colours are all grey (as this program writes quantised greyscale
    images) reads as greyscale.
    """
    from PIL import Image

    pictures = [frame for frame in frames if isinstance(frame, Image.Image)]
    if pictures:
        if len(pictures) != len(frames):
            raise ImageIOError(f"cannot read {path}: its frames mix 8-bit and other pixels")
        modes = "".join(frame.mode for frame in pictures)
        mode = ("RGB" if "RGB" in modes else "L") + ("A" if "A" in modes else "")
        frames = [np.asarray(frame.convert(mode)) for frame in pictures]
        if mode.startswith("RGB") and pictures[0].info["indexed"]:
            colours = np.stack(frames)[..., :3]
            if (colours == colours[..., :1]).all():
                frames = [
                    frame[..., [0, 3]] if len(mode) == 4 else frame[..., 0] for frame in frames
                ]
    if len(frames) == 1:
        return frames[0]
    if len({(frame.shape, frame.dtype) for frame in frames}) > 1:
        raise ImageIOError(f"cannot read {path}: its {len(frames)} frames differ in size")
    return np.stack(frames)


def _png_is_16bit_colour(path: Path) -> bool:
    """Whether a PNG has 16-bit colour or grey+alpha samples, which Pillow reduces to 8
    bits (16-bit grey it reads whole, as I;16)."""
    with open(path, "rb") as handle:
        header = handle.read(26)
    bit_depth, colour_type = struct.unpack(">BB", header[24:26])
    return bit_depth == 16 and colour_type in (2, 4, 6)


def _png_is_plain_8bit(path: Path) -> bool:
    """Whether a PNG is one frame of 8-bit grey, grey+alpha, RGB or RGBA samples, not
    interlaced, with no chunk but :data:`_PLAIN_PNG_CHUNKS` (and no "Raw profile type exif"
    text, which Pillow reads as EXIF): what Pillow reads as it is and libpng decodes without
    a warning. Reads the chunks' headers only (and the keyword of text chunks)."""
    with open(path, "rb") as handle:
        header = handle.read(33)
        if len(header) < 33 or header[12:16] != b"IHDR":
            return False
        bit_depth, colour_type = struct.unpack(">BB", header[24:26])
        if bit_depth != 8 or colour_type not in (0, 2, 4, 6):
            return False
        if header[28] != 0:
            return False  # interlaced: the same pixels, but libpng warns on stderr
        while True:
            head = handle.read(8)
            if len(head) < 8:
                return False  # truncated: Pillow says what is wrong
            length, kind = struct.unpack(">I4s", head)
            if kind not in _PLAIN_PNG_CHUNKS:
                return False
            if kind == b"IEND":
                return True
            if kind in (b"tEXt", b"zTXt", b"iTXt"):
                keyword = handle.read(min(length, 80)).split(b"\0", 1)[0]
                if b"exif" in keyword.lower():
                    return False
                handle.seek(length - min(length, 80) + 4, 1)
            else:
                handle.seek(length + 4, 1)  # the data and its CRC


def _read_png_plain(path: Path) -> np.ndarray | None:
    """The pixels of a plain 8-bit PNG (:func:`_png_is_plain_8bit`) decoded by imagecodecs;
    None without imagecodecs (Pillow then reads it)."""
    try:
        import imagecodecs
    except ImportError:
        return None
    array = imagecodecs.png_decode(path.read_bytes())
    return array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array


def _read_png16(path: Path, image, n_frames: int) -> np.ndarray:
    try:
        import imagecodecs
    except ImportError:
        raise ImageIOError(
            f"{path} is a 16-bit colour PNG; reading it without losing bits needs "
            "'imagecodecs' (pip install imagecodecs)"
        ) from None
    data = path.read_bytes()
    array = imagecodecs.apng_decode(data) if n_frames > 1 else imagecodecs.png_decode(data)
    key = image.info.get("transparency")
    if isinstance(key, tuple) and array.shape[-1] == 3:
        # imagecodecs ignores a tRNS colour key: applied here, keyed pixels transparent.
        alpha = np.where((array == np.array(key, np.uint16)).all(axis=-1), 0, 65535)
        array = np.concatenate([array, alpha[..., None].astype(np.uint16)], axis=-1)
    return array


def _read_jpeg2k_deep(path: Path) -> np.ndarray | None:
    """A JPEG 2000 file of more than 8 bits per sample, decoded whole by imagecodecs and
    shifted to the full 16-bit range as Pillow shifts 16-bit grey (a 12-bit 4095 reads
    65520); None for 8 bits or less, which Pillow reads exactly."""
    data = path.read_bytes()
    # The codestream's SIZ marker segment (ISO/IEC 15444-1 A.5.1) follows the SOC marker;
    # per component, Ssiz: bit 7 signed, bits 0-6 precision - 1.
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0 or len(data) < start + 42:
        return None  # Pillow reports the damage
    (n_components,) = struct.unpack(">H", data[start + 40 : start + 42])
    sizes = data[start + 42 : start + 42 + 3 * n_components : 3]
    precision = max(((size & 0x7F) + 1 for size in sizes), default=0)
    if precision <= 8:
        return None
    try:
        import imagecodecs
    except ImportError:
        raise ImageIOError(
            f"{path} is a {precision}-bit colour JPEG 2000; reading it without losing bits "
            "needs 'imagecodecs' (pip install imagecodecs)"
        ) from None
    array = imagecodecs.jpeg2k_decode(data)
    if array.dtype == np.uint16 and precision < 16:
        array = array << np.uint16(16 - precision)
    return array
