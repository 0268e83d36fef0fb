"""The docs cannot drift: what docs/ shows is what the current code produces.

* The gallery (docs/images/gallery/, written by docs/make_gallery.py): every committed
  quantised PNG has byte for byte the palette and the indices of a fresh run, the
  original and the contact sheet's tiles are the pixels of a fresh run, and no other file
  is there.
* docs/gallery.md is exactly what docs/make_gallery.py renders from a fresh run and the
  committed files (so every k, PSNR, colour count and size on it is checked).
* docs/cli.md: every ``console`` example is run, in order, in a directory holding the
  example files its own script writes, and its output must be the one shown (times
  aside). The CLI runs in this process (``cli.main``, the code the console script
  calls), so that the examples cost their work and not a fresh interpreter each;
  tests/test_cli.py runs the options as subprocesses.

``python tests/test_docs.py`` reruns the examples of docs/cli.md and rewrites their
outputs in place (the gallery is rewritten by ``python docs/make_gallery.py``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLI_PAGE = ROOT / "docs" / "cli.md"
PROG = "napari-kmeans-filter"
#: How the directory the examples ran in is named in docs/cli.md's outputs.
DOC_RUN_DIR = "/tmp/docrun"
#: A console block whose preceding line starts with this is not run (measurements).
NOT_RUN = "<!-- not run by the tests"
REGENERATE = "run: python docs/make_gallery.py, and commit the images and docs/gallery.md"


def _load_make_gallery():
    spec = importlib.util.spec_from_file_location("make_gallery", ROOT / "docs" / "make_gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_gallery = _load_make_gallery()


# ---------------------------------------------------------------------------------------------
# The gallery


@pytest.fixture(scope="module")
def gallery_images():
    return make_gallery.compute()


def test_gallery_holds_exactly_the_demo_images(gallery_images):
    committed = sorted(path.name for path in make_gallery.GALLERY.iterdir())
    assert committed == sorted(image.name for image in gallery_images), REGENERATE


def test_gallery_images_match_the_code(gallery_images):
    from skimage import data

    from napari_kmeans_filter.cli import contact_sheet_boxes

    for image in gallery_images:
        path = make_gallery.GALLERY / image.name
        assert path.is_file(), f"{path} is missing; {REGENERATE}"
        with Image.open(path) as png:
            if image.result is not None:
                # Quantised: an indexed PNG whose palette is the result's palette and
                # whose indices are its labels, byte for byte.
                assert png.mode == "P", image.name
                colors = image.result.palette.colors
                palette = bytes(png.getpalette("RGB"))
                assert palette[: colors.size] == colors.astype(np.uint8).tobytes(), (
                    f"{image.name}: palette differs from a fresh run; {REGENERATE}"
                )
                index = np.asarray(png)
                assert index.tobytes() == image.result.labels.astype(np.uint8).tobytes(), (
                    f"{image.name}: indices differ from a fresh run; {REGENERATE}"
                )
                continue
            pixels = np.asarray(png.convert("RGB"))
        if image.kind == "original":
            np.testing.assert_array_equal(pixels, data.chelsea(), err_msg=image.name)
            continue
        # The contact sheet: each tile is the image it shows (captions are drawn text,
        # whose pixels depend on Pillow's font; their text is the page's PSNR).
        assert image.kind == "sheet"
        tile_shape = image.tiles[0][0].shape[:2]
        size, origins = contact_sheet_boxes(len(image.tiles), tile_shape)
        assert pixels.shape[:2] == size, REGENERATE
        height, width = tile_shape
        for (tile, caption), (top, left) in zip(image.tiles, origins, strict=True):
            assert np.array_equal(pixels[top : top + height, left : left + width], tile), (
                f"{image.name}: the tile '{caption}' differs from a fresh run; {REGENERATE}"
            )


def test_gallery_page_is_what_the_script_renders(gallery_images):
    committed = make_gallery.PAGE.read_text(encoding="utf-8")
    assert make_gallery.render(gallery_images) == committed, REGENERATE


# ---------------------------------------------------------------------------------------------
# docs/cli.md: every console example, run


@dataclass
class Block:
    """A console block of docs/cli.md: its place in the text and its commands."""

    start: int  # offset of the first body line
    end: int  # offset just after the last body line
    indent: str
    commands: list[tuple[str, list[str]]] = field(default_factory=list)


def example_script(text: str) -> str:
    """The ```python block under '## Example files'."""
    section = text.split("## Example files", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def console_blocks(text: str) -> list[Block]:
    """Every ```console block that is run, with its commands and expected output."""
    blocks = []
    fence = re.compile(r"^(?P<indent>[ ]*)```console\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)
    for match in fence.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.strip().startswith(NOT_RUN):
            continue
        indent = match.group("indent")
        block = Block(match.start("body"), match.end("body"), indent)
        for line in match.group("body").splitlines():
            line = line[len(indent) :]
            if line.startswith("$ "):
                block.commands.append((line[2:], []))
            else:
                assert block.commands, f"output before any command in {match.group(0)!r}"
                block.commands[-1][1].append(line)
        blocks.append(block)
    return blocks


def shell_words(command: str, cwd: Path) -> list[str]:
    """The words bash makes of ``command`` (quotes removed, globs expanded)."""
    completed = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {command}"],
        cwd=cwd,
        capture_output=True,
        check=True,
    )
    return completed.stdout.decode().split("\0")[:-1]


@contextlib.contextmanager
def working_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_example(command: str, cwd: Path) -> list[str]:
    """Run one example as the page shows it; return its output lines (stdout, stderr)."""
    from napari_kmeans_filter.cli import main

    words = shlex.split(command)
    if words[0] != PROG:
        completed = subprocess.run(
            ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, check=False
        )
        return (completed.stdout + completed.stderr).splitlines()
    out, err = io.StringIO(), io.StringIO()
    with working_directory(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main(shell_words(command, cwd)[1:])
    return (out.getvalue() + err.getvalue()).splitlines()


def shown(line: str, cwd: Path) -> str:
    """An output line as the page shows it: the run directory named DOC_RUN_DIR."""
    for directory in {str(cwd.resolve()), str(cwd)}:
        line = line.replace(directory, DOC_RUN_DIR)
    return line.replace(" -> ", " → ").replace("->", "→")


def comparable(line: str) -> str:
    """A line without what differs from run to run: the time a file or batch took."""
    return re.sub(r"\d+\.\d+ s$", "<time> s", line)


def example_directory(text: str, parent: Path) -> Path:
    """A directory holding the example files, written by the page's own script."""
    directory = parent / "docrun"
    directory.mkdir()
    with working_directory(directory):
        exec(compile(example_script(text), "docs/cli.md example files", "exec"), {})
    return directory


