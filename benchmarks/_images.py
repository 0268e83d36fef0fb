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
    if name == "astronaut-small":  # 0.25 MP: the astronaut halved (area-averaged)
        return _halved(data.astronaut())
    if name == "hubble":  # Hubble deep field (0.87 MP): a dark sky with galaxies
        return np.ascontiguousarray(data.hubble_deep_field())
    if name == "retina":  # fundus photo halved to 0.5 MP: ~60 % near-black background
        return _halved(data.retina())
    if name == "ihc":  # immunohistochemistry (0.26 MP): stained tissue on a light background
        return np.ascontiguousarray(data.immunohistochemistry())
    raise KeyError(f"unknown image {name!r}")


def _halved(img: np.ndarray) -> np.ndarray:
    """Mean of 2 x 2 blocks, rounded, uint8."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    blocks = img[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).astype(np.float32).mean(axis=(1, 3))
    return np.ascontiguousarray(np.rint(blocks).astype(np.uint8))


REAL_IMAGES = ("chelsea", "astronaut", "coffee", "china")
# Small photos for the whole-process command-line comparison (all <= 0.5 MP).
SMALL_PHOTOS = ("chelsea", "astronaut-small", "coffee", "china", "flower")
# Images dominated by a dark, mostly empty background or by a few large flat regions
# (issue 21): the real ones ship with scikit-image; the synthetic ones are made here with a
# fixed seed (scikit-image's cells3d / kidney need a download, which the benchmark avoids).
DARK_IMAGES = ("hubble", "retina", "fluo", "nightsky", "flat", "ihc")


# --------------------------------------------------------------------------- synthetic
def _gaussian_spots(shape, ys, xs, amps, sigmas, out):
    """Add Gaussian spots (amplitude, sigma in px) to the 2-D float array `out` in place."""
    h, w = shape
    for y, x, a, s in zip(ys, xs, amps, sigmas, strict=True):
        r = int(np.ceil(4 * s))
        y0, y1, x0, x1 = (
            max(0, int(y) - r),
            min(h, int(y) + r + 1),
            max(0, int(x) - r),
            min(w, int(x) + r + 1),
        )
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] += a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))


def fluorescence(height: int = 512, width: int = 512, seed: int = NOISE_SEED) -> np.ndarray:
    """Two-channel widefield fluorescence as a viewer composites it: nuclei (blue-magenta,
    filled blobs) and membranes (green, rings around them) on a black background (~70 % of
    the pixels within a few DN of black), blurred, with camera noise; uint8 RGB."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    n = 40
    ys, xs = rng.uniform(20, height - 20, n), rng.uniform(20, width - 20, n)
    radii = rng.uniform(10, 24, n)
    yy, xx = np.mgrid[:height, :width]
    nuclei = np.zeros((height, width), np.float32)
    membrane = np.zeros((height, width), np.float32)
    for y, x, r, b in zip(ys, xs, radii, rng.uniform(0.4, 1.0, n), strict=True):
        d = np.hypot(yy - y, xx - x)
        nuclei += b * (d < 0.55 * r)
        membrane += rng.uniform(0.3, 1.0) * np.exp(-((d - r) ** 2) / 4.0)
    nuclei = ndimage.gaussian_filter(nuclei, 2.0) * 180
    membrane = ndimage.gaussian_filter(membrane, 1.0) * 150
    clean = np.zeros((height, width, 3), np.float32)
    clean[..., 0] = 0.75 * nuclei + 2.0
    clean[..., 1] = membrane + 3.0
    clean[..., 2] = nuclei + 4.0
    return add_camera_noise(clean, seed)


def night_sky(height: int = 600, width: int = 800, seed: int = NOISE_SEED) -> np.ndarray:
    """A night sky: a faint glow rising to the horizon, ~3000 stars (power-law brightness,
    Gaussian PSFs, colours from red to blue), a dark tree line along the bottom, camera noise;
    ~95 % of the pixels below 30 DN. uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    glow = 6 + 22 * yy**3
    clean = np.empty((height, width, 3), np.float32)
    clean[..., 0] = 0.7 * glow
    clean[..., 1] = 0.8 * glow
    clean[..., 2] = 1.3 * glow + 3
    n = 3000
    ys, xs = rng.uniform(0, height, n), rng.uniform(0, width, n)
    amps = 400 * rng.pareto(1.6, n).astype(np.float32) + 15
    sigmas = rng.uniform(0.5, 1.2, n)
    tint = rng.uniform(-1, 1, n)  # -1 red ... +1 blue
    for c, gain in enumerate(((1.0, 0.35), (1.0, 0.0), (1.0, -0.35))):
        plane = np.zeros((height, width), np.float32)
        _gaussian_spots((height, width), ys, xs, amps * (gain[0] - gain[1] * tint), sigmas, plane)
        clean[..., c] += plane
    horizon = height - (40 + 25 * np.sin(np.linspace(0, 9, width)) ** 2).astype(int)
    ground = np.arange(height)[:, None] >= horizon[None, :]
    clean[ground] = (2.0, 3.0, 2.5)
    return add_camera_noise(clean, seed)


def flat_regions(height: int = 600, width: int = 800, seed: int = NOISE_SEED) -> np.ndarray:
    """A few large flat regions, as in a chart, diagram or screenshot: a dark background
    (~50 % of the pixels), 7 flat-coloured shapes with anti-aliased edges (drawn at 4x and
    averaged) and a small gradient bar; no noise. uint8 RGB."""
    rng = np.random.default_rng(seed)
    s = 4
    hh, ww = height * s, width * s
    img = np.empty((hh, ww, 3), np.float32)
    img[:] = (18, 20, 28)
    yy, xx = np.ogrid[:hh, :ww]
    colors = [
        (230, 60, 50),
        (40, 160, 90),
        (250, 200, 40),
        (60, 90, 200),
        (240, 240, 235),
        (150, 80, 170),
        (90, 200, 220),
    ]
    for i, c in enumerate(colors):
        cy, cx = rng.uniform(0.15, 0.85) * hh, rng.uniform(0.1, 0.9) * ww
        ry, rx = rng.uniform(0.06, 0.14) * hh, rng.uniform(0.05, 0.12) * ww
        shape = (
            ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            if i % 2
            else ((np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx))
        )
        img[shape] = c
    bar = np.linspace(0, 255, ww // 2, dtype=np.float32)
    img[hh - 30 * s : hh - 10 * s, ww // 4 : ww // 4 + ww // 2] = bar[None, :, None]
    small = img.reshape(height, s, width, s, 3).mean(axis=(1, 3))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


SYNTHETIC = {"fluo": fluorescence, "nightsky": night_sky, "flat": flat_regions}


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
    """'chelsea', 'astronaut', 'coffee', 'china', 'flower', 'astronaut-small', a dark-background
    image (DARK_IMAGES), or 'mosaic<MP>' e.g. 'mosaic12', 'mosaic0.5'."""
    if name.startswith("mosaic"):
        return mosaic(float(name[len("mosaic") :] or 12))
    if name in SYNTHETIC:
        path = DATA_DIR / f"{name}_s{NOISE_SEED}.npy"
        if path.exists():
            return np.load(path)
        img = SYNTHETIC[name]()
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, img)
        tmp.replace(path)
        return img
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
    img = get_image(name)
    return img.shape[0] * img.shape[1] / 1e6
