"""What the rankings return and the checks of their arguments (shared by every ranking)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

MAX_K = 10_000
"""Largest k the ranking functions accept (``psm.max_k()``)."""

METHODS = ("auto", "exact", "ann")
AGGREGATES = ("mean", "max", "share")


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True, eq=False)
class Gaussian:
    """A query Gaussian N(mu, diag(var)) of a model, not stored (typed text, an uploaded clip).

    Every ranking takes either the id of a stored query or one of these; a stored query is
    ranked as its Gaussian (:func:`psm_db.ranking.query_gaussian`).
    """

    model_version: str
    mu: np.ndarray
    """float32, the model's embedding size."""
    var: np.ndarray
    """sigma^2 (not log-variance), float32, the model's embedding size."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu", np.asarray(self.mu, dtype=np.float32).ravel())
        object.__setattr__(self, "var", np.asarray(self.var, dtype=np.float32).ravel())


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class TileScore:
    """One ranked tile."""

    tile_id: int
    geom: BaseGeometry
    distance: float
    """CSD between the tile's Gaussian and the query's."""
    probability: float
    """sigmoid(-a * distance + b) with the model's learned a, b."""
    uncertainty: float
    """The tile's sum of sigma^2."""


@dataclass(frozen=True)
class RegionScore:
    """One ranked region of a region set."""

    region_id: int
    name: str
    score: float
    tile_count: int
    uncertainty: float
    """Mean over the region's tiles of their sum of sigma^2."""


@dataclass(frozen=True)
class MapScores:
    """Scores of every tile of a region under one condition, as parallel numpy arrays."""

    tile_id: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    bounds: np.ndarray
    """(n, 4) float64: xmin, ymin, xmax, ymax of each tile."""
    probability: np.ndarray
    distance: np.ndarray
    var_sum: np.ndarray

    def __len__(self) -> int:
        return int(self.tile_id.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """The scores as a DataFrame, one row per tile."""
        return pd.DataFrame({
            "tile_id": self.tile_id, "lon": self.lon, "lat": self.lat,
            "xmin": self.bounds[:, 0], "ymin": self.bounds[:, 1],
            "xmax": self.bounds[:, 2], "ymax": self.bounds[:, 3],
            "probability": self.probability, "distance": self.distance, "var_sum": self.var_sum,
        })


# --------------------------------------------------------------------------- argument checks


def check_k(k: int) -> int:
    """Return ``k`` when it is an integer in 1..MAX_K, else raise ValueError."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= MAX_K:
        raise ValueError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
    return int(k)


def check_int(value: int | None, name: str) -> int | None:
    """Return ``value`` as an int (None stays None), else raise ValueError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer or None, got {value!r}")
    return int(value)


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    """Return ``value`` when it is one of ``choices``, else raise ValueError naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


__all__ = ["AGGREGATES", "MAX_K", "METHODS", "Gaussian", "MapScores", "RegionScore", "TileScore", "check_choice", "check_int",
           "check_k"]
