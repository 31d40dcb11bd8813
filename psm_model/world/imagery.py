"""Satellite-like RGB rendering of the land-cover field, with zoom levels as centre crops of one large tile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psm_model.world.landcover import LandCoverField, offset_latlon
from psm_model.world.noise import hash2, to_metres

ZOOM_MAX = 5
"""Zoom level l shows the centre l x size pixels of a (ZOOM_MAX x size)-pixel tile, resized to size."""
COARSE_STEP_PX = 8
"""The land-cover field is evaluated every COARSE_STEP_PX pixels of the large tile and interpolated."""


@dataclass(frozen=True)
class ImageryKind:
    """A kind of satellite imagery: ground sample distance and a simple sensor look."""

    name: str
    gsd: float
    """Ground sample distance of zoom 1, metres per pixel."""
    haze: float
    """Blend towards a grey-blue haze colour (0 none, 1 all haze)."""
    saturation: float
    noise: float
    """Standard deviation of the per-pixel sensor noise, in 0..255 units."""


IMAGERY: dict[str, ImageryKind] = {
    "sentinel": ImageryKind("sentinel", gsd=10.0, haze=0.12, saturation=0.85, noise=3.0),
    "highres": ImageryKind("highres", gsd=0.6, haze=0.03, saturation=1.05, noise=4.0),
}
"""Imagery kinds: Sentinel-2-like (10 m GSD) and Bing-like high resolution (0.6 m GSD)."""

_BASE = np.array(
    [
        (22, 48, 84),  # ocean
        (214, 198, 156),  # coast
        (38, 74, 108),  # water
        (150, 146, 142),  # urban
        (132, 140, 112),  # suburban
        (150, 160, 80),  # cropland
        (34, 74, 40),  # forest
        (128, 152, 82),  # grassland
        (218, 188, 138),  # desert
        (70, 94, 68),  # wetland
        (128, 122, 100),  # tundra
        (236, 240, 246),  # snow
    ],
    dtype=np.float64,
)
_CROPS = np.array(
    [(88, 140, 52), (196, 180, 92), (140, 110, 72), (120, 170, 70), (170, 160, 60)],
    dtype=np.float64,
)
_ROOFS = np.array(
    [(170, 80, 60), (120, 120, 125), (190, 185, 175), (95, 85, 80), (150, 110, 90)],
    dtype=np.float64,
)
_HAZE = np.array([185.0, 195.0, 210.0])


def check_imagery(kind: str) -> ImageryKind:
    """Return the ImageryKind called ``kind`` or raise ValueError."""
    try:
        return IMAGERY[kind]
    except KeyError as e:
        raise ValueError(
            f"unknown imagery kind {kind!r}; expected one of {', '.join(IMAGERY)}"
        ) from e


def _check_tile(gsd: float, size: int, zoom: int, zoom_max: int) -> None:
    if not gsd > 0:
        raise ValueError(f"gsd must be a positive number of metres per pixel, got {gsd!r}")
    if int(size) != size or size < 4:
        raise ValueError(f"size must be an integer >= 4 pixels, got {size!r}")
    if int(zoom) != zoom or not 1 <= zoom <= zoom_max:
        raise ValueError(f"zoom must be an integer in 1..{zoom_max}, got {zoom!r}")


def coarse_grid(
    lat: float, lon: float, gsd: float, big: int, c0: int, c1: int
) -> tuple[int, np.ndarray, np.ndarray]:
    """Nodes of the coarse land-cover grid covering pixels [c0, c1): (k0, node lats, node lons) ``[K, K]``."""
    step = float(COARSE_STEP_PX)
    k0 = int(np.floor((c0 + 0.5) / step))
    k1 = max(int(np.ceil((c1 - 0.5) / step)), k0 + 1)
    off = (np.arange(k0, k1 + 1) * step - big / 2.0) * gsd
    dx, dy = np.meshgrid(off, -off)
    plat, plon = offset_latlon(np.full(dx.shape, lat), np.full(dx.shape, lon), dx, dy)
    return k0, plat, plon


def classify_from_coarse(
    scores: np.ndarray, oj: np.ndarray, k0: int, c0: int, c1: int
) -> np.ndarray:
    """Pixel classes from coarse-node scores, by bilinear interpolation of the scores.

    Where the four corner nodes of a cell agree, every pixel inside has that class (the
    interpolated scores are convex combinations), so only cells on a boundary are interpolated.
    """
    step = float(COARSE_STEP_PX)
    ccls = LandCoverField.classify(scores, oj)
    kk = ccls.shape[0]
    u = (np.arange(c0, c1) + 0.5) / step - k0
    ki = np.clip(np.floor(u).astype(np.int64), 0, kk - 2)
    t = np.clip(u - ki, 0.0, 1.0)
    same = (
        (ccls[:-1, :-1] == ccls[1:, :-1])
        & (ccls[:-1, :-1] == ccls[:-1, 1:])
        & (ccls[:-1, :-1] == ccls[1:, 1:])
    )
    cls = ccls[ki[:, None], ki[None, :]].copy()
    mixed = ~same[ki[:, None], ki[None, :]]
    if mixed.any():
        r, c = np.nonzero(mixed)
        coarse = np.concatenate([scores, oj[..., None]], axis=-1)
        a, b = ki[r], ki[c]
        ty, tx = t[r][:, None], t[c][:, None]
        top = coarse[a, b] * (1 - tx) + coarse[a, b + 1] * tx
        bot = coarse[a + 1, b] * (1 - tx) + coarse[a + 1, b + 1] * tx
        v = top * (1 - ty) + bot * ty
        cls[r, c] = LandCoverField.classify(v[:, :-1], v[:, -1])
    return cls


def _sep_hash(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Cheap 2-D lattice hash in [0, 1) from 1-D hashes of rows i [H, 1] and columns j [1, W]."""
    a = hash2(i, np.zeros_like(i), seed).astype(np.float32)
    b = hash2(np.zeros_like(j), j, seed + 1).astype(np.float32)
    c = hash2(i, np.ones_like(i), seed + 2).astype(np.float32)
    d = hash2(np.ones_like(j), j, seed + 3).astype(np.float32)
    v = a + b + np.float32(7.31) * c * d
    return v - np.floor(v)


