"""PGM, PPM, PAM and colour PFM files, read here (Pillow reduces 16-bit colour to 8 bits and
cannot read PAM or colour PFM).

Every depth (1 to 16 bits, grey, RGB, with alpha, several images in one file) is read to
uint8 or uint16, samples scaled to the full range of the dtype as Pillow scales grey
(``value * top // maxval``); colour PFM to float32.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .errors import ImageIOError, _describe
from .source import InputImage

#: The netpbm formats read here: plain and raw grey (P2, P5), colour (P3, P6), PAM (P7)
#: and colour PFM (PF, which Pillow cannot read).  Bilevel PBM (P1, P4) and grey PFM
#: (Pf) are left to Pillow, which reads them whole.
_NETPBM_MAGIC = re.compile(rb"P[23567F]\s")
#: One header number, after whitespace and comments (netpbm's "# ... end of line").
_NETPBM_NUMBER = re.compile(rb"(?:\s|#[^\r\n]*)*(\d+)")
#: One sample of a plain (P2, P3) raster.
_PLAIN_SAMPLE = re.compile(rb"\s*(\d+)")
#: PAM tuple types -> (channels, alpha); others are accepted by their DEPTH, as
#: netpbm's own pamtopng does.
_PAM_TUPLES = {
    "BLACKANDWHITE": (1, False),
    "GRAYSCALE": (1, False),
    "RGB": (3, False),
    "BLACKANDWHITE_ALPHA": (2, True),
    "GRAYSCALE_ALPHA": (2, True),
    "RGB_ALPHA": (4, True),
}


def _open_netpbm(path: Path) -> InputImage:
    try:
        array, n_frames = _read_netpbm(path)
    except ImageIOError:
        raise
    except Exception as exc:
        raise ImageIOError(f"cannot read image {path}: {_describe(exc)}") from exc
    has_channels = array.ndim == 3 + (n_frames > 1)
    return InputImage(
        path,
        "netpbm",
        array.shape,
        array.dtype,
        lazy=False,
        channel_axis=-1 if has_channels else None,
        alpha=has_channels and array.shape[-1] in (2, 4),
        read=lambda source: _read_netpbm(source.path)[0],
        n_frames=n_frames,
    )


def _read_netpbm(path: Path) -> tuple[np.ndarray, int]:
    """Every image of a PGM, PPM or PAM file (netpbm streams may hold several, one after
    the other: they are frames) as uint8 (maxval up to 255) or uint16."""
    data = path.read_bytes()
    frames, offset = [], 0
    while True:
        frame, offset = _netpbm_image(data, offset, path)
        frames.append(frame)
        following = data[offset:].lstrip()
        if not _NETPBM_MAGIC.match(following[:3]):
            break  # trailing bytes that start no image hold no pixels
        offset = len(data) - len(following)
    if len(frames) == 1:
        return frames[0], 1
    if len({(frame.shape, frame.dtype) for frame in frames}) > 1:
        raise ImageIOError(f"cannot read {path}: its {len(frames)} images differ in size or depth")
    return np.stack(frames), len(frames)


def _pfm_colour(data: bytes, offset: int, corrupt) -> tuple[np.ndarray, int]:
    """A colour PFM (Portable Float Map, netpbm's pfm format): float32 RGB, rows stored
    bottom to top, the scale's sign giving the byte order (negative: little-endian)."""
    header = re.compile(rb"PF\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s").match(data, offset)
    if header is None:
        raise corrupt("a PFM header without width, height and scale")
    width, height = int(header.group(1)), int(header.group(2))
    try:
        scale = float(header.group(3))
    except ValueError:
        raise corrupt("a PFM header with an unreadable scale") from None
    if width < 1 or height < 1 or scale == 0:
        raise corrupt(f"width {width}, height {height}, scale {scale} out of range")
    count, start = width * height * 3, header.end()
    if len(data) < start + 4 * count:
        raise corrupt("the file is truncated (fewer samples than its header says)")
    samples = np.frombuffer(data, "<f4" if scale < 0 else ">f4", count, start)
    image = samples.reshape(height, width, 3)[::-1].astype(np.float32)
    return image, start + 4 * count


def _netpbm_image(data: bytes, offset: int, path: Path) -> tuple[np.ndarray, int]:
    """The image whose header starts at ``offset``, and the offset after its raster."""

    def corrupt(what: str) -> ImageIOError:
        return ImageIOError(f"cannot read image {path}: {what}")

    magic = data[offset : offset + 2]
    if magic == b"PF":
        return _pfm_colour(data, offset, corrupt)
    if magic == b"P7":
        end = data.find(b"ENDHDR", offset)
        if end < 0:
            raise corrupt("a PAM header without ENDHDR")
        fields: dict[str, str] = {}
        for line in data[offset + 2 : end].decode("latin-1").splitlines():
            key, _, value = line.split("#", 1)[0].strip().partition(" ")
            if key:
                # TUPLTYPE may be given on several lines: they are joined.
                joined = f"{fields[key]} {value.strip()}" if key in fields else value.strip()
                fields[key] = joined
        try:
            width, height, depth, maxval = (
                int(fields[key]) for key in ("WIDTH", "HEIGHT", "DEPTH", "MAXVAL")
            )
        except (KeyError, ValueError):
            raise corrupt("a PAM header without valid WIDTH, HEIGHT, DEPTH and MAXVAL") from None
        tuple_type = fields.get("TUPLTYPE", "")
        channels, _ = _PAM_TUPLES.get(tuple_type, (depth, depth in (2, 4)))
        if channels != depth or not 1 <= depth <= 4:
            raise corrupt(
                f"a PAM of {depth} samples per pixel (TUPLTYPE {tuple_type or 'none'}); "
                "pictures of 1 to 4 (grey, grey+alpha, RGB, RGBA) are read"
            )
        if data[end + 6 : end + 7] != b"\n":
            raise corrupt("a PAM header whose ENDHDR line does not end")
        raster, plain = end + 7, False
    else:
        depth = 3 if magic in (b"P3", b"P6") else 1
        plain = magic in (b"P2", b"P3")
        numbers, position = [], offset + 2
        for _ in range(3):
            match = _NETPBM_NUMBER.match(data, position)
            if match is None:
                raise corrupt(f"a {magic.decode()} header without width, height and maxval")
            numbers.append(int(match.group(1)))
            position = match.end()
        width, height, maxval = numbers
        if not plain and data[position : position + 1] not in (b" ", b"\t", b"\n", b"\r"):
            raise corrupt("no whitespace between its header and its samples")
        raster = position if plain else position + 1  # one whitespace character ends it
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise corrupt(f"width {width}, height {height}, maxval {maxval} out of range")
    count = width * height * depth
    dtype = np.dtype(np.uint8 if maxval < 256 else ">u2")
    if plain:
        values, after = [], raster
        while len(values) < count:
            match = _PLAIN_SAMPLE.match(data, after)
            if match is None:
                raise corrupt(f"{len(values)} of its {count} samples are readable")
            values.append(int(match.group(1)))
            after = match.end()
        samples = np.array(values, dtype=np.int64)
    else:
        after = raster + count * dtype.itemsize
        if len(data) < after:
            raise corrupt("the file is truncated (fewer samples than its header says)")
        samples = np.frombuffer(data, dtype, count, raster)
    if samples.max(initial=0) > maxval:
        raise corrupt(f"a sample above its maxval {maxval}")
    top = 255 if maxval < 256 else 65535
    if maxval != top:
        # Scaled to the full range as Pillow scales 16-bit grey (floor); distinct values
        # stay distinct, as top / maxval >= 1.
        samples = samples.astype(np.uint32) * top // maxval
    out = np.asarray(samples).astype(np.uint8 if top == 255 else np.uint16)
    shape = (height, width) if depth == 1 else (height, width, depth)
    return out.reshape(shape), after
