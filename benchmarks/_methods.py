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
def _quantize_parameters():
    import inspect

    from napari_kmeans_filter import quantize

    return inspect.signature(quantize).parameters


def supports(param: str) -> bool:
    """True when the installed `quantize` accepts the keyword `param` (by its signature)."""
    try:
        return param in _quantize_parameters()
    except Exception:
        return False


def default_speed():
    """The default of `quantize(speed=...)`, or None when `speed` does not exist."""
    import inspect

    try:
        p = _quantize_parameters().get("speed")
    except Exception:
        return None
    if p is None or p.default is inspect.Parameter.empty:
        return None
    return p.default


def _ours(speed):
    def run(img, k):
        from napari_kmeans_filter import quantize

        kw = {} if speed is None else {"speed": speed}
        res = quantize(img, k, random_state=SEED, **kw)
        out = np.asarray(res.image)
        return {
            "image": out,
            "n_iter": getattr(res, "n_iter", None),
            "reported_mse": float(res.mse) if getattr(res, "mse", None) is not None else None,
        }

    run.__name__ = "ours" if speed is None else f"ours_speed{speed}"
    run.__doc__ = (
        "quantize(img, k, random_state=0) with the default speed"
        if speed is None
        else f"quantize(img, k, random_state=0, speed={speed})"
    )
    return run


ours = _ours(None)
ours_speed1 = _ours(1)
ours_speed10 = _ours(10)

# method name -> the `speed=` it passes (None: the default of the installed quantize)
OURS_SPEEDS = {"ours-speed1": 1, "ours": None, "ours-speed10": 10}


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


# --------------------------------------------------------------------------- libimagequant
def _rgba_bytes(img):
    h, w, _ = img.shape
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = img
    rgba[..., 3] = 255
    return rgba.tobytes()


def libimagequant(img, k, dithering_level=0.0):
    """libimagequant (pngquant's library) through the `imagequant` package, no dithering,
    its defaults otherwise (speed 4, quality 0-100).

    Called through `imagequant.quantize_raw_rgba_bytes` with the RGBA bytes made by numpy:
    `imagequant.quantize_pil_image` builds those bytes with a Python loop over every pixel
    (`bytes([c for pix in image.getdata() for c in pix])`), which is the wrapper's cost, not
    libimagequant's; "libimagequant-pil" measures that call as documented. Both give the same
    palette and labels."""
    import imagequant

    h, w, _ = img.shape
    idx, pal = imagequant.quantize_raw_rgba_bytes(
        _rgba_bytes(img), w, h, dithering_level=dithering_level, max_colors=k
    )
    palette = np.asarray(pal, np.uint8).reshape(-1, 4)[:, :3]
    labels = np.frombuffer(idx, np.uint8).reshape(h, w)
    return {"image": palette[labels], "n_iter": None}


def libimagequant_pil(img, k):
    """`imagequant.quantize_pil_image(img.convert("RGBA"), dithering_level=0.0, max_colors=k)`."""
    import imagequant
    from PIL import Image

    q = imagequant.quantize_pil_image(
        Image.fromarray(img).convert("RGBA"), dithering_level=0.0, max_colors=k
    )
    return {"image": np.asarray(q.convert("RGB")), "n_iter": None}


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


# --------------------------------------------------------------------------- faiss
def _faiss(img, k, sample: bool):
    import faiss

    h, w, c = img.shape
    x = np.ascontiguousarray(img.reshape(-1, c), dtype=np.float32)
    kw = {"niter": 25, "seed": SEED, "verbose": False}
    if not sample:
        # faiss trains on at most max_points_per_centroid * k points (256 * k by default):
        # raising it past n / k makes it fit every pixel.
        kw["max_points_per_centroid"] = x.shape[0] // k + 1
    km = faiss.Kmeans(c, k, **kw)
    km.train(x)
    _, labels = km.index.search(x, 1)
    labels = labels.ravel()
    centers = km.centroids.astype(np.float64)
    out = _to_uint8(centers)[labels].reshape(h, w, c)
    return {"image": out, "centers": centers, "labels": labels, "n_iter": kw["niter"]}


def faiss_all(img, k):
    """faiss.Kmeans(3, k, niter=25, seed=0, max_points_per_centroid=n // k + 1) trained on every
    pixel (float32), then `index.search` for every pixel's nearest centre."""
    return _faiss(img, k, sample=False)


def faiss_sample(img, k):
    """faiss.Kmeans(3, k, niter=25, seed=0) with its defaults: trained on a random sample of
    256 * k pixels (max_points_per_centroid), then `index.search` for every pixel."""
    return _faiss(img, k, sample=True)


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


# --------------------------------------------------------------------------- reference
REF_N_INIT = 100


def histogram(img):
    """(distinct colours as float64 (n, 3), their pixel counts, inverse index per pixel)."""
    flat = img.reshape(-1, img.shape[-1]).astype(np.uint32)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    colors = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1)
    return colors.astype(np.float64), counts.astype(np.float64), inverse.ravel()


def nearest(colors, palette, step=1 << 16):
    """Index of the nearest palette entry (squared Euclidean) for each row of `colors`."""
    pal = np.asarray(palette, np.float64)
    p2 = np.einsum("ij,ij->i", pal, pal)
    out = np.empty(len(colors), np.intp)
    for s in range(0, len(colors), step):
        c = colors[s : s + step]
        out[s : s + step] = np.argmin(p2[None, :] - 2 * c @ pal.T, axis=1)
    return out


