"""Command-line demo: the k-means gallery of the cat (``napari-kmeans-filter demo``).

The original cat (``skimage.data.chelsea``), the cat at a few k and their contact sheet, a few
k without and with dithering, and the fewest colours reaching a few PSNR targets. The same
functions write the committed gallery (``docs/make_gallery.py``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from .errors import CliError
from .parse import DEMO_DITHER_K_VALUES, DEMO_K_VALUES, DEMO_TARGETS_PSNR
from .plan import prepare_directories
from .progress import DISPLAY, start_numba
from .run import EXIT_OK, _colours, format_psnr


@dataclass
class DemoImage:
    """One image of the demo's gallery, before it is written.

    ``kind`` is "original", "k" (quantised), "dither" (quantised with dithering), "auto"
    (``-k auto`` for ``target_psnr``) or "sheet" (the contact sheet); ``result`` is the
    core's result for the quantised ones; ``tiles`` the (image, caption) pairs of the
    sheet.
    """

    name: str
    kind: str
    image: np.ndarray
    result: Any = None
    target_psnr: float | None = None
    tiles: list = None

    @property
    def caption(self) -> str:
        if self.kind == "original":
            return f"original  {_distinct_colours(self.image)} colours"
        k = len(self.result.palette)
        if self.kind == "dither":
            return f"k={k} dithered  {format_psnr(self.result.psnr)}"
        if self.kind == "auto":
            return f"auto >= {self.target_psnr:g} dB: k={k}  {format_psnr(self.result.psnr)}"
        return f"k={k}  {format_psnr(self.result.psnr)}"


def demo_images(
    k_values: Sequence[int] = DEMO_K_VALUES,
    dither_k_values: Sequence[int] = DEMO_DITHER_K_VALUES,
    targets_psnr: Sequence[float] = DEMO_TARGETS_PSNR,
    *,
    color_space: str = "rgb",
    seed: int = 0,
    progress=None,
) -> list[DemoImage]:
    """Compute every image of the demo's gallery, in the order they are written.

    The original cat; the cat at each of ``k_values`` and their contact sheet; at each
    of ``dither_k_values`` without and with dithering (full strength); with the fewest
    colours reaching each of ``targets_psnr`` (named ``chelsea_psnr<T>_k<K>.png`` after
    the k chosen).  ``progress(done, total, what)`` is called before each fit.
    """
    from skimage import data

    from .. import quantize

    cat = data.chelsea()
    options = {"color_space": color_space, "random_state": seed}
    fits = [("k", k) for k in dict.fromkeys(k_values)]
    fits += [(kind, k) for k in dither_k_values for kind in ("k", "dither")]
    fits += [("auto", target) for target in targets_psnr]
    images = [DemoImage("chelsea.png", "original", cat)]
    done: set[tuple] = set()
    for number, (kind, value) in enumerate(fits, start=1):
        if (kind, value) in done:
            continue
        done.add((kind, value))
        if progress is not None:
            progress(number, len(fits), f"{value:g} dB" if kind == "auto" else f"k={value}")
        if kind == "auto":
            result = quantize(cat, "auto", target_psnr=value, **options)
            name = f"chelsea_psnr{value:g}_k{len(result.palette)}.png"
            images.append(DemoImage(name, kind, result.image, result, target_psnr=value))
        else:
            result = quantize(cat, value, dither=kind == "dither", **options)
            name = f"chelsea_k{value}{'_dither' * (kind == 'dither')}.png"
            images.append(DemoImage(name, kind, result.image, result))
    if k_values:
        swept = images[: 1 + len(dict.fromkeys(k_values))]
        tiles = [(image.image, image.caption) for image in swept]
        sheet = DemoImage("chelsea_contact_sheet.png", "sheet", contact_sheet(tiles), tiles=tiles)
        images.insert(len(swept), sheet)
    return images


def demo_header(original: np.ndarray) -> str:
    """The demo's first line: the cat's size and distinct colours."""
    height, width = original.shape[:2]
    return (
        f"chelsea (skimage.data.chelsea): {width} x {height} pixels, "
        f"{_distinct_colours(original)} distinct colours"
    )


def demo_line(path: Path, image: DemoImage, *, shown: str | None = None) -> str:
    """What the demo prints for one written file at ``path`` (named ``shown`` if given)."""
    shown = path if shown is None else shown
    if image.kind == "original":
        what = f"original, {_distinct_colours(image.image)} colours"
    elif image.kind == "sheet":
        height, width = image.image.shape[:2]
        return f"wrote {shown}  (contact sheet, {width} x {height} pixels)"
    else:
        result = image.result
        what = f"{_colours(len(result.palette))}, {format_psnr(result.psnr)}"
        if image.kind == "dither":
            what = f"{_colours(len(result.palette))}, dithered, {format_psnr(result.psnr)}"
        elif image.kind == "auto":
            what = f"fewest colours reaching {image.target_psnr:g} dB: {what}"
    return f"wrote {shown}  ({what}, {_size(path)})"


def run_demo(args: argparse.Namespace) -> int:
    """Write the demo's gallery (see :func:`demo_images`); print what was written."""
    out_dir: Path = args.out_dir
    k_values = sorted(dict.fromkeys(args.n_colors))
    dither_k_values = sorted(dict.fromkeys(args.dither_k))
    targets = sorted(dict.fromkeys(args.target_psnr))
    # The same rule as the main command, checked before any work for every name known
    # in advance, and for the names of -k auto (they hold the k chosen) before any write.
    known = ["chelsea.png", *(f"chelsea_k{k}.png" for k in [*k_values, *dither_k_values])]
    known += [f"chelsea_k{k}_dither.png" for k in dither_k_values]
    known += ["chelsea_contact_sheet.png"] if k_values else []
    _check_demo_outputs([out_dir / name for name in known], args.overwrite)
    prepare_directories([out_dir / "x"])

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    display = DISPLAY.configure(enabled=not args.quiet)
    start_numba(display)

    def progress(number: int, total: int, what: str) -> None:
        display.begin(number, total, f"chelsea {what}")
        display.show(0.0, "fitting")

    images = demo_images(
        k_values,
        dither_k_values,
        targets,
        color_space=args.color_space,
        seed=args.seed,
        progress=progress,
    )
    display.clear()
    _check_demo_outputs([out_dir / image.name for image in images], args.overwrite)
    say(demo_header(images[0].image))
    for image in images:
        write_demo_image(
            out_dir / image.name, image, overwrite=args.overwrite, optimize=args.optimize
        )
        say(demo_line(out_dir / image.name, image))
    return EXIT_OK


