"""What a packager ships: the wheel installed on its own, its metadata, the version scheme,
the napari hub files and the one pinned lint version."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "napari-kmeans-filter"
REPO_URL = "https://github.com/napari-kmeans-filter/napari-kmeans-filter"
# The project-URL labels napari hub shows (source, bug tracker, documentation, support).
HUB_URL_LABELS = {"Source Code", "Bug Tracker", "Documentation", "User Support"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _source_version() -> str:
    # Read the file, not the import: the import may resolve to another checkout.
    text = (ROOT / "src" / "napari_kmeans_filter" / "_version.py").read_text(encoding="utf-8")
    (version,) = re.findall(r'^__version__ = "([^"]+)"$', text, flags=re.M)
    return version


# ----------------------------------------------------------------------- version scheme
def test_version_is_a_normalised_pep440_version_that_the_changelog_agrees_with():
    version = _source_version()
    assert str(Version(version)) == version, "write the version in its normalised form"
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text("utf-8"), re.M)
    assert headings and headings[0] == "Unreleased", "CHANGELOG.md starts with [Unreleased]"
    parsed = Version(version)
    if parsed.is_devrelease:
        # Between releases: the next release is not in the changelog yet.
        assert parsed.base_version not in headings, (
            f"{parsed.base_version} is already released: bump _version.py past it"
        )
    else:
        assert version in headings, f"CHANGELOG.md has no section for release {version}"


def test_a_release_tag_on_this_commit_names_this_version():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tags = subprocess.run(
        [git, "-C", str(ROOT), "tag", "--points-at", "HEAD", "--list", "v*"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(tag == f"v{_source_version()}" for tag in tags), tags


def test_package_version_is_the_source_version():
    import napari_kmeans_filter

    module_root = Path(napari_kmeans_filter.__file__).resolve().parent
    if module_root != ROOT / "src" / "napari_kmeans_filter":
        pytest.skip(f"napari_kmeans_filter is imported from another tree: {module_root}")
    assert napari_kmeans_filter.__version__ == _source_version()


# ------------------------------------------------------------------------------- lint pin
def test_one_pinned_ruff_version_for_tests_dev_and_pre_commit():
    extras = _pyproject()["project"]["optional-dependencies"]
    ruff_requirements = [
        (extra, requirement)
        for extra, requirements in extras.items()
        for requirement in requirements
        if re.match(r"ruff\b", requirement)
    ]
    # dev gets ruff through the testing extra, so there is exactly one pin.
    assert [extra for extra, _ in ruff_requirements] == ["testing"], ruff_requirements
    assert "napari-kmeans-filter[testing]" in extras["dev"]
    (pinned,) = re.findall(r"^ruff==([\w.]+)$", ruff_requirements[0][1])
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    (ruff_repo,) = [r for r in config["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    assert ruff_repo["rev"] == f"v{pinned}"


# ------------------------------------------------------------------------ napari hub files
def _markdown_targets(text: str) -> list[str]:
    inline = re.findall(r"!?\[[^\]]*\]\(\s*([^)\s]+)", text)
    html = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", text)
    return inline + html


@pytest.mark.parametrize(
    "page",
    [
        ".napari-hub/DESCRIPTION.md",
        # The README is the long description on PyPI and the page napari hub shows today.
        "README.md",
    ],
)
def test_hub_page_links_are_absolute_and_point_at_files_that_exist(page):
    # The hub (and PyPI) render the page away from the repository: relative links break.
    targets = _markdown_targets((ROOT / page).read_text(encoding="utf-8"))
    assert targets, "the page has no links or images to check"
    in_repo = re.compile(
        re.escape(REPO_URL) + r"/(?:blob|tree)/main/(?P<a>[^?#]+)"
        r"|https://raw\.githubusercontent\.com/napari-kmeans-filter/napari-kmeans-filter"
        r"/main/(?P<b>[^?#]+)"
    )
    for target in targets:
        assert target.startswith("https://"), f"{page}: {target} is not an absolute https URL"
        match = in_repo.match(target)
        if match:
            path = match.group("a") or match.group("b")
            assert (ROOT / path).exists(), f"{page}: {target} names a missing file"


def test_hub_config_labels_use_the_hub_ontology():
    config = yaml.safe_load((ROOT / ".napari-hub" / "config.yml").read_text(encoding="utf-8"))
    assert config["labels"]["ontology"] == "EDAM-BIOIMAGING:alpha06"
    assert config["labels"]["terms"]


# ------------------------------------------------------------------ the wheel, on its own
# Run in a fresh interpreter whose sys.path has the installed wheel first and no source
# tree (the editable install's .pth entry, PYTHONPATH or the current directory) at all.
_INSPECT_INSTALLED = r"""
import json, sys
from pathlib import Path

