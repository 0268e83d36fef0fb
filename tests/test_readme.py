"""README.md's quick start must be what CI runs, and its Python examples must run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def _ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [
        line.strip()
        for line in lines
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]


def test_quick_start_has_exactly_an_install_and_a_test_command():
    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    install_and_demo, run_tests = commands
    assert "pip install" in install_and_demo
    assert "napari-kmeans-filter demo" in install_and_demo
    assert run_tests.startswith("bash ")


def test_ci_runs_the_readme_test_command():
    assert _ci_commands() == [_quick_start_commands()[1]]


def test_readme_test_command_points_at_an_existing_script():
    command = _quick_start_commands()[1]
    script = command.split()[1]
    assert (ROOT / script).is_file(), command


def _python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def _is_console_example(code: str) -> bool:
    """Whether a Python example is typed into napari's console (it uses ``viewer``)."""
    return re.search(r"\bviewer\b", code) is not None


@pytest.mark.parametrize("index", range(len(_python_examples())))
def test_readme_python_examples_run(index, tmp_path, monkeypatch):
    code = _python_examples()[index]
    if _is_console_example(code):
        pytest.skip("napari console example: run by test_readme_console_examples_run_in_order")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md example {index}", "exec"), {"__name__": "__readme__"})


def run_console_examples(examples: list[tuple[int, str]], viewer, source: str) -> dict:
    """Run napari console examples one after the other in one namespace, as typed.

    napari's console starts with ``viewer`` (and ``napari``) defined; every example sees
    what the ones before it left, exactly as in a console session.
    """
    import napari

    namespace = {"__name__": "__console__", "viewer": viewer, "napari": napari}
    for index, code in examples:
        exec(compile(code, f"{source} console example {index}", "exec"), namespace)
    return namespace


@pytest.mark.viewer
def test_readme_console_examples_run_in_order(make_napari_viewer):
    examples = [(i, code) for i, code in enumerate(_python_examples()) if _is_console_example(code)]
    assert examples, "README.md has no napari console example"
    viewer = make_napari_viewer()
    # What the README says to do first: File > Open Sample > napari k-means filter > Cat.
    (cat,) = viewer.open_sample("napari-kmeans-filter", "cat")
    original = cat.data.copy()
    run_console_examples(examples, viewer, "README.md")
    names = [layer.name for layer in viewer.layers]
    assert "chelsea clusters" in names, names
    assert any(name.startswith("chelsea k=") for name in names), names
    np.testing.assert_array_equal(cat.data, original)


def test_api_reference_is_up_to_date(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_api", ROOT / "docs" / "make_api.py")
    make_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_api)
    committed = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert make_api.render() == committed, "run: python docs/make_api.py"
