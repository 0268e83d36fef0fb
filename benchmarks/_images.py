"""Benchmark images: real sample images shipped with scikit-image / scikit-learn, and a
camera-like synthetic mosaic built from them at any size (default 12 MP).

Nothing here is imported by the package or the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "_data"  # git-ignored cache

# Camera-like noise model for the synthetic mosaic (fixed, documented in README/docs).
GAIN_E_PER_DN = 12.0  # photo-electrons per 8-bit step: shot noise std at 128 DN = 3.3 DN
READ_NOISE_DN = 1.0  # Gaussian read noise, in 8-bit steps
NOISE_SEED = 20240601


def _sklearn_image(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    for fname, img in zip(bunch.filenames, bunch.images, strict=True):
        if Path(fname).stem == name:
            return np.ascontiguousarray(img)
    raise KeyError(name)


def real_image(name: str) -> np.ndarray:
    """One of the real RGB uint8 sample images."""
    from skimage import data

    if name in ("chelsea", "astronaut", "coffee"):
        return np.ascontiguousarray(getattr(data, name)())
    if name in ("china", "flower"):
        return _sklearn_image(name)
    raise KeyError(f"unknown image {name!r}")


REAL_IMAGES = ("chelsea", "astronaut", "coffee", "china")


def _mosaic_clean(height: int, width: int) -> np.ndarray:
    """2 x 2 mosaic of the four real images, each resized (bilinear) to a quarter; float 0-255."""
    from skimage.transform import resize

    h2, w2 = height // 2, width // 2
    out = np.empty((height, width, 3), np.float32)
    tiles = [real_image(n) for n in REAL_IMAGES]
    boxes = [
        (0, h2, 0, w2),
        (0, h2, w2, width),
        (h2, height, 0, w2),
        (h2, height, w2, width),
    ]
    for tile, (y0, y1, x0, x1) in zip(tiles, boxes, strict=True):
        out[y0:y1, x0:x1] = resize(
            tile, (y1 - y0, x1 - x0), order=1, anti_aliasing=True, preserve_range=True
        ).astype(np.float32)
    return out


def add_camera_noise(clean: np.ndarray, seed: int = NOISE_SEED) -> np.ndarray:
    """Poisson shot noise (GAIN_E_PER_DN e-/DN) + Gaussian read noise, rounded, clipped to uint8."""
    rng = np.random.default_rng(seed)
    electrons = rng.poisson(np.clip(clean, 0, None) * GAIN_E_PER_DN).astype(np.float32)
    noisy = electrons / GAIN_E_PER_DN
    noisy += rng.normal(0.0, READ_NOISE_DN, size=clean.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def mosaic_shape(megapixels: float) -> tuple[int, int]:
    """(height, width) with a 3:4 aspect ratio and about `megapixels` million pixels (both even)."""
    if abs(megapixels - 12) < 1e-9:
        return 3000, 4000
    h = round((megapixels * 1e6 * 3 / 4) ** 0.5)
    h -= h % 2
    w = round(h * 4 / 3)
    w -= w % 2
    return h, w


def mosaic(megapixels: float = 12.0, cache: bool = True) -> np.ndarray:
    """Camera-like synthetic RGB uint8 image of about `megapixels` MP (cached in _data/)."""
    h, w = mosaic_shape(megapixels)
    path = DATA_DIR / f"mosaic_{h}x{w}_g{GAIN_E_PER_DN:g}_r{READ_NOISE_DN:g}_s{NOISE_SEED}.npy"
    if cache and path.exists():
        return np.load(path)
    img = add_camera_noise(_mosaic_clean(h, w))
    if cache:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, img)
        tmp.replace(path)
    return img


def get_image(name: str) -> np.ndarray:
    """'chelsea', 'astronaut', 'coffee', 'china', or 'mosaic<MP>' e.g. 'mosaic12', 'mosaic0.5'."""
    if name.startswith("mosaic"):
        return mosaic(float(name[len("mosaic") :] or 12))
    return real_image(name)


def n_distinct_colors(img: np.ndarray) -> int:
    """Number of distinct RGB colours (a flag table of all 2**24 codes: no sort)."""
    flat = img.reshape(-1, img.shape[-1])
    seen = np.zeros(1 << 24, dtype=bool)
    step = 1 << 22
    for s in range(0, flat.shape[0], step):
        px = flat[s : s + step].astype(np.uint32)
        seen[(px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]] = True
    return int(np.count_nonzero(seen))


def megapixels(name: str) -> float:
    """Size of a benchmark image in MP without generating it."""
    if name.startswith("mosaic"):
        h, w = mosaic_shape(float(name[len("mosaic") :] or 12))
        return h * w / 1e6
    img = real_image(name)
    return img.shape[0] * img.shape[1] / 1e6
