"""The npe2 manifest: valid, discoverable, and every contribution points at real code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from npe2 import PluginManifest

import napari_kmeans_filter

PLUGIN_NAME = "napari-kmeans-filter"
MANIFEST_PATH = Path(napari_kmeans_filter.__file__).with_name("napari.yaml")


@pytest.fixture(scope="module")
def manifest() -> PluginManifest:
    return PluginManifest.from_distribution(PLUGIN_NAME)


def test_manifest_is_found_through_the_entry_point(manifest):
    (entry_point,) = entry_points(group="napari.manifest", name=PLUGIN_NAME)
    assert entry_point.value == "napari_kmeans_filter:napari.yaml"
    assert MANIFEST_PATH.is_file()
    assert manifest.name == PLUGIN_NAME


@pytest.mark.parametrize("target", [PLUGIN_NAME, str(MANIFEST_PATH)])
def test_npe2_validate_passes(target):
    npe2 = shutil.which("npe2") or pytest.skip("npe2 command line not installed")
    completed = subprocess.run(
        [npe2, "validate", target], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "valid" in completed.stdout


def test_every_python_name_imports(manifest):
    # What `npe2 validate --imports` checks, in-process, so a failure shows a traceback.
    manifest.validate_imports()
    for command in manifest.contributions.commands:
        module_name, _, attribute = command.python_name.partition(":")
        assert callable(getattr(import_module(module_name), attribute))


def test_widget_contribution(manifest):
    (widget,) = manifest.contributions.widgets
    assert widget.display_name == "K-means color filter"
    command = next(c for c in manifest.contributions.commands if c.id == widget.command)
    assert command.python_name == "napari_kmeans_filter._napari._widget:KMeansColourWidget"


def test_layers_menu_opens_the_widget(manifest):
    (widget,) = manifest.contributions.widgets
    filter_menu = manifest.contributions.menus["napari/layers/filter"]
    assert [item.command for item in filter_menu] == [widget.command]


def test_sample_data_includes_the_cat_and_other_real_photos(manifest):
    samples = {sample.key: sample for sample in manifest.contributions.sample_data}
    assert {"cat", "astronaut", "coffee"} <= set(samples)
    commands = {c.id: c for c in manifest.contributions.commands}
    expected = {"cat": skimage.data.chelsea(), "astronaut": skimage.data.astronaut()}
    for key, photo in expected.items():
        module_name, _, attribute = commands[samples[key].command].python_name.partition(":")
        ((data, layer_kwargs),) = getattr(import_module(module_name), attribute)()
        np.testing.assert_array_equal(data, photo)
        assert layer_kwargs["rgb"] is True


def test_importing_the_package_does_not_import_napari():
    code = (
        "import sys, napari_kmeans_filter; "
        "assert 'napari' not in sys.modules and 'qtpy' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('napari', 'qtpy')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
