"""Seeded, deterministic value noise over the globe, vectorised with numpy."""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)

METRES_PER_DEG_LAT = 110_574.0
METRES_PER_DEG_LON = 111_320.0


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a fast, well-mixed integer hash (uint64 in, uint64 out)."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def hash2(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """Hash integer lattice coordinates and a seed to uniform floats in [0, 1)."""
    with np.errstate(over="ignore"):
        s = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLD + _GOLD)
        h = _mix(i.astype(np.int64).view(np.uint64) ^ s)
        h = _mix(h + j.astype(np.int64).view(np.uint64) * _GOLD)
    return (h >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise with unit lattice spacing; values in [-1, 1]."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xf = np.floor(x)
    yf = np.floor(y)
    tx = x - xf
    ty = y - yf
    tx = tx * tx * (3.0 - 2.0 * tx)
    ty = ty * ty * (3.0 - 2.0 * ty)
    i = xf.astype(np.int64)
    j = yf.astype(np.int64)
    v00 = hash2(i, j, seed)
    v10 = hash2(i + 1, j, seed)
    v01 = hash2(i, j + 1, seed)
    v11 = hash2(i + 1, j + 1, seed)
    a = v00 + (v10 - v00) * tx
    b = v01 + (v11 - v01) * tx
    return 2.0 * (a + (b - a) * ty) - 1.0


def to_metres(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map lat/lon (degrees) to a global, locally metric plane (x east, y north, in metres)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    x = lon * METRES_PER_DEG_LON * np.cos(np.radians(lat))
    y = lat * METRES_PER_DEG_LAT
    return x, y


def fbm(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    wavelengths: tuple[float, ...],
    gains: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Sum of value-noise octaves at the given wavelengths (same unit as x, y).

    The result is normalised by the sum of gains, so it stays roughly in [-1, 1].
    """
    if gains is None:
        gains = tuple(0.6**k for k in range(len(wavelengths)))
    if len(gains) != len(wavelengths):
        raise ValueError(
            f"fbm needs one gain per wavelength, got {len(gains)} gains for {len(wavelengths)} wavelengths"
        )
    out = np.zeros(np.broadcast(x, y).shape, dtype=np.float64)
    for k, (wl, g) in enumerate(zip(wavelengths, gains, strict=True)):
        # Offsets decorrelate octaves that share a lattice.
        out += g * value_noise(x / wl + 17.13 * k, y / wl - 29.71 * k, seed * 131 + k)
    return out / float(sum(gains))
