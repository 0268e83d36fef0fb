"""The article's colour quantisation of the cat, with this package's estimator.

Every pixel a point, k-means on the points, each pixel repainted with its
cluster's centre.  The code is the article's (which used
``from dask_ml.cluster import KMeans``; ``from sklearn.cluster import KMeans``
runs it too) with only the import line changed.  Run it with
``python docs/examples/article.py``; tests/test_article.py runs it too.
"""

import numpy as np
from skimage import data

from napari_kmeans_filter import KMeansQuantizer as KMeans

image = data.chelsea()
pixels = image.reshape(-1, 3)  # one row per pixel: (135300, 3)
print("unique colours in the photo:", len(np.unique(pixels, axis=0)))

quantised = {}
for k in (2, 5, 10, 15, 24):
    kmeans = KMeans(n_clusters=k).fit(pixels)
    new_pixels = kmeans.cluster_centers_[kmeans.labels_]
    quantised[k] = new_pixels.reshape(image.shape).astype(np.uint8)
    print(f"k = {k:2d}: {len(np.unique(new_pixels, axis=0))} unique colours")
