"""Common checks: every public parameter's bad values get the contract's one message, before work.

In the manner of scikit-learn's ``utils/estimator_checks.py``: one table of bad values per
parameter (wrong type, out of range, NaN, wrong units, wrong shape) runs through every public
function that takes the parameter. Each must raise the contract's ``InvalidParameterError``
naming the parameter, in the one message shape, before any work: the progress callback is never
called and a lazy input is never computed.
"""

from __future__ import annotations

import inspect
import math
import re

import dask
import dask.array as da
import numpy as np
import pytest

from bad_values import BAD_VALUES, PALETTE, RGB
from napari_kmeans_filter import apply_palette, fit_palette, quantize
from napari_kmeans_filter._contract import PARAMETERS, InvalidParameterError
from napari_kmeans_filter.cli.errors import OPTION_OF_PARAMETER, option_of

PUBLIC = (quantize, fit_palette, apply_palette)


def _cases():
    for function in PUBLIC:
        accepted = inspect.signature(function).parameters
        for name, entries in BAD_VALUES.items():
            if name not in accepted:
                continue
            for number, (value, extra, image) in enumerate(entries):
                if not set(extra) <= set(accepted):
                    continue
                yield pytest.param(
                    function, name, value, extra, image, id=f"{function.__name__}-{name}-{number}"
                )


def test_every_public_parameter_is_declared_and_has_bad_values():
    for function in PUBLIC:
        for name in inspect.signature(function).parameters:
            assert name in PARAMETERS, f"{function.__name__}({name}) is not in the contract"
            assert name in BAD_VALUES, f"{name} has no bad values in the common checks"


def test_public_defaults_are_the_contract_defaults():
    for function in PUBLIC:
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                assert parameter.default == PARAMETERS[name].default, (function, name)


_SHAPE = re.compile(r"^The '(\w+)' parameter must .+\. Got .+ instead\.")


@pytest.mark.parametrize("function, name, value, extra, image", list(_cases()))
def test_bad_value_gets_the_one_message_before_any_work(function, name, value, extra, image):
    calls = []
    arguments = {"progress": lambda fraction, message: calls.append(fraction)}
    if function is apply_palette:
        arguments["palette"] = PALETTE
    arguments |= extra
    arguments[name] = value
    if name == "image":
        image = value
    arguments.pop("image", None)
    with pytest.raises(InvalidParameterError) as caught:
        function(image, **arguments)
    error = caught.value
    assert error.parameter == name, str(error)
    assert _SHAPE.match(str(error)), str(error)
    assert "\n" not in str(error)
    assert calls == [], "work started before the parameter was refused"


@pytest.mark.parametrize(
    "name, value, extra",
    [
        ("n_colors", 0, {}),
        ("sample_weight", -np.ones((24, 32)), {}),
        ("fixed_colors", [[300, 0, 0]], {}),
        ("speed", 11, {}),
    ],
)
def test_bad_values_with_lazy_input_compute_no_image_chunk(name, value, extra):
    computed = []

    def counted(block):
        if block.size:  # dask calls it on an empty block to infer its output's type
            computed.append(block.shape)
        return block

    lazy = da.from_array(RGB, chunks=(12, 16, 3)).map_blocks(counted, dtype=RGB.dtype)
    with dask.config.set(scheduler="synchronous"), pytest.raises(InvalidParameterError):
        quantize(lazy, **({name: value} | extra))
    if name != "sample_weight":
        # A lazy weight is checked as it is computed, with the histogram (no output yet).
        assert computed == []


def test_lazy_bad_weights_give_the_numpy_message():
    weights = np.ones((24, 32))
    weights[3, 4] = -2
    with pytest.raises(InvalidParameterError) as eager:
        quantize(RGB, 4, sample_weight=weights)
    lazy_weights = da.from_array(weights, chunks=(12, 16))
    with pytest.raises(InvalidParameterError) as lazy:
        quantize(da.from_array(RGB, chunks=(12, 16, 3)), 4, sample_weight=lazy_weights)
    assert str(lazy.value) == str(eager.value)


# ---------------------------------------------------------------------------------------------
# The same table through the command line
#
# Every bad value of a parameter that an option sets (the map of cli/errors.py) is typed as a
# user would type it: numbers and words as text, colours as --fixed-color texts, masks and
# palettes as files, images as files (zarr arrays for the shapes no picture file holds). The
# run must end with exit status 2 and one line naming the option (never the Python name) and
# stating the accepted range or units, before any work and with no file written.

CLI_ERROR = "napari-kmeans-filter: error: "
PYTHON_WORDS = re.compile(
    r"\b(n_colors|target_psnr|target_delta_e|fixed_colors|random_state|color_space|channel_axis"
    r"|sample_weight)\b|parameter"
)