def kmeans_reference(img, k, n_init=REF_N_INIT):
    """Benchmark-only reference for how good a k-means solution can get: exact k-means on
    every pixel, done on the colour histogram (each distinct colour once, weighted by its
    pixel count: the same objective), with scikit-learn's KMeans and a long search:
    `n_init` k-means++ restarts (its default tolerance), then the best one polished to full
    convergence (Lloyd until no label changes).

    "image" paints every pixel with the nearest uint8-rounded centre (what a user would save);
    "float_mse" is the k-means objective of the float centres per pixel and channel."""
    from sklearn.cluster import KMeans

    colors, counts, inverse = histogram(img)
    best = KMeans(n_clusters=k, n_init=n_init, random_state=SEED).fit(colors, sample_weight=counts)
    km = KMeans(n_clusters=k, init=best.cluster_centers_, n_init=1, tol=0.0, max_iter=1000).fit(
        colors, sample_weight=counts
    )
    if km.inertia_ > best.inertia_:  # Lloyd never increases it; kept for safety
        km = best
    pal8 = _to_uint8(km.cluster_centers_)
    lab = nearest(colors, pal8)
    out = pal8[lab][inverse].reshape(img.shape)
    n_values = counts.sum() * img.shape[-1]
    return {
        "image": out,
        "float_mse": float(km.inertia_) / n_values,
        "centers": km.cluster_centers_,
        "n_iter": int(best.n_iter_) + int(km.n_iter_),
        "n_distinct": len(colors),
    }


METHODS = {
    "ours-speed1": ours_speed1,
    "ours": ours,
    "ours-speed10": ours_speed10,
    "libimagequant": libimagequant,
    "pillow-mediancut": pillow_mediancut,
    "pillow-fastoctree": pillow_fastoctree,
    "sklearn-all": sklearn_all,
    "opencv": opencv,
    "faiss-all": faiss_all,
    "faiss-sample": faiss_sample,
    # not in the default grid (--methods ...): slow, or another way to call a peer above
    "libimagequant-pil": libimagequant_pil,
    "sklearn-1000": sklearn_1000,
    "dask-ml": dask_ml,
}

# The grid of issue 8: ours at three speeds and the peers it names.
DEFAULT_METHODS = [
    "ours-speed1",
    "ours",
    "ours-speed10",
    "libimagequant",
    "pillow-mediancut",
    "pillow-fastoctree",
    "sklearn-all",
    "opencv",
    "faiss-all",
    "faiss-sample",
]
OURS = list(OURS_SPEEDS)

LABELS = {
    "ours": "ours, default speed",
    "ours-speed1": "ours, speed=1",
    "ours-speed10": "ours, speed=10",
    "libimagequant": "libimagequant (imagequant, no dither)",
    "pillow-mediancut": "Pillow quantize MEDIANCUT",
    "pillow-fastoctree": "Pillow quantize FASTOCTREE",
    "sklearn-all": "scikit-learn KMeans, all pixels (n_init=1)",
    "opencv": "OpenCV cv2.kmeans (10 iter, KMEANS_PP)",
    "libimagequant-pil": "libimagequant via quantize_pil_image",
    "sklearn-1000": "scikit-learn example (fit 1000 px, predict all)",
    "dask-ml": "dask-ml KMeans (seed article)",
    "faiss-all": "faiss Kmeans, all pixels (25 iter)",
    "faiss-sample": "faiss Kmeans, 256 px per centre (its default)",
    "kmeans-ref": f"reference: KMeans n_init={REF_N_INIT} on the histogram",
}

# Largest k a method can produce at all (a palette image holds 256 colours): larger k is n/a.
MAX_K = {
    "pillow-mediancut": 256,
    "pillow-fastoctree": 256,
    "libimagequant": 256,
    "libimagequant-pil": 256,
    "sklearn-1000": 1000,  # it fits 1000 pixels: k must not exceed them
}

# How time grows with k, for predicting a cell's time from smaller ones (budget rule):
# Lloyd on every pixel costs n*k per iteration; palette-based quantisers hardly depend on k.
# Ours starts at 0.5 and follows what the run observes (see bench_quantize.predict).
K_EXPONENT = {
    "sklearn-all": 1.0,
    "faiss-all": 1.0,
    "faiss-sample": 1.0,
    "opencv": 1.0,
    "dask-ml": 1.0,
    "sklearn-1000": 1.0,
    "ours": 0.5,
    "ours-speed1": 0.5,
    "ours-speed10": 0.5,
}

# Peers that take minutes on 12 MP and more: skipped there by --quick.
SLOW_PEERS = {"sklearn-all", "dask-ml", "opencv", "faiss-all"}


def available(name: str) -> tuple[str, str] | None:
    """None if the method can run here, else (status, reason): status is "unavailable"
    (a package is missing or broken) or "unsupported" (the installed quantize lacks `speed`)."""
    mods = {
        "ours": "napari_kmeans_filter",
        "ours-speed1": "napari_kmeans_filter",
        "ours-speed10": "napari_kmeans_filter",
        "libimagequant": "imagequant",
        "libimagequant-pil": "imagequant",
        "dask-ml": "dask_ml.cluster",
        "opencv": "cv2",
        "faiss-all": "faiss",
        "faiss-sample": "faiss",
        "pillow-mediancut": "PIL",
        "pillow-fastoctree": "PIL",
        "sklearn-all": "sklearn.cluster",
        "sklearn-1000": "sklearn.cluster",
        "kmeans-ref": "sklearn.cluster",
    }
    try:
        mod = __import__(mods[name], fromlist=["_"])
        if name in OURS_SPEEDS and not hasattr(mod, "quantize"):
            return "unavailable", "napari_kmeans_filter.quantize is not importable"
    except Exception as exc:  # ImportError, or a broken install
        return "unavailable", f"{type(exc).__name__}: {exc}"
    if OURS_SPEEDS.get(name) is not None and not supports("speed"):
        return "unsupported", "speed not supported by the installed quantize"
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
