"""Spatial train/val/test splits by grid cells, so no cell is shared between splits."""

from __future__ import annotations

import numpy as np

from psm_model.world.noise import hash2

SPLITS: tuple[str, ...] = ("train", "val", "test")


def cell_ids(
    lat: np.ndarray, lon: np.ndarray, cell_deg: float | None = 1.0, cell_km: float | None = None
) -> np.ndarray:
    """Integer cell id per point: ``cell_deg`` x ``cell_deg`` degree cells, or ``cell_km`` square cells.

    Kilometre cells are rows of constant height ``cell_km`` whose columns are ``cell_km`` wide at
    the row's centre latitude (the SoundingEarth-style split uses 10 km).
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if (cell_deg is None) == (cell_km is None):
        raise ValueError("give exactly one of cell_deg and cell_km")
    if cell_km is not None:
        if not cell_km > 0:
            raise ValueError(f"cell_km must be > 0, got {cell_km}")
        h = cell_km / 110.574
        row = np.floor((lat + 90.0) / h)
        centre = np.radians(np.clip(-90.0 + (row + 0.5) * h, -89.9, 89.9))
        w = cell_km / (111.320 * np.cos(centre))
        col = np.floor((lon + 180.0) / w)
    else:
        if not cell_deg > 0:  # type: ignore[operator]
            raise ValueError(f"cell_deg must be > 0, got {cell_deg}")
        row = np.floor((lat + 90.0) / cell_deg)
        col = np.floor((lon + 180.0) / cell_deg)
    return row.astype(np.int64) * 10_000_000 + col.astype(np.int64)


def assign_splits(
    cells: np.ndarray, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> np.ndarray:
    """Split name per point: each cell goes wholly to train, val or test with the given probabilities."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    cells = np.asarray(cells, dtype=np.int64)
    u = hash2(cells // 10_000_000, cells % 10_000_000, seed + 0x5B117)
    k = np.searchsorted(np.cumsum(f)[:-1], u, side="right")
    return np.array(SPLITS, dtype=object)[k]
