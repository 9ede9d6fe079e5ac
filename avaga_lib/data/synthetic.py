"""Embedded default dataset: a deterministic, MVTec-layout anomaly dataset generated from a seed (numpy + PIL only).

Three categories of different character, as MVTec's textures and objects:

* ``weave``: a periodic texture (interlaced warp/weft threads),
* ``granite``: a stochastic texture (multi-scale noise with mineral grains),
* ``washer``: an object (a metal ring with a printed mark) on a plain background.

Normal images vary naturally: random shift (phase / position), small rotation, lighting gain and gradient, sensor
noise. Anomalous test images carry one of four defect types, each drawn with a hard boolean region so the stored
mask is *exactly* the set of changed pixels: ``scratch`` (thin line), ``hole`` (dark blob), ``discoloration``
(tinted blob) and ``crack`` (jagged random walk) for textures, ``missing_part`` (a wedge of the ring removed) in place
of ``crack`` for the washer. Defect areas follow those of real data: each defect is sized to hit a target area
drawn from the area quantiles of Magnetic Tile Defect's masks (:data:`MT_AREA_FRACTIONS`: median 0.49% of the image,
90th percentile 34%; many small, some large), the thin types taking the small areas (:data:`THIN_DEFECTS`). Defects
sit anywhere on the texture or the object, not near the centre (issue 13: a position prior must not find them): the
k-th anomalous image of a defect type puts its defect at the k-th point of a low-discrepancy sequence (angle about
the centre, distance quantile of the texture / object pixels, size quantile), so the centroids of even a few defects
cover the image and large and small defects are spread alike; the washer fills most of the image. Measured over 100
anomalous images per category at 128 px, seeds 0-3: area median 0.48-0.72%, 90th percentile 29-37%; a centred
Gaussian prior (sigma = side/4) scores pixel AUROC 0.49-0.52 on the textures and 0.57 on the washer, the value of
defects spread evenly over the ring (the prior separates the ring from the empty corners, not defects from it).

The whole default set (3 categories x 300 images at 128 px) is written in about 5 seconds on 2 CPU cores. The
folder is written to a temporary sibling and renamed onto ``root`` at the end, after a ``.complete.json`` marker, so
an interrupted run never leaves a half-written dataset that looks complete.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from avaga_lib.io import atomic_write, read_json, replace_dir, write_json

CATEGORIES: tuple[str, ...] = ("weave", "granite", "washer")
TEXTURE_DEFECTS: tuple[str, ...] = ("scratch", "hole", "discoloration", "crack")
OBJECT_DEFECTS: tuple[str, ...] = ("scratch", "hole", "discoloration", "missing_part")
MARKER = ".complete.json"  # written last: its presence means the dataset is complete
GENERATOR_VERSION = 3  # bump when the images change, so stale generated folders are regenerated
# 2 (issue 13): defects spread over the whole image / object (a stratified sequence), the washer fills the image
# 3: defect areas follow Magnetic Tile's mask areas, one stratified sequence per defect type, 100/100/100 defaults
_PHI3 = 1.2207440846057596  # Roberts' R3 sequence: frac(0.5 + i / phi3^k), k = 1..3, low discrepancy in 3D
_R3 = (1 / _PHI3, 1 / _PHI3**2, 1 / _PHI3**3)
_WASHER_RADII = (0.22, 0.48)  # inner / outer radius of the ring, fraction of the side: the object fills the image
# A large defect near the border is clipped and grows inward to keep its area, which moves its pixel mass towards the
# centre: its distance quantile is drawn as v^e, e = 1 (unbiased) up to 1% of the image, falling log-linearly to
# _OUTWARD at 30% and above. Measured at 128 px, seeds 0-3: a centred prior's pixel AUROC on the textures is
# 0.55-0.58 with e = 1 for all, 0.49-0.52 with this, and small defects' centroids lie as far out as the pixels do
_OUTWARD = 0.15
_OUTWARD_AREAS = (0.01, 0.30)

_CATEGORY_IDS = {name: i for i, name in enumerate(CATEGORIES)}


def defects_of(category: str) -> tuple[str, ...]:
    """Defect types generated for ``category``."""
    return OBJECT_DEFECTS if category == "washer" else TEXTURE_DEFECTS


# --------------------------------------------------------------------------------------------------- normal images
def _grid(size: int, rng: np.random.Generator, max_rot_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a small random angle about the centre (natural pose variation)."""
    ang = math.radians(rng.uniform(-max_rot_deg, max_rot_deg))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    x, y = xx - c, yy - c
    ca, sa = math.cos(ang), math.sin(ang)
    return ca * x - sa * y + c, sa * x + ca * y + c