def _check_demo_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    for path in paths:
        if path.exists() and not overwrite:
            raise CliError(f"{path} already exists (use --overwrite to replace it)")


def write_demo_image(path: Path, image: DemoImage, *, overwrite: bool, optimize: bool) -> None:
    """Write one image of the gallery: quantised ones as indexed PNGs whose palette is
    the result's palette and whose indices are its labels."""
    result = image.result
    with _io.atomic_output(path, overwrite=overwrite) as temporary:
        _io.write_array(
            temporary,
            image.image,
            fmt="png",
            channel_axis=-1,
            labels=None if result is None else result.labels,
            colors=None if result is None else result.palette.colors,
            optimize=optimize,
        )


def _distinct_colours(image: np.ndarray) -> int:
    return len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))


#: Pixels between the tiles of a contact sheet.
SHEET_GAP = 4


def contact_sheet_boxes(
    n_tiles: int, tile_shape: tuple[int, int], *, columns: int = 3, caption_height: int = 30
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The layout of :func:`contact_sheet`: ``(sheet height, width)`` and the
    ``(top, left)`` pixel of each tile (its caption is the band below it)."""
    height, width = tile_shape
    columns = min(columns, n_tiles)
    rows = math.ceil(n_tiles / columns)
    size = (
        rows * (height + caption_height) + (rows + 1) * SHEET_GAP,
        columns * width + (columns + 1) * SHEET_GAP,
    )
    origins = []
    for index in range(n_tiles):
        row, column = divmod(index, columns)
        origins.append(
            (
                SHEET_GAP + row * (height + caption_height + SHEET_GAP),
                SHEET_GAP + column * (width + SHEET_GAP),
            )
        )
    return size, origins


def contact_sheet(
    tiles: Sequence[tuple[np.ndarray, str]], *, columns: int = 3, caption_height: int = 30
) -> np.ndarray:
    """Arrange RGB images in a grid with a caption under each; return an RGB array.

    Parameters
    ----------
    tiles : sequence of (image, caption)
        uint8 RGB images of one size, and the text to write under each.
    columns : int
        Images per row.
    caption_height : int
        Height in pixels of the white band holding each caption.
    """
    from PIL import Image, ImageDraw, ImageFont

    height, width = tiles[0][0].shape[:2]
    (sheet_height, sheet_width), origins = contact_sheet_boxes(
        len(tiles), (height, width), columns=columns, caption_height=caption_height
    )
    sheet = Image.new("RGB", (sheet_width, sheet_height), "white")
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=int(caption_height * 0.6))
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        font = ImageFont.load_default()
    for (image, caption), (top, left) in zip(tiles, origins, strict=True):
        sheet.paste(Image.fromarray(np.asarray(image)), (left, top))
        draw.text(
            (left + width / 2, top + height + caption_height / 2),
            caption,
            fill="black",
            font=font,
            anchor="mm",
        )
    return np.asarray(sheet)


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1024:.1f} KiB" if size < 1024**2 else f"{size / 1024**2:.2f} MiB"
