"""``python -m napari_kmeans_filter``: the same as the ``napari-kmeans-filter`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