@pytest.mark.skipif(shutil.which("bash") is None, reason="the examples are shell commands")
def test_cli_examples_print_what_the_page_shows(tmp_path, monkeypatch):
    monkeypatch.delenv("NAPARI_KMEANS_FILTER_DEBUG", raising=False)
    text = CLI_PAGE.read_text(encoding="utf-8")
    blocks = console_blocks(text)
    assert sum(len(block.commands) for block in blocks) >= 25
    directory = example_directory(text, tmp_path)
    for block in blocks:
        for command, expected in block.commands:
            printed = [shown(line, directory) for line in run_example(command, directory)]
            assert [comparable(line) for line in printed] == [
                comparable(line) for line in expected
            ], f"$ {command}\n(run: python tests/test_docs.py to rewrite docs/cli.md)"


def test_cli_page_documents_every_option():
    import inspect

    from napari_kmeans_filter import quantize
    from napari_kmeans_filter.cli import build_demo_parser, build_parser

    text = CLI_PAGE.read_text(encoding="utf-8")
    speed = inspect.signature(quantize).parameters["speed"].default
    assert f"fastest); default {speed} |" in text and f"default is {speed}." in text
    for parser in (build_parser(), build_demo_parser()):
        for action in parser._actions:
            for option in action.option_strings:
                if option != "-h" and option != "--help":
                    assert f"`{option}" in text, option


def rewrite_cli_page() -> None:
    """Rerun the examples of docs/cli.md and write their outputs into the page."""
    text = CLI_PAGE.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as parent:
        directory = example_directory(text, Path(parent))
        pieces, position = [], 0
        for block in console_blocks(text):
            body = []
            for command, _ in block.commands:
                print(f"$ {command}", flush=True)
                printed = [shown(line, directory) for line in run_example(command, directory)]
                body += [f"$ {command}", *printed]
            pieces += [text[position : block.start]]
            pieces += ["".join(f"{block.indent}{line}\n" if line else "\n" for line in body)]
            position = block.end
        pieces.append(text[position:])
    CLI_PAGE.write_text("".join(pieces), encoding="utf-8")
    print(f"wrote {CLI_PAGE}")


if __name__ == "__main__":
    sys.exit(rewrite_cli_page())


# ---------------------------------------------------------------------------------------------
# docs/architecture.md: the module map, read from the source


def test_architecture_page_is_current_and_the_core_imports_no_shell():
    spec = importlib.util.spec_from_file_location(
        "make_architecture", ROOT / "docs" / "make_architecture.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert module.render() == page, "run: python docs/make_architecture.py, and commit the page"
    found = module.modules(module.PACKAGE)
    for name, info in found.items():
        assert not info["topic"].startswith("(no docstring)"), f"{name}: name its topic"
        group = module._group(name)
        for target in info["imports"]:
            target_group = module._group(target)
            if group == "core":
                assert target_group == "core", f"the core module {name} imports {target}"
            elif group in module.SHELLS.values():
                # A shell imports the core and itself, never another shell.
                assert target_group in ("core", group), f"{name} imports {target}"
    # Nowhere an import circle, function-level imports included: each module reads as a
    # layer over the ones it imports (two shell modules once imported each other).
    assert _cycles({name: info["imports"] for name, info in found.items()}) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target == node:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_widget_page_names_the_sample_images_as_the_menu_does():
    import yaml

    manifest = yaml.safe_load(
        (ROOT / "src" / "napari_kmeans_filter" / "napari.yaml").read_text(encoding="utf-8")
    )
    page = (ROOT / "docs" / "napari.md").read_text(encoding="utf-8")
    names = [sample["display_name"] for sample in manifest["contributions"]["sample_data"]]
    assert names
    for name in names:
        assert f"**{name}**" in page, name
