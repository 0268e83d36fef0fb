"""Command-line parsing: the two commands' options, built from the parameter contract.

Every option that sets a parameter of the core reads its text with that parameter's declared
:meth:`~napari_kmeans_filter._contract.Parameter.from_text`, and its help states the declared
range, choices and default (:mod:`napari_kmeans_filter._contract`); no range is typed here.
A value outside the contract ends the run with one line naming the option
(:func:`~.errors.in_shell_words`).
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from .._contract import PARAMETERS, Constraint, Interval, InvalidParameterError, NoneValue, default
from .errors import PROG, CliError, in_shell_words

DEMO_COMMAND = "demo"
DEMO_DEFAULT_DIR = "kmeans-demo"
#: The k values of the demo's contact sheet.
DEMO_K_VALUES = (2, 5, 10, 15, 24)
#: The k values the demo shows without and with dithering.
DEMO_DITHER_K_VALUES = (4, 8, 16)
#: The PSNR targets (dB) the demo reaches with -k auto.
DEMO_TARGETS_PSNR = (30.0, 35.0, 40.0)
#: Suffixes --format offers for the outputs named automatically.
FORMAT_CHOICES = ("png", "tif", "tiff", "zarr", "npy", "jpg", "jpeg")

_EXAMPLES = f"""\
examples:
  {PROG} cat.png -k 16 -o cat16.png
  {PROG} cat.png -k 16 --palette cat16.json   # cat_k16.png + palette
  {PROG} dog.png --apply-palette cat16.json    # dog in the cat's colours
  {PROG} photos/*.jpg -k 8 --out-dir small --labels 'small/{{stem}}_labels.png'
  {PROG} big.tif -k 32 -o big_k32.zarr --labels big_labels.zarr
  {PROG} cat.png -k auto --target-psnr 35      # the fewest colours reaching 35 dB
  {PROG} cat.png -k 8 --dither                  # smooth gradients by error diffusion
  {PROG} logo.png -k 8 --fixed-color '#ffffff' --fixed-color '#d40000'
  {PROG} cells.tif -k 4 --mask roi.png --stats cells_k4.csv
  {PROG} {DEMO_COMMAND}                                 # the gallery of the cat

Outputs never replace an input, and replace existing files only with --overwrite
(the same rule for '{DEMO_COMMAND}').
In --labels, --palette, --stats and --mask paths, {{stem}} is the input's name without
its suffix and {{k}} the number of colours ('auto' with -k auto); {{stem}} is required
in output paths when there are several inputs.
Run '{PROG} {DEMO_COMMAND} --help' for the gallery options."""

_QUALITY_HINT = (
    "pngquant's 0-100 quality score has no exact equivalent here; use -k auto --target-psnr "
    "DB instead (about 30 dB is visibly posterised, 35 dB close, 40 dB hard to tell from the "
    "original)"
)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are raised, to be printed as one line by ``main``."""

    def error(self, message: str):  # type: ignore[override]
        raise CliError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------
# Option values read by the contract
# --------------------------------------------------------------------------------------


def _typed_forms(name: str, *, none_word: bool) -> list[Constraint]:
    """The constraints of ``name`` that a user can type (numbers, words; not arrays)."""
    return [
        constraint
        for constraint in PARAMETERS[name].constraints
        if type(constraint).from_text is not Constraint.from_text
        and (none_word or not isinstance(constraint, NoneValue))
    ]


def accepted(name: str, *, none_word: bool = False, only=None, words: Sequence[str] = ()) -> str:
    """What the option of parameter ``name`` accepts, from the contract, in the shell's words.

    ``words``: what the option itself accepts besides the parameter's forms (``'auto'``).
    """
    units = PARAMETERS[name].units
    texts = [repr(word) for word in words]
    for constraint in only or _typed_forms(name, none_word=none_word):
        if isinstance(constraint, NoneValue):
            texts.append("'none'")
        elif isinstance(constraint, Interval) and units:
            texts.append(f"{constraint.describe()} ({units})")
        else:
            texts.append(constraint.describe())
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]


def _output_file(text: str) -> Path:
    """-o's type: a file's path. A path that ends in a separator names a directory (which
    ``Path`` would drop), existing or not: refused with a pointer to --out-dir. A zarr
    store is a directory (``out.zarr/``, as a shell completes it) and is an output. ``-``
    (standard output, as pngquant takes it) is refused naming what to give instead."""
    if text == "-":  # pngquant's habit: not ours (an output is written whole, then renamed)
        raise CliError(
            "-o -: writing to standard output is not supported: name a file (its suffix "
            "chooses the format, e.g. -o out.png)"
        )
    path = Path(text)
    ends_in_separator = text.endswith(("/", os.sep)) or bool(os.altsep and text.endswith(os.altsep))
    if ends_in_separator and path.suffix.lower() != ".zarr":
        shown = shlex.quote(text)
        made = "" if path.is_dir() else ", created if needed"
        raise CliError(
            f"-o {shown} names a directory: name a file for the output (or --out-dir {shown} "
            f"to write into it{made})"
        )
    return path


def option_type(
    name: str,
    option: str,
    *,
    none_word: bool = False,
    only: Interval | None = None,
    hint: Callable[[str], str] | None = None,
    words: Sequence[str] = (),
):
    """The argparse ``type`` of an option: the text read by parameter ``name``'s contract.

    ``none_word``: 'none' is accepted (the parameter left to the core's None).
    ``only``: one of the parameter's constraints, when the option offers less (the demo's -k
    takes numbers only). ``hint(text)``: an extra sentence for a refused text. ``words``: words
    the option takes itself (``--channel-axis auto``), returned as typed in lower case.
    """
    parameter = PARAMETERS[name]

    def read(text: str):
        if text.strip().lower() in words:
            return text.strip().lower()
        try:
            if only is not None:
                try:
                    value = only.from_text(text)
                except (ValueError, OverflowError):
                    raise parameter.error(text) from None
                if not only.accepts(value):
                    raise parameter.error(value)
                return value
            value = parameter.from_text(text)
            if value is None and not none_word:
                raise parameter.error(None)
            return value
        except InvalidParameterError:
            # The requirement of the forms this option reads (not the Python ones: arrays,
            # RandomState, True/False), with what was typed.
            shown = InvalidParameterError(
                name,
                "be "
                + accepted(
                    name,
                    none_word=none_word,
                    only=None if only is None else [only],
                    words=words,
                ),
                repr(text),
                hint(text) if hint is not None else "",
            )
            raise CliError(in_shell_words(shown, option=option, value=text)) from None

    read.__name__ = option  # argparse names the type in its own messages
    return read


def _dither_hint(text: str) -> str:
    try:
        float(text)
    except ValueError:
        return "A bare --dither takes the next word as its level, so put it after the input files"
    return ""


#: ``--channel-axis``: 'auto' (the file decides), else the core's ``channel_axis``.
_channel_axis = option_type("channel_axis", "--channel-axis", none_word=True, words=("auto",))


def _range(name: str) -> tuple[str, str]:
    """The declared bounds of a numeric parameter, as help texts write them."""
    interval = PARAMETERS[name].interval
    return _number(interval.low), _number(interval.high)


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------
# The parsers
# --------------------------------------------------------------------------------------


def _version() -> str:
    from .. import __version__

    return f"{PROG} {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The parser of the main (quantise) command."""
    from .. import _io

    k_low, k_high = _range("n_colors")
    speed_low, speed_high = _range("speed")
    dither_low, dither_high = _range("dither")
    seed_low, seed_high = _range("random_state")
    psnr = PARAMETERS["target_psnr"]
    delta_e = PARAMETERS["target_delta_e"]
    parser = _Parser(
        prog=PROG,
        description=(
            "Reduce images to K colours with exact k-means (colour quantisation).\n"
            "Reads PNG, JPEG, GIF, WebP, BMP, PPM, TIFF (any dtype, stacks, multichannel),\n"
            ".zarr arrays and OME-Zarr images as viewers show them: every frame of an\n"
            "animation (one palette for all), transparency, EXIF orientation, CMYK and\n"
            "palettes as RGB. Writes PNG (indexed when it has at most 256 colours), TIFF,\n"
            ".zarr, .npy or JPEG, keeping the dtype; frames need TIFF, .zarr or .npy; an\n"
            "OME-Zarr input gives OME-Zarr images and OME-NGFF label images. Large TIFF\n"
            "and .zarr inputs are processed chunk by chunk."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", type=Path, help="image file(s) or .zarr array(s)"
    )
    # Not required=True: --quality without -k must still get its own hint (see parse_args).
    colours = parser.add_mutually_exclusive_group()
    colours.add_argument(
        "-k",
        "--n-colors",
        type=option_type("n_colors", "-k/--n-colors"),
        metavar="K",
        help=f"number of colours to fit ({k_low} to {k_high}), or 'auto': the fewest colours "
        "whose result reaches --target-psnr and/or --target-delta-e",
    )
    colours.add_argument(
        "--apply-palette",
        type=Path,
        metavar="JSON",
        help="repaint with the colours of a palette saved earlier with --palette",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-o",
        "--output",
        type=_output_file,
        metavar="OUTPUT",
        help="output file (one input only; its directory is created if needed)",
    )
    where.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="directory for the outputs, named <stem>_k<K>.<ext> (<stem>_auto.<ext> with "
        "-k auto; _dither before the suffix when dithered; created if needed); default: "
        "beside each input",
    )
    where.add_argument(
        "--no-image",
        action="store_true",
        help="write no quantised image, only what --labels, --palette and --stats name "
        "(a segmentation: the label image alone)",
    )
    parser.add_argument(
        "--format",
        choices=FORMAT_CHOICES,
        help="suffix of the outputs named automatically; default: the input's own for "
        "TIFF, .zarr and one-frame PNG (keeps dtype, channels and frames), else png (JPEG, "
        "WebP, BMP, GIF, PPM, ...), or tif for animations (an animated PNG too) and dtypes "
        "PNG cannot hold",
    )
    parser.add_argument(
        "--labels",
        metavar="PATH",
        help="also write the label image (palette index of every pixel) as .png, .tif, "
        ".zarr or .npy; a pattern with {stem} for several inputs; the OME-Zarr input "
        "itself (or IMAGE/labels/NAME): an OME-NGFF label image under it (labels/kmeans)",
    )
    parser.add_argument(
        "--palette",
        metavar="JSON",
        help="also write the palette as JSON (for --apply-palette); a pattern with "
        "{stem} for several inputs",
    )
    quality = parser.add_argument_group(
        "how many colours and how good",
        "pngquant's --quality MIN-MAX is a 0-100 score of its own, with no exact equivalent\n"
        "here: ask for a PSNR instead (-k auto --target-psnr 35). About 30 dB is visibly\n"
        "posterised, 35 dB close, 40 dB hard to tell from the original.",
    )
    quality.add_argument(
        "--target-psnr",
        type=option_type("target_psnr", "--target-psnr"),
        metavar="DB",
        help=f"with -k auto: the PSNR the result must reach, in {psnr.units} "
        f"{psnr.interval.bounds_text()}",
    )
    quality.add_argument(
        "--target-delta-e",
        type=option_type("target_delta_e", "--target-delta-e"),
        metavar="DE",
        help="with -k auto, RGB images: the mean CIEDE2000 colour difference the result may "
        f"have at most, in {delta_e.interval.bounds_text()} (about 1 is the smallest "
        "difference people see side by side)",
    )
    quality.add_argument(
        "--quality",
        metavar="MIN-MAX",
        help="pngquant's option; refused with a hint: use -k auto --target-psnr DB",
    )
    quality.add_argument(
        "--speed",
        type=option_type("speed", "--speed"),
        metavar="N",
        help=f"{speed_low} (most thorough) to {speed_high} (fastest), pngquant's convention: "
        "a lower speed searches harder for the best colours and takes longer; "
        f"{speed_high} is for previews (default: {default('speed')})",
    )
    quality.add_argument(
        "--dither",
        type=option_type("dither", "--dither", hint=_dither_hint),
        nargs="?",
        const=PARAMETERS["dither"].interval.high,
        metavar="LEVEL",
        help="Floyd-Steinberg error diffusion when painting (also with --apply-palette): "
        f"trades a lower PSNR for smooth-looking gradients; LEVEL from {dither_low} to "
        f"{dither_high} is the share of each pixel's error passed on (default without LEVEL: "
        f"{dither_high}, full strength)",
    )
    fit = parser.add_argument_group("what the fit must respect")
    fit.add_argument(
        "--fixed-color",
        action="append",
        metavar="COLOR",
        help="a colour the palette must contain exactly, as its first entries (repeatable): "
        "'#rgb', '#rrggbb' or a CSS colour name (8-bit; scaled to 16 bits for 16-bit "
        "images), '#rrrrggggbbbb' (16-bit), or numbers in the image's units, e.g. "
        "'255,255,255' or '65535,0,0'; on a greyscale image a level ('128') or a grey "
        "('#808080', 'white')",
    )
    fit.add_argument(
        "--fixed-colors-from",
        type=Path,
        metavar="JSON",
        help="every colour of a palette file (as written by --palette) is a fixed colour",
    )
    fit.add_argument(
        "--mask",
        metavar="PATH",
        help="an image of the input's height and width (or of its frames' shape): only "
        "pixels where it is nonzero take part in the fit, every pixel is painted; a mask with "
        "transparent pixels counts its visible (alpha > 0) pixels instead; a pattern with "
        "{stem} for several inputs",
    )
    _add_color_space(parser, default_value=None)
    parser.add_argument(
        "--seed",
        type=option_type("random_state", "--seed"),
        metavar="N",
        help=f"random seed of the fit, {seed_low} to {seed_high} "
        f"(default: {default('random_state')}); the same seed gives the same result",
    )
    parser.add_argument(
        "--stats",
        metavar="CSV",
        help="also write per-cluster statistics as CSV: one row per palette entry (label, "
        "palette colour, pixel count, fraction, mean input colour, RMS error) and, for "
        "stacks, the count in each frame; a pattern with {stem} for several inputs",
    )
    parser.add_argument(
        "--channel-axis",
        type=_channel_axis,
        default="auto",
        metavar="AXIS",
        help="axis of the colour channels, or 'none' for intensity images; default "
        "'auto': a TIFF's samples axis, else the last axis when it has 3 or 4 entries",
    )
    parser.add_argument(
        "--chunked",
        action="store_true",
        help="read TIFF input chunk by chunk even when it fits in memory "
        f"(automatic above {_io.LAZY_TIFF_BYTES // 2**30} GiB; .zarr input always is)",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="go on when an input cannot be read or is refused: report it on one line, "
        "process the others, end with 'N of M files failed' and exit status 2 (default: "
        "the whole batch is checked first and any problem stops it before any work); "
        "mistakes in the options still stop the run at once",
    )
    parser.add_argument(
        "--no-indexed-png",
        dest="indexed_png",
        action="store_false",
        help="write plain greyscale/RGB(A) PNGs instead of indexed (palette) PNGs",
    )
    _add_common_options(parser)
    return parser


def _add_color_space(parser: argparse.ArgumentParser, *, default_value) -> None:
    options = PARAMETERS["color_space"].options
    shown = default_value or default("color_space")
    parser.add_argument(
        "--color-space",
        type=option_type("color_space", "--color-space"),
        choices=options,
        default=default_value,
        help=f"where colour distances are measured (default {shown}; "
        f"{' and '.join(o for o in options if o != default('color_space'))} are perceptual, "
        "for RGB images)",
    )


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options both commands take, with the same meaning."""
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="also try Pillow's optimize=True and keep the smaller PNG: never larger, "
        "often a few per cent smaller, several times slower to write",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that already exist (never an input)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing but warnings and errors"
    )
    parser.add_argument("--version", action="version", version=_version())


def build_demo_parser() -> argparse.ArgumentParser:
    """The parser of ``napari-kmeans-filter demo``."""
    numbers = PARAMETERS["n_colors"].interval
    parser = _Parser(
        prog=f"{PROG} {DEMO_COMMAND}",
        description=(
            "Write the k-means gallery of the cat (skimage.data.chelsea): the original,\n"
            f"the cat at k = {', '.join(map(str, DEMO_K_VALUES))} and a contact sheet "
            "captioned with the PSNR of each;\n"
            f"at k = {', '.join(map(str, DEMO_DITHER_K_VALUES))} without and with "
            "dithering; and with the fewest colours\nreaching a PSNR of "
            f"{', '.join(f'{t:g}' for t in DEMO_TARGETS_PSNR)} dB (-k auto), named "
            "after the k chosen. Needs no input."
        ),
        epilog=(
            f"example:\n  {PROG} {DEMO_COMMAND} --out-dir kmeans-demo\n\n"
            "Give --dither-k or --target-psnr without values to leave that part out.\n"
            "Existing files are replaced only with --overwrite, as for quantising."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(DEMO_DEFAULT_DIR),
        metavar="DIR",
        help=f"where to write the images (default: ./{DEMO_DEFAULT_DIR})",
    )
    parser.add_argument(
        "-k",
        "--n-colors",
        type=option_type("n_colors", "-k/--n-colors", only=numbers),
        nargs="+",
        default=list(DEMO_K_VALUES),
        metavar="K",
        help=f"the k values of the contact sheet (default: {' '.join(map(str, DEMO_K_VALUES))})",
    )
    parser.add_argument(
        "--dither-k",
        type=option_type("n_colors", "--dither-k", only=numbers),
        nargs="*",
        default=list(DEMO_DITHER_K_VALUES),
        metavar="K",
        help="the k values shown without and with dithering "
        f"(default: {' '.join(map(str, DEMO_DITHER_K_VALUES))})",
    )
    parser.add_argument(
        "--target-psnr",
        type=option_type("target_psnr", "--target-psnr"),
        nargs="*",
        default=list(DEMO_TARGETS_PSNR),
        metavar="DB",
        help="the PSNR targets of -k auto "
        f"(default: {' '.join(f'{t:g}' for t in DEMO_TARGETS_PSNR)})",
    )
    _add_color_space(parser, default_value=default("color_space"))
    parser.add_argument(
        "--seed",
        type=option_type("random_state", "--seed"),
        default=default("random_state"),
        metavar="N",
        help=f"as for quantising (default: {default('random_state')})",
    )
    _add_common_options(parser)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The main command's arguments, with the rules argparse cannot state itself."""
    args = build_parser().parse_args(argv)
    # Checked before "-k or --apply-palette is required": a pngquant user typing --quality
    # without -k needs the pointer to --target-psnr, not a generic message.
    if args.quality is not None:
        raise CliError(f"--quality {args.quality}: {_QUALITY_HINT}")
    if args.n_colors is None and args.apply_palette is None:
        raise CliError(f"one of -k/--n-colors or --apply-palette is required (see '{PROG} --help')")
    return args


def parse_demo_args(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments of ``napari-kmeans-filter demo``."""
    return build_demo_parser().parse_args(argv)
