"""docs/napari.md: its console examples run as written, in order, in a real viewer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "napari.md"


@pytest.mark.viewer
def test_napari_doc_console_examples_run_in_order(make_napari_viewer, run_console_examples):
    examples = list(enumerate(re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.S)))
    assert len(examples) >= 3
    viewer = make_napari_viewer()
    (cat,) = viewer.open_sample("napari-kmeans-filter", "cat")
    original = cat.data.copy()
    namespace = run_console_examples(examples, viewer, "docs/napari.md")
    np.testing.assert_array_equal(namespace["again"].labels, namespace["result"].labels)
    assert [layer.name for layer in viewer.layers] == ["chelsea", "chelsea k=6", "chelsea clusters"]
    np.testing.assert_array_equal(cat.data, original)


def test_napari_doc_shows_the_screenshots_the_script_makes():
    images = set(re.findall(r"\]\((images/[^)]+\.png)\)", DOC.read_text("utf-8")))
    script = (DOC.parent / "make_screenshots.py").read_text("utf-8")
    made = {f"images/{name}" for name in re.findall(r'"([\w-]+\.png)"', script)}
    assert images == made, images ^ made
    for image in images:
        assert (DOC.parent / image).is_file(), image
