"""The quantisers compared by bench_quantize.py / bench_dask.py.

Each method takes an RGB uint8 image (H, W, 3) and k, and returns a dict with
  "image": the RGB uint8 image a user would save (float reconstructions rounded to uint8),
  "centers", "labels": the float centres (image units) and per-pixel labels (KMeans peers
      only), from which the harness computes the float-centre MSE after the timer stops,
  "n_iter": iterations reported by the method where it reports them.
Everything from the uint8 input to the uint8 output is inside the timed call; nothing else is.
"""

from __future__ import annotations

import numpy as np

SEED = 0


def _to_uint8(centers: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(centers), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- this project
def ours(img, k):
    from napari_kmeans_filter import quantize

    res = quantize(img, k, random_state=SEED)
    out = np.asarray(res.image)
    return {
        "image": out,
        "n_iter": getattr(res, "n_iter", None),
        "reported_mse": float(res.mse) if getattr(res, "mse", None) is not None else None,
    }


# --------------------------------------------------------------------------- scikit-learn
def sklearn_all(img, k):
    """scikit-learn KMeans on every pixel (float32 to be kind to it: half the memory of float64)."""
    from sklearn.cluster import KMeans

    h, w, c = img.shape
    x = img.reshape(-1, c).astype(np.float32)
    km = KMeans(n_clusters=k, n_init=1, random_state=SEED).fit(x)
    labels = km.labels_
    out = _to_uint8(km.cluster_centers_)[labels].reshape(h, w, c)
    return {
        "image": out,
        "centers": km.cluster_centers_,
        "labels": labels,
        "n_iter": int(km.n_iter_),
    }


def sklearn_1000(img, k):
    """scikit-learn's colour-quantisation example: fit 1000 random pixels in [0, 1], predict all."""
    from sklearn.cluster import KMeans
    from sklearn.utils import shuffle

    image = np.array(img, dtype=np.float64) / 255
    w, h, d = image.shape
    image_array = np.reshape(image, (w * h, d))
    sample = shuffle(image_array, random_state=SEED, n_samples=1_000)
    kmeans = KMeans(n_clusters=k, random_state=SEED).fit(sample)
    labels = kmeans.predict(image_array)
    centers = kmeans.cluster_centers_ * 255
    out = _to_uint8(centers)[labels].reshape(w, h, d)
    return {"image": out, "centers": centers, "labels": labels, "n_iter": int(kmeans.n_iter_)}


# --------------------------------------------------------------------------- Pillow
def _pillow(img, k, method):
    from PIL import Image

    q = Image.fromarray(img).quantize(colors=k, method=method, dither=Image.Dither.NONE)
    return {"image": np.asarray(q.convert("RGB")), "n_iter": None}


def pillow_mediancut(img, k):
    from PIL import Image

    return _pillow(img, k, Image.Quantize.MEDIANCUT)


def pillow_fastoctree(img, k):
    from PIL import Image

    return _pillow(img, k, Image.Quantize.FASTOCTREE)


# --------------------------------------------------------------------------- dask-ml
def dask_ml(img, k):
    """dask-ml KMeans as the seed article used it: the uint8 pixel vector as a dask array,
    KMeans(n_clusters=k) with its defaults (k-means||), fit, then centres[labels_].
    random_state is fixed for reproducibility; chunks are dask's default ('auto')."""
    import dask.array as da
    from dask_ml.cluster import KMeans

    h, w, c = img.shape
    pixels = da.from_array(img.reshape(-1, c))
    km = KMeans(n_clusters=k, random_state=SEED)
    km.fit(pixels)
    labels = np.asarray(km.labels_.compute() if hasattr(km.labels_, "compute") else km.labels_)
    centers = np.asarray(km.cluster_centers_, dtype=np.float64)
    out = _to_uint8(centers)[labels].reshape(h, w, c)
    return {"image": out, "centers": centers, "labels": labels, "n_iter": int(km.n_iter_)}


# --------------------------------------------------------------------------- OpenCV
def opencv(img, k):
    """cv2.kmeans as in OpenCV's tutorial: float32 pixels, criteria (EPS + MAX_ITER, 10, 1.0),
    attempts=1, KMEANS_PP_CENTERS, RNG seeded."""
    import cv2

    h, w, c = img.shape
    z = img.reshape(-1, c).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(SEED)
    _, labels, centers = cv2.kmeans(z, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    out = _to_uint8(centers)[labels].reshape(h, w, c)
    return {"image": out, "centers": centers, "labels": labels, "n_iter": None}


METHODS = {
    "ours": ours,
    "sklearn-all": sklearn_all,
    "sklearn-1000": sklearn_1000,
    "pillow-mediancut": pillow_mediancut,
    "pillow-fastoctree": pillow_fastoctree,
    "dask-ml": dask_ml,
    "opencv": opencv,
}

LABELS = {
    "ours": "napari-kmeans-filter `quantize`",
    "sklearn-all": "scikit-learn KMeans, all pixels (n_init=1)",
    "sklearn-1000": "scikit-learn example (fit 1000 px, predict all)",
    "pillow-mediancut": "Pillow quantize MEDIANCUT",
    "pillow-fastoctree": "Pillow quantize FASTOCTREE",
    "dask-ml": "dask-ml KMeans (seed article)",
    "opencv": "OpenCV cv2.kmeans (10 iter, KMEANS_PP)",
}

# Peers that take minutes on 12 MP: one repeat there, skipped at 12 MP by --quick.
SLOW_AT_12MP = {"sklearn-all", "dask-ml"}


def available(name: str) -> str | None:
    """None if the method can run here, else the reason it cannot."""
    mods = {
        "ours": "napari_kmeans_filter",
        "dask-ml": "dask_ml.cluster",
        "opencv": "cv2",
        "pillow-mediancut": "PIL",
        "pillow-fastoctree": "PIL",
        "sklearn-all": "sklearn.cluster",
        "sklearn-1000": "sklearn.cluster",
    }
    try:
        mod = __import__(mods[name], fromlist=["_"])
        if name == "ours" and not hasattr(mod, "quantize"):
            return "napari_kmeans_filter.quantize is not importable yet"
    except Exception as exc:  # ImportError, or a broken install
        return f"{type(exc).__name__}: {exc}"
    return None


def mse_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """MSE over all pixels and channels (uint8 units) and PSNR with data range 255."""
    err = 0.0
    fa = a.reshape(-1)
    fb = b.reshape(-1)
    step = 1 << 22
    for s in range(0, fa.size, step):
        d = fa[s : s + step].astype(np.float64) - fb[s : s + step]
        err += float(np.dot(d, d))
    mse = err / fa.size
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    return mse, float(psnr)