def _lighting(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global gain plus a linear illumination gradient in a random direction."""
    size = img.shape[0]
    gain = rng.uniform(0.88, 1.12)  # +-12% exposure variation
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    grad = 1.0 + rng.uniform(0.0, 0.15) * (math.cos(ang) * xx + math.sin(ang) * yy)  # up to +-7.5% across the image
    return img * (gain * grad)[..., None]


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return img + rng.normal(0.0, 2.0, img.shape).astype(np.float32)  # sensor noise, sigma 2 grey levels


def _weave(size: int, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(size, rng, max_rot_deg=4.0)
    period = size / 10.0  # ten threads across the image
    x = x + rng.uniform(0, period * 2)  # random phase = shift of the cloth
    y = y + rng.uniform(0, period * 2)
    px, py = 2 * math.pi * x / period, 2 * math.pi * y / period
    warp = 0.5 + 0.5 * np.cos(px)  # vertical threads
    weft = 0.5 + 0.5 * np.cos(py)
    over = (np.floor(x / period) + np.floor(y / period)) % 2  # plain weave: threads alternate over / under
    v = np.where(over == 0, warp * (0.6 + 0.4 * weft), weft * (0.6 + 0.4 * warp))
    base = np.array([150.0, 120.0, 80.0], dtype=np.float32)  # burlap-like colour
    return (0.45 + 0.75 * v)[..., None] * base


def _smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    low = rng.random((cells, cells)).astype(np.float32)
    im = Image.fromarray(low, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(im, dtype=np.float32)


def _granite(size: int, rng: np.random.Generator) -> np.ndarray:
    v = np.zeros((size, size), np.float32)
    for cells, w in ((4, 0.35), (8, 0.3), (16, 0.2), (size // 2, 0.15)):  # octaves of value noise
        v += w * _smooth_noise(size, cells, rng)
    img = (60.0 + 120.0 * v)[..., None] * np.array([1.0, 0.97, 0.95], np.float32)
    n_grains = int(size * size / 90)  # mineral grains: sparse dark / light specks
    ys, xs = rng.integers(0, size, n_grains), rng.integers(0, size, n_grains)
    img[ys, xs] = rng.choice([25.0, 220.0], n_grains)[:, None]
    return img


def _washer_parts(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (image, object mask, background) of a ring shifted and rotated at random."""
    x, y = _grid(size, rng, max_rot_deg=8.0)
    cx = (size - 1) / 2 + rng.uniform(-0.05, 0.05) * size  # +-5% position jitter
    cy = (size - 1) / 2 + rng.uniform(-0.05, 0.05) * size
    r = np.hypot(x - cx, y - cy)
    theta = np.arctan2(y - cy, x - cx)
    r_in, r_out = _WASHER_RADII[0] * size, _WASHER_RADII[1] * size
    ring = (r <= r_out) & (r >= r_in)
    shade = 170.0 + 40.0 * np.cos(theta - 0.8) * (r - r_in) / (r_out - r_in)  # brushed metal lit from one side
    shade += 15.0 * np.cos(6 * theta)  # machining marks: make the small rotation visible
    mark = (np.abs(theta - 1.2) < 0.12) & (np.abs(r - 0.5 * (r_in + r_out)) < 0.03 * size)  # printed mark
    shade = np.where(mark, 60.0, shade)
    background = np.full((size, size, 3), [58.0, 62.0, 70.0], np.float32)  # plain dark-blue table
    metal = shade[..., None] * np.array([1.0, 1.0, 1.04], np.float32)
    return np.where(ring[..., None], metal, background), ring, background


def _normal(category: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (float image before lighting/noise, support mask where defects may go, background or None-like)."""
    if category == "weave":
        img = _weave(size, rng)
        return img, np.ones((size, size), bool), img
    if category == "granite":
        img = _granite(size, rng)
        return img, np.ones((size, size), bool), img
    if category == "washer":
        return _washer_parts(size, rng)
    raise ValueError(f"unknown embedded category '{category}'; choose from {CATEGORIES}")


# --------------------------------------------------------------------------------------------------------- defects
def _blob(size: int, cx: float, cy: float, support: np.ndarray, n_pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Irregular elliptic blob (radius modulated by a few random harmonics) of exactly ``n_pixels`` support pixels.

    The blob of radius r is {rho <= r} for a pixel "radius" rho that does not depend on r, so the smallest blob of
    the wanted area is the ``n_pixels`` support pixels of smallest rho: the area is hit exactly even where the
    support (the image border, the washer's ring) clips the blob, which then grows on its inner side.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    ang, aspect = rng.uniform(0, 3.2), rng.uniform(0.5, 1.0)
    ca, sa = math.cos(ang), math.sin(ang)
    u, v = ca * dx + sa * dy, (-sa * dx + ca * dy) / aspect
    t = np.arctan2(v, u)
    wobble = 1.0 + sum(rng.uniform(-0.12, 0.12) * np.cos(k * t + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    return _smallest(np.hypot(u, v) / wobble, support, n_pixels)


def _smallest(key: np.ndarray, support: np.ndarray, n_pixels: int) -> np.ndarray:
    """The ``n_pixels`` support pixels of smallest ``key`` (all of them if the support is smaller)."""
    vals = key[support]
    if vals.size <= n_pixels:
        return support.copy()
    return support & (key <= np.partition(vals, n_pixels - 1)[n_pixels - 1])


def _band(size: int, pts: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels within width/2 of a polyline (exact rasterisation by distance to segments) and, for each, the arc
    length along the polyline of its nearest point (inf outside the band)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    best = np.full((size, size), np.inf, np.float32)
    arc = np.full((size, size), np.inf, np.float32)
    start = 0.0
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        dx, dy = x1 - x0, y1 - y0
        seg = math.hypot(dx, dy)
        lo_x, hi_x = int(max(0, min(x0, x1) - width - 1)), int(min(size, max(x0, x1) + width + 2))
        lo_y, hi_y = int(max(0, min(y0, y1) - width - 1)), int(min(size, max(y0, y1) + width + 2))
        if lo_x < hi_x and lo_y < hi_y:
            px, py = xx[lo_y:hi_y, lo_x:hi_x], yy[lo_y:hi_y, lo_x:hi_x]
            t = np.clip(((px - x0) * dx + (py - y0) * dy) / max(seg * seg, 1e-6), 0, 1)
            d = np.hypot(px - (x0 + t * dx), py - (y0 + t * dy))
            b, a = best[lo_y:hi_y, lo_x:hi_x], arc[lo_y:hi_y, lo_x:hi_x]  # views: updated in place
            closer = d < b
            b[closer] = d[closer]
            a[closer] = (start + t * seg)[closer]
        start += seg
    inside = best <= width / 2
    return inside, np.where(inside, arc, np.inf)


def _thin_curve(size: int, pts: np.ndarray, middle: float, width: float, support: np.ndarray,
                n_pixels: int) -> np.ndarray:
    """The ``n_pixels`` support pixels of the band of ``pts`` nearest (in arc length) to the arc position ``middle``:
    a scratch / crack grows along its line from its centre until it has the wanted area (past the border, or the
    washer's hole, on the other side)."""
    inside, arc = _band(size, pts, width)
    return _smallest(np.abs(arc - middle), support & inside, n_pixels)


# Magnetic Tile Defect (Huang et al. 2020, /work/shared/data/magnetic_tile): area of the defect mask (pixels > 127)
# as a fraction of its image, over its 388 non-empty masks (all 392 anomalous images of Blowhole, Break, Crack, Fray
# and Uneven but 4 empty Uneven masks), measured 2026-12-02: quantile -> area fraction. Many small, some large.
MT_AREA_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
MT_AREA_FRACTIONS: tuple[float, ...] = (0.000401, 0.000634, 0.000858, 0.00212, 0.00487, 0.148, 0.343, 0.396, 0.449)
MT_AREA_P10, MT_AREA_P25, MT_AREA_MEDIAN, MT_AREA_P75, MT_AREA_P90 = MT_AREA_FRACTIONS[2:7]
# Thin defects (a line 1-2 px wide) cannot cover a third of the image without ceasing to be a scratch or a crack, and
# in Magnetic Tile too the size follows the type (Crack and Blowhole masks are small, Uneven and Fray large). So the
# thin types take the low quantiles of the area distribution and the area types (blobs, the washer's missing wedge)
# the high ones, each in proportion to its share of the defect types: pooled over a round-robin test set, the areas
# still follow MT_AREA_FRACTIONS, at the price that a per-type score also reflects size (as on the real data).
THIN_DEFECTS: tuple[str, ...] = ("scratch", "crack")


def area_fraction(q: float) -> float:
    """Target defect area (fraction of the image) at quantile ``q`` of the Magnetic Tile area distribution: log-linear
    between the measured quantiles :data:`MT_AREA_FRACTIONS`, constant below the 1st and above the 99th percentile."""
    return float(np.exp(np.interp(q, MT_AREA_QUANTILES, np.log(MT_AREA_FRACTIONS))))


def area_quantile(category: str, defect: str, s: float) -> float:
    """Quantile of the area distribution for a ``defect`` of ``category`` whose size quantile is ``s`` in [0, 1): the
    thin types of the category share the low quantiles, the area types the high ones (see :data:`THIN_DEFECTS`)."""
    defects = defects_of(category)
    thin = sum(d in THIN_DEFECTS for d in defects) / len(defects)
    return thin * s if defect in THIN_DEFECTS else thin + (1.0 - thin) * s


Placement = tuple[float, float, float]  # (u, v, s) in [0, 1)^3: where (u, v) and how large (s) a defect is


def stratified_point(index: int, offset: Placement = (0.0, 0.0, 0.0)) -> Placement:
    """The ``index``-th point of the R3 low-discrepancy sequence in [0, 1)^3, shifted by ``offset`` (mod 1).

    (u, v) places the defect (angle, radial quantile: :func:`_pick_centre`), s is the quantile of its size: any run
    of consecutive indices covers the cube evenly, so the defects of a small test set spread over the whole image
    *and* the large ones (which hold most anomalous pixels) do not gather in one place: a position prior finds no
    pixel-weighted bias either.
    """
    return (
        (0.5 + offset[0] + index * _R3[0]) % 1.0,
        (0.5 + offset[1] + index * _R3[1]) % 1.0,
        (0.5 + offset[2] + index * _R3[2]) % 1.0,
    )


def _outward(area: float) -> float:
    """Exponent of the radial quantile of a defect covering the fraction ``area`` of the image (see _OUTWARD)."""
    lo, hi = _OUTWARD_AREAS
    w = min(1.0, max(0.0, math.log(max(area, 1e-9) / lo) / math.log(hi / lo)))
    return 1.0 - w * (1.0 - _OUTWARD)


def _pick_centre(support: np.ndarray, where: Placement | None, rng: np.random.Generator,
                 area: float = 0.0) -> tuple[float, float]:
    """Centre of a defect: a support pixel whose distance to the image centre is the quantile ``where[1] **
    _outward(area)`` of the support's distances and whose angle is nearest to 2 pi ``where[0]``; a uniformly drawn
    support pixel when ``where`` is None. Radial quantiles make the defects as far from the centre as the texture /
    object's own pixels are (a centred prior finds nothing), whatever the support's shape."""
    ys, xs = np.nonzero(support)
    if where is None:
        i = rng.integers(len(ys))
        return float(xs[i]), float(ys[i])
    c = (support.shape[0] - 1) / 2.0
    dist, angle = np.hypot(xs - c, ys - c), np.arctan2(ys - c, xs - c)
    ring = np.abs(dist - np.quantile(dist, where[1] ** _outward(area))) <= 1.0  # the support pixels at that distance
    turn = np.abs(np.angle(np.exp(1j * (angle[ring] - 2 * math.pi * where[0]))))
    i = np.flatnonzero(ring)[int(np.argmin(turn))]
    return float(xs[i]), float(ys[i])


def _apply_defect(
    img: np.ndarray, support: np.ndarray, background: np.ndarray, defect: str, rng: np.random.Generator,
    area: float, where: Placement | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``defect`` covering the fraction ``area`` of the image (at least 3 pixels; fewer only where the support
    runs out: a washer's ring, a line leaving the image at both ends) on ``img`` centred at ``where`` (see
    :func:`_pick_centre`); return (image, exact boolean mask of the changed pixels)."""
    size = img.shape[0]
    n_pixels = max(3, round(area * size * size))
    cx, cy = _pick_centre(support, where, rng, area)
    if defect in ("hole", "discoloration"):
        region = _blob(size, cx, cy, support, n_pixels, rng)
    elif defect == "scratch":
        width = rng.uniform(1.0, 2.2)
        ang = rng.uniform(0, math.pi)
        length = 6.0 * n_pixels / width + 8.0  # 3x the needed length each way: enough when one end leaves
        bend = rng.uniform(-0.3, 0.3) * min(1.0, 40.0 / length)  # long scratches are straighter, as real ones
        ts = np.linspace(-0.5, 0.5, 17)
        pts = np.stack([cx + ts * length * math.cos(ang) - bend * length * (ts**2) * math.sin(ang),
                        cy + ts * length * math.sin(ang) + bend * length * (ts**2) * math.cos(ang)], 1)
        middle = float(np.hypot(*np.diff(pts[:9], axis=0).T).sum())
        region = _thin_curve(size, pts, middle, width, support, n_pixels)
    elif defect == "crack":
        width = rng.uniform(1.0, 1.8)
        step = max(1.0, n_pixels / width / 8.0)  # two arms of 12 steps, each ~1.4x the needed length
        a = rng.uniform(0, 2 * math.pi)
        arms = []
        for direction in (a, a + math.pi):  # a jagged random walk each way from the centre
            steps = rng.normal(0, 1, (12, 2)) * 0.8 + np.array([math.cos(direction), math.sin(direction)]) * 1.2
            arms.append(np.array([cx, cy]) + np.cumsum(steps, 0) * step)
        pts = np.vstack([arms[0][::-1], [[cx, cy]], arms[1]])
        middle = float(np.hypot(*np.diff(pts[:13], axis=0).T).sum())
        region = _thin_curve(size, pts, middle, width, support, n_pixels)
    elif defect == "missing_part":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        c0 = (size - 1) / 2.0
        th0 = math.atan2(cy - c0, cx - c0)
        dth = np.abs(np.angle(np.exp(1j * (np.arctan2(yy - c0, xx - c0) - th0))))
        region = _smallest(dth, support, n_pixels)  # the wedge of the ring whose half-angle gives the area
    else:
        raise ValueError(f"unknown defect type '{defect}'")
    region &= support
    if defect == "hole":
        out = np.where(region[..., None], np.float32(rng.uniform(10, 40)), img)  # dark pit: no texture left
    elif defect == "scratch":
        out = np.where(region[..., None], img * 0.35 + 150.0, img)  # bright, reflective groove
    elif defect == "crack":
        out = np.where(region[..., None], img * 0.25, img)  # dark fissure
    elif defect == "discoloration":
        tint = rng.choice([np.array([1.35, 0.75, 0.7]), np.array([0.7, 1.25, 0.8]), np.array([0.75, 0.8, 1.4])])
        out = np.where(region[..., None], img * tint.astype(np.float32) + 10.0, img)  # stain: texture kept
    else:  # missing_part: background shows through
        out = np.where(region[..., None], background, img)
    return out, region


# ------------------------------------------------------------------------------------------------------- generation
def make_image(
    category: str, size: int, rng: np.random.Generator, defect: str | None = None,
    where: Placement | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image of ``category`` (uint8 HxWx3) and, for a defect, its exact mask (uint8 0/255 HxW).

    The mask is recomputed after quantisation so it lists exactly the pixels whose stored value differs from the
    defect-free image (a defect can be invisible on a few pixels, e.g. a stain on a black grain). ``where`` (u, v, s)
    in [0, 1)^3 places the defect's centre (:func:`stratified_point`: angle 2 pi u about the image centre, distance
    the v-quantile of the texture / object pixels' distances) and sets its size quantile s (mapped to a target area
    by :func:`area_quantile` and :func:`area_fraction`); None draws both at random.
    """
    img, support, background = _normal(category, size, rng)
    light_seed = int(rng.integers(2**32))  # same lighting and noise with and without the defect
    clean = _finish(img, np.random.default_rng(light_seed))
    if defect is None:
        return clean, None
    s = rng.uniform() if where is None else where[2]
    area = area_fraction(area_quantile(category, defect, s))
    mask = np.zeros((size, size), bool)
    for _ in range(10):  # a defect invisible after quantisation (rare: a few pixels on dark grains) is redrawn
        bad, region = _apply_defect(img, support, background, defect, rng, area, where)
        out = _finish(bad, np.random.default_rng(light_seed))
        mask = region & (out != clean).any(-1)
        if mask.sum() >= 3:
            out = np.where(mask[..., None], out, clean)  # pixels outside the mask are bit-identical to the normal
            return out, (mask * 255).astype(np.uint8)
    raise RuntimeError(f"could not place a visible {defect} on {category}")


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(_noise(_lighting(img, rng), rng), 0, 255).round().astype(np.uint8)


def _save_png(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda p: Image.fromarray(arr).save(p, format="PNG"))


def _params(seed: int, categories: Sequence[str], n_train: int, n_test_good: int, n_test_bad: int, size: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "categories": list(categories), "n_train": n_train,
            "n_test_good": n_test_good, "n_test_bad": n_test_bad, "size": size}


def is_complete(root: Path | str, params: dict | None = None) -> bool:
    """True when ``root`` holds a finished generated dataset (and, if given, one made with ``params``)."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        return False
    return params is None or read_json(marker) == params


def is_current(root: Path | str) -> bool:
    """True when ``root`` holds a finished dataset made by this :data:`GENERATOR_VERSION` (whatever its sizes): an
    older generator's images (v1 put defects where a centred prior finds them) must be regenerated, not reused."""
    marker = Path(root) / MARKER
    return marker.is_file() and read_json(marker).get("generator_version") == GENERATOR_VERSION


def generate_dataset(
    root: Path | str,
    seed: int = 0,
    categories: Sequence[str] | None = None,
    n_train: int = 100,  # 80 train + 20 validation images at the study's data.val_fraction=0.2
    n_test_good: int = 100,
    n_test_bad: int = 100,  # 25 per defect type: enough to read image AUROC (100 vs 100, not 16 vs 24)
    size: int = 128,  # stored side: serves the 64 px smoke and 128 px runs
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the embedded dataset in MVTec layout under ``root`` and return ``root``.

    Layout: ``<root>/<cat>/train/good/000.png``, ``<root>/<cat>/test/{good,<defect>}/000.png``,
    ``<root>/<cat>/ground_truth/<defect>/000_mask.png``. Every image is a pure function of
    ``(seed, category, split, index)``, so the same seed always writes identical files.

    Args:
        root: destination folder. Skipped when it already holds a complete dataset with the same parameters;
            regenerated when it holds an older generated one; refused when it holds something else.
        seed: seed of every random draw.
        categories: subset of :data:`CATEGORIES` (default: all).
        n_train: normal training images per category; the study splits off ``data.val_fraction`` (0.2: 20 of
            the default 100) as normal validation images and trains on the rest (80).
        n_test_good: normal test images per category, drawn from the same distribution as the training images
            (same generator, other random streams).
        n_test_bad: anomalous test images per category, spread round-robin over the defect types.
        size: side of the square images in pixels.
        progress: optional callback receiving one line per category.

    Raises:
        ValueError: unknown category, or ``root`` exists and was not written by this generator.
    """
    root = Path(root)
    categories = list(categories or CATEGORIES)
    for c in categories:
        if c not in _CATEGORY_IDS:
            raise ValueError(f"unknown embedded category '{c}'; choose from {CATEGORIES}")
    params = _params(seed, categories, n_train, n_test_good, n_test_bad, size)
    if is_complete(root, params):
        return root
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise ValueError(f"{root} exists and is not a generated embedded dataset (no {MARKER}); "
                         "choose another folder or remove it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for cat in categories:
            if progress:
                progress(f"generating {cat} ({n_train + n_test_good + n_test_bad} images, {size} px)")
            _write_category(tmp / cat, cat, seed, n_train, n_test_good, n_test_bad, size)
        write_json(tmp / MARKER, params)  # last: marks the folder complete
        replace_dir(tmp, root)  # atomic swap; an older copy is removed only afterwards
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _image_rng(seed: int, category: str, split: int, index: int) -> np.random.Generator:
    """Order-independent random stream of one image (split 0 train, 1 test/good, 2 test anomalous, 3 placement)."""
    return np.random.default_rng([seed, _CATEGORY_IDS[category], split, index])


def anomalous_test_image(category: str, seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The ``index``-th anomalous test image of ``category`` exactly as :func:`generate_dataset` writes it.

    Returns:
        (uint8 HxWx3 image, uint8 0/255 HxW mask, defect type); defect types round-robin over :func:`defects_of`.
    """
    defects = defects_of(category)
    kind, k = index % len(defects), index // len(defects)
    # each defect type walks its own shifted R3 sequence (offset per seed, category and type): every type's defects,
    # sizes included, are then spread evenly; every 4th point of one shared sequence is not (its size quantiles
    # bunched in 5 clusters)
    o = _image_rng(seed, category, 3, 0).random((len(defects), 3))[kind]
    img, mask = make_image(category, size, _image_rng(seed, category, 2, index), defect=defects[kind],
                           where=stratified_point(k, (float(o[0]), float(o[1]), float(o[2]))))
    assert mask is not None
    return img, mask, defects[kind]


def _write_category(d: Path, cat: str, seed: int, n_train: int, n_good: int, n_bad: int, size: int) -> None:
    for i in range(n_train):
        img, _ = make_image(cat, size, _image_rng(seed, cat, 0, i))
        _save_png(d / "train" / "good" / f"{i:03d}.png", img)
    for i in range(n_good):
        img, _ = make_image(cat, size, _image_rng(seed, cat, 1, i))
        _save_png(d / "test" / "good" / f"{i:03d}.png", img)
    counters = dict.fromkeys(defects_of(cat), 0)
    for i in range(n_bad):
        img, mask, defect = anomalous_test_image(cat, seed, i, size)
        k = counters[defect]
        counters[defect] += 1
        _save_png(d / "test" / defect / f"{k:03d}.png", img)
        _save_png(d / "ground_truth" / defect / f"{k:03d}_mask.png", mask)