def _lattice(coords: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lattice position of each coordinate: (index of the lower node, smoothstep weight, nodes)."""
    u = coords / scale
    lo = np.floor(u).astype(np.int64)
    t = (u - lo).astype(np.float32)
    nodes = np.arange(lo.min(), lo.max() + 2)
    return lo - nodes[0], t * t * (3 - 2 * t), nodes


def _vnoise(xs: np.ndarray, ys: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Value noise [H, W] in [-1, 1] at lattice spacing ``scale`` metres; xs [W] and ys [H] in metres.

    Lattice values are hashed on the (small) lattice only, then interpolated separably:
    first along y, then along x.
    """
    step = abs(float(xs[1] - xs[0])) if xs.shape[0] > 1 else scale
    if scale < 1.5 * step:  # sub-pixel detail: per-pixel hash noise in world coordinates
        i = np.floor(ys / step).astype(np.int64)[:, None]
        j = np.floor(xs / step).astype(np.int64)[None, :]
        return 2 * _sep_hash(i, j, seed) - 1
    iy, ty, ny = _lattice(ys, scale)
    ix, tx, nx = _lattice(xs, scale)
    v = (2 * hash2(ny[:, None], nx[None, :], seed) - 1).astype(np.float32)
    rows = v[iy] * (1 - ty)[:, None] + v[iy + 1] * ty[:, None]  # [H, n_x]
    return rows[:, ix] * (1 - tx)[None, :] + rows[:, ix + 1] * tx[None, :]


def _phase(xs: np.ndarray, ys: np.ndarray, kx: float, ky: float, lam: float) -> np.ndarray:
    """2 pi (kx x + ky y) / lam as float32 [H, W], reduced mod 2 pi in float64 first."""
    tau = 2 * np.pi
    px = np.mod(tau * kx * xs / lam, tau).astype(np.float32)
    py = np.mod(tau * ky * ys / lam, tau).astype(np.float32)
    return px[None, :] + py[:, None]


def _look_matrix(kind: ImageryKind) -> np.ndarray:
    """Linear part of the sensor look (saturation, then haze blend) as a 3 x 3 matrix."""
    grey = np.full((3, 3), 1.0 / 3.0)
    return (1.0 - kind.haze) * (kind.saturation * np.eye(3) + (1.0 - kind.saturation) * grey)


# One palette for all textures: the 12 class colours, then crops, roofs and a few details.
_CROP0 = len(_BASE)
_ROOF0 = _CROP0 + len(_CROPS)
_ROAD, _LAWN, _MARGIN, _POOL, _SNOWPATCH = range(_ROOF0 + len(_ROOFS), _ROOF0 + len(_ROOFS) + 5)
_PALETTE = np.concatenate(
    [
        _BASE,
        _CROPS,
        _ROOFS,
        np.array(
            [(72, 72, 78), (96, 130, 72), (70, 90, 50), (50, 80, 100), (225, 230, 236)],
            dtype=np.float64,
        ),
    ]
)
_PALETTE_CACHE: dict[str, np.ndarray] = {}


def _palette(kind: ImageryKind) -> np.ndarray:
    """The palette with the kind's linear look applied, float32 [n_colours, 3]."""
    if kind.name not in _PALETTE_CACHE:
        _PALETTE_CACHE[kind.name] = (_PALETTE @ _look_matrix(kind).T).astype(np.float32)
    return _PALETTE_CACHE[kind.name]


Texture = tuple[np.ndarray | int, np.ndarray | float]


def _texture(k: int, xs: np.ndarray, ys: np.ndarray, gsd: float, seed: int) -> Texture:
    """Texture of land-cover class k over the crop: (palette index, brightness), each [H, W] or scalar.

    ``xs`` [W] and ``ys`` [H] are world coordinates in metres, so textures line up between tiles.
    """
    s = seed * 7 + 1000 + 97 * k
    if k in (0, 2):  # ocean, lakes: waves and depth shading
        lam = max(30.0 if k == 0 else 12.0, 3.0 * gsd)
        warp = _vnoise(xs, ys, 8 * lam, s)
        wave = np.sin(_phase(xs, ys, 0.8, 0.6, lam) + 3.0 * warp)
        return k, 1.0 + 0.10 * wave + 0.12 * warp
    if k == 1:  # beach
        return k, 0.92 + 0.1 * _vnoise(xs, ys, max(15.0, 2 * gsd), s)
    if k in (3, 4):  # urban core and suburbs: road grid, blocks, buildings
        block, road, cell, dens = (110.0, 14.0, 22.0, 0.9) if k == 3 else (80.0, 9.0, 18.0, 0.45)
        is_road = (np.mod(ys, block) < road)[:, None] | (np.mod(xs, block) < road)[None, :]
        hh = _sep_hash(
            np.floor(ys / cell).astype(np.int64)[:, None],
            np.floor(xs / cell).astype(np.int64)[None, :],
            s,
        )
        inner = (np.mod(ys, cell) > 3.0)[:, None] & (np.mod(xs, cell) > 3.0)[None, :]
        roof = _ROOF0 + (hh * len(_ROOFS)).astype(np.int64) % len(_ROOFS)
        idx = np.where(inner & (hh < dens), roof, k if k == 3 else _LAWN)
        return np.where(is_road, _ROAD, idx), 1.0
    if k == 5:  # cropland: parcels with stripes and margins
        hh = _sep_hash(
            np.floor(ys / 260.0).astype(np.int64)[:, None],
            np.floor(xs / 340.0).astype(np.int64)[None, :],
            s,
        )
        idx = _CROP0 + (hh * len(_CROPS)).astype(np.int64) % len(_CROPS)
        lam = max(12.0, 2.5 * gsd)
        stripe = np.where(
            hh < 0.5, np.sin(_phase(xs, ys, 1.0, 0.0, lam)), np.sin(_phase(xs, ys, 0.0, 1.0, lam))
        )
        margin = (np.mod(ys, 260.0) < 4.0)[:, None] | (np.mod(xs, 340.0) < 4.0)[None, :]
        return np.where(margin, _MARGIN, idx), np.where(margin, 1.0, 1.0 + 0.09 * stripe)
    if k == 6:  # forest: canopy crowns and stands
        return k, 0.8 + 0.3 * _vnoise(xs, ys, 7.0, s) + 0.15 * _vnoise(xs, ys, 90.0, s + 50)
    if k == 7:  # grassland: patchy
        return k, 0.95 + 0.13 * (_vnoise(xs, ys, 40.0, s) + 0.5 * _vnoise(xs, ys, 250.0, s + 50))
    if k == 8:  # desert: dunes and ripples
        warp = _vnoise(xs, ys, 600.0, s)
        dune = np.sin(_phase(xs, ys, 0.9, 0.45, 180.0) + 2.5 * warp)
        ripple = np.sin(_phase(xs, ys, 0.9, 0.45, max(4.0, 2.5 * gsd)))
        return k, 1.0 + 0.10 * dune + 0.03 * ripple
    if k == 9:  # wetland: pools among reeds
        n = _vnoise(xs, ys, 35.0, s)
        pool = n > 0.25
        return np.where(pool, _POOL, k), np.where(pool, 1.0, 0.9 + 0.2 * n)
    if k == 10:  # tundra: lichen, rock and snow patches
        n = _vnoise(xs, ys, 30.0, s)
        snow = n > 0.55
        return np.where(snow, _SNOWPATCH, k), np.where(snow, 1.0, 0.9 + 0.15 * n)
    return k, 0.96 + 0.04 * _vnoise(xs, ys, 70.0, s)  # snow: wind-blown shading


def _paint(
    cls: np.ndarray, xs: np.ndarray, ys: np.ndarray, gsd: float, seed: int, kind: ImageryKind
) -> np.ndarray:
    """Colour each pixel by its class's texture: float32 [H, W, 3] in the kind's look (before haze)."""
    present = np.nonzero(np.bincount(cls.ravel(), minlength=len(_BASE)))[0]
    shape = cls.shape
    if present.size == 1:
        idx, shade = _texture(int(present[0]), xs, ys, gsd, seed)
    else:
        idx, shade = np.zeros(shape, dtype=np.int64), np.ones(shape, dtype=np.float32)
        for k in present:
            m = cls == k
            ik, sk = _texture(int(k), xs, ys, gsd, seed)
            idx = np.where(m, ik, idx)
            shade = np.where(m, sk, shade)
    idx = np.broadcast_to(np.asarray(idx), shape)
    shade = np.broadcast_to(np.asarray(shade, dtype=np.float32), shape)
    return _palette(kind)[idx] * shade[..., None]


def _tile_seed(
    seed: int, lat: float, lon: float, gsd: float, size: int, zoom_max: int
) -> np.random.Generator:
    key = [
        seed,
        int(round(lat * 1e6)) % 2**32,
        int(round(lon * 1e6)) % 2**32,
        int(round(gsd * 1e3)),
        size,
        zoom_max,
    ]
    return np.random.default_rng(key)


def render_crop(
    field: LandCoverField,
    lat: float,
    lon: float,
    kind: ImageryKind,
    gsd: float,
    size: int,
    zoom: int,
    zoom_max: int = ZOOM_MAX,
    coarse: tuple[int, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Full-resolution centre crop (zoom x size pixels, uint8 HWC) of the large tile at (lat, lon).

    ``coarse`` may pass precomputed (k0, scores, oj) of the coarse grid (see :func:`coarse_grid`).
    """
    _check_tile(gsd, size, zoom, zoom_max)
    big = zoom_max * size
    n = zoom * size
    c0 = (big - n) // 2
    c1 = c0 + n
    if coarse is None:
        k0, plat, plon = coarse_grid(lat, lon, gsd, big, c0, c1)
        scores, oj = field.evaluate(plat, plon)
    else:
        k0, scores, oj = coarse
    cls = classify_from_coarse(scores, oj, k0, c0, c1)
    xc, yc = to_metres(np.array(lat), np.array(lon))
    off = (np.arange(c0, c1) + 0.5 - big / 2.0) * gsd
    img = _paint(cls.astype(np.int64), float(xc) + off, float(yc) - off, gsd, field.seed, kind)
    img += (kind.haze * _HAZE + 0.5).astype(np.float32)
    rng = _tile_seed(field.seed, lat, lon, gsd, size, zoom_max)
    full = rng.standard_normal((big, big), dtype=np.float32)
    img += np.float32(kind.noise) * full[c0:c1, c0:c1, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def downsample(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a square uint8 HWC image to size x size (block mean for integer factors, else PIL)."""
    n = img.shape[0]
    if n == size:
        return img
    if n % size == 0:
        f = n // size
        rows = img.reshape(size, f, n * 3).sum(axis=1, dtype=np.uint16)
        acc = rows.reshape(size, size, f, 3).sum(axis=2, dtype=np.uint32)
        return ((acc + (f * f) // 2) // (f * f)).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BOX))


def render_zooms(
    field: LandCoverField,
    lat: float,
    lon: float,
    kind: ImageryKind,
    size: int,
    zooms: tuple[int, ...],
    gsd: float | None = None,
    zoom_max: int = ZOOM_MAX,
    coarse: tuple[int, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Tiles at several zoom levels, ``[len(zooms), size, size, 3]`` uint8, all cropped from one render."""
    gsd = kind.gsd if gsd is None else gsd
    zmax = max(zooms)
    crop = render_crop(field, lat, lon, kind, gsd, size, zmax, zoom_max, coarse)
    n = crop.shape[0]
    out = []
    for z in zooms:
        _check_tile(gsd, size, z, zoom_max)
        m = z * size
        a = (n - m) // 2
        out.append(downsample(crop[a : a + m, a : a + m], size))
    return np.stack(out)
