"""The command line speaks the parameter contract: options read, described and refused from it.

* every option that sets a parameter of the core takes its range, choices and default from
  ``_contract.PARAMETERS`` (changing the table changes the option and its help);
* an error of the core is said once, in the options' words (the symptoms of issue 16, as users
  meet them: a subprocess);
* ``--help`` loads none of the readers, writers or the progress library.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from napari_kmeans_filter._contract import (
    COLOR_SPACES,
    PARAMETERS,
    Interval,
    InvalidParameterError,
    default,
)

PROG = "napari-kmeans-filter"


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("NAPARI_KMEANS_FILTER_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "napari_kmeans_filter", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
    )


def help_text(parser) -> str:
    return " ".join(parser.format_help().split())


# ---------------------------------------------------------------------------------------------
# Options derived from the contract


def test_help_states_the_contracts_ranges_choices_and_defaults():
    from napari_kmeans_filter.cli.parse import build_demo_parser, build_parser

    text = help_text(build_parser())
    k = PARAMETERS["n_colors"].interval
    speed = PARAMETERS["speed"].interval
    seed = PARAMETERS["random_state"].interval
    level = PARAMETERS["dither"].interval
    assert f"number of colours to fit ({k.low} to {k.high})" in text
    assert f"{speed.low} (most thorough) to {speed.high} (fastest)" in text
    assert f"(default: {default('speed')})" in text
    assert f"{seed.low} to {seed.high} (default: {default('random_state')})" in text
    assert f"LEVEL from {level.low:g} to {level.high:g}" in text
    assert f"dB {PARAMETERS['target_psnr'].interval.bounds_text()}" in text
    assert PARAMETERS["target_delta_e"].interval.bounds_text() in text
    for parser in (build_parser(), build_demo_parser()):
        (action,) = [a for a in parser._actions if "--color-space" in a.option_strings]
        assert tuple(action.choices) == COLOR_SPACES


def test_a_narrower_contract_narrows_the_option_and_its_help(monkeypatch, capsys):
    """No range is typed in the command line: change the table, and the option follows."""
    from napari_kmeans_filter.cli import main
    from napari_kmeans_filter.cli.parse import build_parser

    narrower = dataclasses.replace(PARAMETERS["speed"], constraints=(Interval("int", 1, 5),))
    monkeypatch.setitem(PARAMETERS, "speed", narrower)
    assert "1 (most thorough) to 5 (fastest)" in help_text(build_parser())
    assert main(["cat.png", "-k", "4", "--speed", "7"]) == 2
    assert capsys.readouterr().err == (
        f"{PROG}: error: --speed 7: must be an int in the range [1, 5]\n"
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["-k", "0"], "-k/--n-colors 0: must be an int in the range [1, 4096] (colours) or 'auto'"),
        (["-k", "8", "--seed", "-1"], "--seed -1: must be an int in the range [0, 4294967295]"),
        (
            ["-k", "auto", "--target-psnr", "nan"],
            "--target-psnr nan: must be a float in the range (0, 200] (dB)",
        ),
        (
            ["-k", "8", "--color-space", "xyz"],
            "--color-space xyz: must be one of 'rgb', 'lab', 'oklab'",
        ),
    ],
)
def test_values_outside_the_contract_are_refused_in_its_words(argv, line, capsys):
    from napari_kmeans_filter.cli import main

    assert main(["cat.png", *argv]) == 2
    assert capsys.readouterr().err == f"{PROG}: error: {line}\n"


def test_channel_axis_is_checked_by_the_core(tmp_path, monkeypatch, capsys):
    """The user's axis goes to the core as typed; its range is the core's, said once."""
    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    Image.fromarray(data.chelsea()[::4, ::4]).save("cat.png")
    assert main(["cat.png", "-k", "2", "--channel-axis", "-4"]) == 2
    assert capsys.readouterr().err == (
        f"{PROG}: error: cat.png: --channel-axis -4: must be 'none' or an int in the range "
        "[-3, 2] for an image with 3 dimensions\n"
    )
    # A positive axis is the core's too: the same picture as the default.
    assert main(["cat.png", "-k", "2", "--channel-axis", "2", "-o", "a.png", "-q"]) == 0
    assert main(["cat.png", "-k", "2", "-o", "b.png", "-q"]) == 0
    assert Path("a.png").read_bytes() == Path("b.png").read_bytes()


# ---------------------------------------------------------------------------------------------
# The core's errors, translated once


def test_in_shell_words_names_options_never_parameters():
    from napari_kmeans_filter.cli.errors import in_shell_words

    error = InvalidParameterError(
        "palette",
        "have as many colour channels as the image (3)",
        "a palette of 1 channel(s)",
    )
    assert in_shell_words(error, value="grey.json") == (
        "--apply-palette grey.json: must have as many colour channels as the image (3); "
        "got a palette of 1 channel(s)"
    )
    error = InvalidParameterError(
        "target_psnr",
        "be None unless n_colors='auto' (the fewest colours that reach it)",
        "30.0",
        "With n_colors=8 leave it out.",
    )
    assert in_shell_words(error, value="30", where="cat.png") == (
        "cat.png: --target-psnr 30: must be left out unless -k auto (the fewest colours that "
        "reach it). With -k 8 leave it out"
    )
    error = InvalidParameterError(
        "channel_axis",
        "select an axis with at most 16 entries (colour channels)",
        "axis -1 with 20 entries",
        "For a greyscale stack or volume pass channel_axis=None.",
    )
    assert in_shell_words(error) == (
        "--channel-axis: must select an axis with at most 16 entries (colour channels); got "
        "axis -1 with 20 entries. For a greyscale stack or volume pass --channel-axis none"
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("symptoms")
    Image.fromarray(data.chelsea()).save(folder / "cat.png")
    (folder / "grey.json").write_text(json.dumps({"colors": [[0], [255]], "dtype": "uint8"}))
    return folder


def test_grey_palette_on_an_rgb_image_is_one_line_in_option_words(folder):
    """Issue 16: it printed "The 'palette' parameter has 1 channel(s)..."."""
    completed = run_cli("cat.png", "--apply-palette", "grey.json", cwd=folder)
    assert completed.returncode == 2
    assert completed.stderr == (
        f"{PROG}: error: cat.png: --apply-palette grey.json: must have as many colour channels "
        "as the image (3); got a palette of 1 channel(s)\n"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["cat.png", "grey.json"]


def test_quality_without_k_gets_the_pngquant_hint(folder):
    """Issue 16: it printed the generic "one of the arguments -k ... is required"."""
    completed = run_cli("cat.png", "--quality", "60-80", cwd=folder)
    assert completed.returncode == 2
    (line,) = completed.stderr.splitlines()
    assert line.startswith(f"{PROG}: error: --quality 60-80: pngquant's 0-100 quality score")
    assert "-k auto --target-psnr DB" in line and "required" not in line


def test_neither_k_nor_a_palette_still_says_what_is_missing(folder):
    completed = run_cli("cat.png", cwd=folder)
    assert completed.returncode == 2
    assert completed.stderr == (
        f"{PROG}: error: one of -k/--n-colors or --apply-palette is required "
        f"(see '{PROG} --help')\n"
    )


# ---------------------------------------------------------------------------------------------
# Start-up and progress


def test_help_loads_no_reader_writer_or_progress_library():
    heavy = ("tqdm", "dask", "zarr", "skimage", "PIL", "tifffile", "imagecodecs")
    code = (
        "import sys\n"
        "from napari_kmeans_filter.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[]"


class _Terminal:
    """A stderr that says it is a terminal, keeping what is written."""

    encoding = "utf-8"

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return True


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_a_terminal_gets_a_progress_bar_that_is_cleared(tmp_path, monkeypatch, lazy):
    import tifffile

    from napari_kmeans_filter.cli import main

    monkeypatch.chdir(tmp_path)
    tifffile.imwrite("cat.tif", data.chelsea(), photometric="rgb")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    output = "cat.zarr" if lazy else "cat.png"
    arguments = ["cat.tif", "-k", "4", "-o", output, *(["--chunked"] if lazy else [])]
    assert main(arguments) == 0
    lines = [line for line in re.split(r"[\r\n]", terminal.text) if line.strip()]
    bars = [line for line in lines if re.match(r"\[1/1\] cat\.tif \|.*\| +\d+%, \w", line)]
    assert bars, terminal.text
    assert any("writing" in bar for bar in bars)
    # The finished line is printed whole, and the bar is cleared at the end.
    assert re.search(r"\[1/1\] cat\.tif → " + re.escape(output), terminal.text)
    assert terminal.text.endswith("\r") and not terminal.text.rsplit("\r", 2)[-2].strip()
    written = np.asarray(Image.open("cat.png").convert("RGB")) if not lazy else None
    if written is not None:
        assert len(np.unique(written.reshape(-1, 3), axis=0)) <= 4