#: Bad values of the API that the command line cannot receive, with the reason.
NOT_TYPED = {
    ("image", 0): "no input is a missing INPUT, which argparse requires",
    ("image", 1): "a text is a file name: an unreadable file, not a bad image",
    ("image", 5): "no image file decodes to Python objects",
    ("alpha", 0): "whether a channel is alpha is the file's word (set with --channel-axis)",
    ("alpha", 1): "whether a channel is alpha is the file's word (set with --channel-axis)",
    ("mask", 1): "a mask file is read as its nonzero pixels: any dtype is a mask",
    ("fixed_colors", 7): "'white' is a CSS colour name, a good --fixed-color",
    ("target_psnr", 3): "every option value is text: '35' is the number 35",
    ("palette", 0): "without --apply-palette a palette is fitted",
    ("palette", 1): "--apply-palette reads a palette file: never a bare list",
}

#: The accepted range or units each refusal must state, where the image decides them (the
#: others state the contract's own interval and units, or its options).
CLI_WORDS = {
    ("image", 2): ["integer or floating-point dtype"],
    ("image", 3): ["at least 2 dimensions"],
    ("image", 4): ["not be empty"],
    ("channel_axis", 0): ["[-3, 2]"],
    ("channel_axis", 1): ["[-3, 2]"],
    ("channel_axis", 2): ["'auto', an int or 'none'"],
    ("channel_axis", 3): ["'auto', an int or 'none'"],
    ("color_space", 2): ["3 colour channels"],
    ("color_space", 3): ["[0, 1]"],
    ("mask", 0): ["(24, 32)"],
    ("mask", 2): ["no pixel to fit"],
    ("fixed_colors", 0): ["--fixed-color 300,0,0: must", "[0, 255]"],
    ("fixed_colors", 1): ["whole numbers", "uint8"],
    ("fixed_colors", 2): ["3 value(s)", "colour channel"],
    ("fixed_colors", 3): ["numbers in the image's units"],
    ("fixed_colors", 4): ["-k 8", "9 colours"],
    ("fixed_colors", 5): ["repeat"],
    ("fixed_colors", 6): ["[0, 1]", "/ 255"],
    ("target_psnr", 4): ["-k auto"],
    ("target_delta_e", 2): ["3 colour channels"],
    ("target_delta_e", 3): ["[0, 1]"],
    ("palette", 2): ["colour channels", "(3)"],
    ("palette", 3): ["units (uint8)", "dtype uint16"],
    ("palette", 4): ["units", "float32"],
    ("palette", 5): ["[0, 1]", "/ 255"],
}


def _contract_words(name: str) -> list[str]:
    """The range (with units) or choices the contract declares for ``name``."""
    declared = PARAMETERS[name]
    if declared.interval is not None:
        units = f" ({declared.units})" if declared.units else ""
        return [declared.interval.bounds_text() + units]
    return [", ".join(map(repr, declared.options))]


def _as_text(value) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else str(value)


def _input_file(image: np.ndarray, folder) -> str:
    """A file the command line reads as ``image`` (or as its one channel, for greyscale)."""
    import hashlib

    import tifffile
    from PIL import Image

    key = hashlib.sha256(image.tobytes() + str((image.shape, image.dtype)).encode()).hexdigest()
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] in (1, 3):
        name = f"{key[:10]}.png"
        if not (folder / name).exists():
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / name)
        return name
    name = f"{key[:10]}.tif"
    if not (folder / name).exists():
        rgb = image.ndim == 3 and image.shape[-1] == 3
        tifffile.imwrite(folder / name, image, photometric="rgb" if rgb else "minisblack")
    return name


def _zarr_name(image: np.ndarray) -> str:
    return f"image_{image.dtype}_{'x'.join(map(str, image.shape))}.zarr"


def _zarr_input(image: np.ndarray, folder) -> str:
    import zarr

    name = _zarr_name(image)
    if not (folder / name).exists():
        chunks = tuple(max(1, size) for size in image.shape)
        array = zarr.create_array(
            folder / name, shape=image.shape, dtype=image.dtype, chunks=chunks
        )
        if image.size:
            array[...] = image
    return name


def _palette_file(palette, folder, number: int) -> str:
    from napari_kmeans_filter._palette_files import palette_json

    name = f"palette_{number}.json"
    (folder / name).write_text(palette_json(palette), encoding="utf-8")
    return name


def _mask_file(mask: np.ndarray, folder, number: int) -> str:
    from PIL import Image

    name = f"mask_{number}.png"
    Image.fromarray(np.asarray(mask, np.uint8) * 255).save(folder / name)
    return name