target = Path(sys.argv[1]).resolve()
sys.path[:] = [
    entry for entry in sys.path
    if entry and (
        Path(entry).resolve() == target
        or not (Path(entry) / "napari_kmeans_filter" / "__init__.py").exists()
    )
]
from importlib import metadata

import napari_kmeans_filter
from npe2 import PluginManager

manager = PluginManager()
manager.discover()
manifest = manager.get_manifest("napari-kmeans-filter")
manifest.validate_imports()
dist = metadata.distribution("napari-kmeans-filter")
print(json.dumps({
    "module": napari_kmeans_filter.__file__,
    "version": napari_kmeans_filter.__version__,
    "dist_root": str(Path(dist.locate_file("")).resolve()),
    "dist_version": dist.version,
    "manifest_version": manifest.package_metadata.version,
    "categories": [str(c) for c in manifest.categories],
    "widgets": [w.display_name for w in manifest.contributions.widgets],
}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("build", reason="the testing extra installs build")
    pytest.importorskip("hatchling", reason="the testing extra installs hatchling")
    out = tmp_path_factory.mktemp("dist")
    # Without isolation: the build backend comes from the testing extra, nothing is
    # downloaded. Without --wheel: the wheel is built from the sdist, so a file missing
    # from the sdist shows up as a broken wheel.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.mark.slow
def test_wheel_and_sdist_ship_the_license_manifest_and_metadata(built):
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "BSD 3-Clause" in license_text and "napari-kmeans-filter developers" in license_text

    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = wheel.namelist()
        assert "napari_kmeans_filter/napari.yaml" in names
        (license_name,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert wheel.read(license_name).decode("utf-8") == license_text
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = HeaderParser().parsestr(wheel.read(metadata_name).decode("utf-8"))
        (entry_points_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = wheel.read(entry_points_name).decode("utf-8")
        # Tests, docs and benchmarks stay out of the wheel.
        assert all(n.startswith(("napari_kmeans_filter/", "napari_kmeans_filter-")) for n in names)

    assert metadata["Name"] == PLUGIN_NAME
    assert metadata["Version"] == _source_version()
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert "License" not in metadata, "the deprecated free-text License field is back"
    assert not [c for c in metadata.get_all("Classifier") if c.startswith("License ::")]
    assert "Framework :: napari" in metadata.get_all("Classifier")
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert HUB_URL_LABELS <= set(urls), urls
    assert all(url.startswith("https://") for url in urls.values())
    assert urls["Source Code"] == REPO_URL
    assert "k-means" in metadata["Summary"].lower()
    assert re.search(
        r"^\[napari\.manifest\]\s*\n"
        + re.escape(PLUGIN_NAME)
        + r" = napari_kmeans_filter:napari\.yaml$",
        entry_points,
        re.M,
    )

    with tarfile.open(built["sdist"]) as sdist:
        top = built["sdist"].name.removesuffix(".tar.gz")
        members = set(sdist.getnames())
        assert f"{top}/LICENSE" in members
        pkg_info = HeaderParser().parsestr(
            sdist.extractfile(f"{top}/PKG-INFO").read().decode("utf-8")
        )
    assert pkg_info["License-Expression"] == "BSD-3-Clause"


@pytest.mark.slow
def test_installed_wheel_alone_is_discovered_and_valid_for_npe2(built, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(built["wheel"]),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    workdir = tmp_path / "elsewhere"  # not the repository, so "" on sys.path is no source tree
    workdir.mkdir()

    inspected = subprocess.run(
        [sys.executable, "-c", _INSPECT_INSTALLED, str(target)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert inspected.returncode == 0, inspected.stderr
    found = json.loads(inspected.stdout.strip().splitlines()[-1])
    assert Path(found["module"]).resolve().is_relative_to(target.resolve()), found["module"]
    assert Path(found["dist_root"]) == target.resolve()
    version = _source_version()
    assert found["version"] == found["dist_version"] == found["manifest_version"] == version
    assert found["categories"] == ["Image Processing", "Segmentation"]
    assert found["widgets"] == ["K-means color filter"]

    # npe2's own command line, on the installed distribution.
    validated = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "--imports", PLUGIN_NAME],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "valid" in validated.stdout

    # The console script pip wrote for the wheel runs the installed package.
    script = target / "bin" / "napari-kmeans-filter"
    completed = subprocess.run(
        [sys.executable, str(script), "--version"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.split() == [PLUGIN_NAME, version]
