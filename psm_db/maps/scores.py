"""Scores of a region's tiles for one query and condition: what every map draws."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LAYERS = {
    "probability": ("Match probability", "viridis"),
    "var_sum": ("Uncertainty: sum of sigma^2", "magma"),
    "distance": ("CSD (lower is closer)", "viridis_r"),
}


@dataclass(frozen=True)
class TileScores:
    """Scores of every tile of a region for one query and one metadata condition (numpy arrays)."""

    tile_id: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    xmin: np.ndarray
    ymin: np.ndarray
    xmax: np.ndarray
    ymax: np.ndarray
    probability: np.ndarray
    distance: np.ndarray
    var_sum: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.tile_id.shape[0])

    @classmethod
    def from_map(cls, m: Any, meta: dict | None = None) -> TileScores:
        """The scores of :func:`psm_db.ranking.map_scores` (its ``bounds`` is ``(n, 4)``: xmin, ymin, xmax, ymax)."""
        b = m.bounds
        return cls(m.tile_id, m.lon, m.lat, b[:, 0], b[:, 1], b[:, 2], b[:, 3], m.probability, m.distance,
                   m.var_sum, dict(meta or {}))

    def layer(self, name: str) -> np.ndarray:
        """The values of one layer (probability, var_sum or distance)."""
        if name not in LAYERS:
            raise ValueError(f"unknown layer {name!r}; choose one of {', '.join(LAYERS)}")
        return np.asarray(getattr(self, name), dtype=np.float64)

    def top(self, k: int = 20) -> np.ndarray:
        """Indices of the k most probable tiles (ties broken by tile id)."""
        order = np.lexsort((self.tile_id, -self.probability))
        return order[:k]

    def nearest(self, lon: float, lat: float) -> int:
        """Index of the tile whose centre is closest to (lon, lat)."""
        coslat = math.cos(math.radians(lat))
        d2 = ((self.lon - lon) * coslat) ** 2 + (self.lat - lat) ** 2
        return int(np.argmin(d2))


__all__ = ["LAYERS", "TileScores"]