def cli_arguments(name: str, number: int, folder) -> list[str]:
    """The command line that gives bad value ``number`` of parameter ``name``."""
    value, extra, image = BAD_VALUES[name][number]
    n_colors = extra.get("n_colors", PARAMETERS["n_colors"].default)
    if name == "image":
        return [_zarr_input(value, folder), "-k", "2"]
    if name == "palette":
        return [_input_file(image, folder), "--apply-palette", _palette_file(value, folder, number)]
    argv = [_input_file(image, folder), "-k", str(n_colors)]
    if name == "fixed_colors":
        return argv + [f"--fixed-color={','.join(map(_as_text, row))}" for row in value]
    if name == "mask":
        return [*argv, "--mask", _mask_file(value, folder, number)]
    if name != "channel_axis" and image.shape[-1] not in (1, 3, 4):
        argv += ["--channel-axis", "-1"]  # two channels: not taken for colour by default
    return [*argv, f"{option_of(name).split('/')[-1]}={_as_text(value)}"]


def _cli_cases():
    for name, entries in BAD_VALUES.items():
        if name not in OPTION_OF_PARAMETER:
            continue
        for number in range(len(entries)):
            if (name, number) not in NOT_TYPED:
                yield pytest.param(name, number, id=f"cli-{name}-{number}")


# A few cases run as the user runs them (a fresh interpreter each); the rest call main().
SUBPROCESS_CASES = {("n_colors", 0), ("fixed_colors", 0), ("palette", 2), ("mask", 0), ("image", 3)}


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-common-checks")


def _folder_state(folder) -> dict:
    return {path.name: path.stat().st_mtime_ns for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def cli_subprocess_runs(cli_folder):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("NAPARI_KMEANS_FILTER_DEBUG", None)
    commands = {case: cli_arguments(*case, cli_folder) for case in sorted(SUBPROCESS_CASES)}
    before = _folder_state(cli_folder)
    running = {
        case: subprocess.Popen(
            [sys.executable, "-m", "napari_kmeans_filter", *argv],
            cwd=cli_folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        for case, argv in commands.items()
    }
    runs = {case: (p.wait(timeout=300), p.communicate()[1]) for case, p in running.items()}
    assert _folder_state(cli_folder) == before, "a refused run wrote a file"
    return runs


def assert_refused_in_option_words(name: str, number: int, status: int, stderr: str) -> None:
    assert status == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(CLI_ERROR), stderr
    line = lines[0][len(CLI_ERROR) :]
    assert not PYTHON_WORDS.search(line), line
    if name == "image":
        # The file is named, not a placeholder ("image.zarr: INPUT: ...").
        assert line.startswith(_zarr_name(BAD_VALUES[name][number][0]) + ": "), line
        assert "INPUT" not in line, line
    else:
        assert any(spelling in line for spelling in option_of(name).split("/")), line
    for word in CLI_WORDS.get((name, number)) or _contract_words(name):
        assert word in line, (word, line)


def test_every_cli_parameter_bad_value_is_typed_or_said_why_not():
    """A bad value added to the table must be given to the command line too (or excused)."""
    for name, number in NOT_TYPED:
        assert name in OPTION_OF_PARAMETER and number < len(BAD_VALUES[name])
    for name, number in CLI_WORDS:
        assert (name, number) not in NOT_TYPED and number < len(BAD_VALUES[name])
    assert {"n_colors", "speed", "dither", "fixed_colors", "mask", "palette"} <= {
        case.values[0] for case in _cli_cases()
    }


@pytest.mark.parametrize("name, number", list(_cli_cases()))
def test_bad_value_on_the_command_line_is_one_line_naming_the_option(
    name, number, cli_folder, cli_subprocess_runs, monkeypatch, capsys
):
    if (name, number) in SUBPROCESS_CASES:
        assert_refused_in_option_words(name, number, *cli_subprocess_runs[name, number])
        return
    from napari_kmeans_filter.cli import main
    from napari_kmeans_filter.cli.progress import DISPLAY

    argv = cli_arguments(name, number, cli_folder)
    monkeypatch.chdir(cli_folder)
    monkeypatch.delenv("NAPARI_KMEANS_FILTER_DEBUG", raising=False)
    calls = []
    monkeypatch.setattr(DISPLAY, "core_progress", lambda: lambda *a: calls.append(a))
    before = _folder_state(cli_folder)
    status = main(argv)
    assert_refused_in_option_words(name, number, status, capsys.readouterr().err)
    assert calls == [], "work started before the option was refused"
    assert _folder_state(cli_folder) == before, "a refused run wrote a file"


def test_a_repeated_fixed_colour_is_named():
    with pytest.raises(ValueError, match=r"Got \(255, 0, 0\) more than once"):
        quantize(RGB, 4, fixed_colors=[[0, 0, 0], [255, 0, 0], [9, 9, 9], [255, 0, 0]])
