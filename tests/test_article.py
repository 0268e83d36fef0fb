"""The article's example (docs/examples/article.py, shown in docs/article.md) runs as shown."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "examples" / "article.py"
PAGE = ROOT / "docs" / "article.md"


def test_the_page_shows_the_script():
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert SCRIPT.read_text() in blocks


def test_only_the_import_differs_from_the_article():
    """Swapping the import back to scikit-learn's is the whole difference."""
    lines = SCRIPT.read_text().splitlines()
    ours = [line for line in lines if "napari_kmeans_filter" in line]
    assert ours == ["from napari_kmeans_filter import KMeansQuantizer as KMeans"]
    assert "KMeansQuantizer" not in "\n".join(line for line in lines if line not in ours)


def test_the_article_runs(capsys):
    namespace = runpy.run_path(str(SCRIPT), run_name="article")
    out = capsys.readouterr().out
    image = namespace["image"]
    for k, recoloured in namespace["quantised"].items():
        assert recoloured.shape == image.shape and recoloured.dtype == np.uint8
        assert f"k = {k:2d}: {k} unique colours" in out
        assert len(np.unique(recoloured.reshape(-1, 3), axis=0)) == k
    assert sorted(namespace["quantised"]) == [2, 5, 10, 15, 24]
