"""The land-cover field: a deterministic, seeded map of land-cover classes over the globe."""

from __future__ import annotations

import numpy as np

from psm_model.world import geography
from psm_model.world.noise import fbm, to_metres

LANDCOVER_CLASSES: tuple[str, ...] = (
    "ocean",
    "coast",
    "water",
    "urban",
    "suburban",
    "cropland",
    "forest",
    "grassland",
    "desert",
    "wetland",
    "tundra",
    "snow",
)
"""Land-cover classes. ``coast`` is the beach strip, ``water`` inland lakes and ponds."""

LAND_CLASSES: tuple[str, ...] = LANDCOVER_CLASSES[2:]
"""The classes that compete by score on land (everything but ocean and coast)."""

N_LANDCOVER = len(LANDCOVER_CLASSES)
COAST_WIDTH = 0.12
"""Width of the beach strip, in units of the interpolated ocean indicator."""

# Mean annual temperature by absolute latitude (deg C): a crude climate band model.
_T_LAT = np.array([0.0, 15.0, 30.0, 45.0, 60.0, 70.0, 80.0, 90.0])
_T_VAL = np.array([27.0, 25.0, 19.0, 11.0, 1.0, -9.0, -18.0, -30.0])
# Moisture by absolute latitude: wet tropics, dry subtropics, moist mid-latitudes.
_M_LAT = np.array([0.0, 10.0, 18.0, 25.0, 32.0, 42.0, 55.0, 70.0, 90.0])
_M_VAL = np.array([0.75, 0.55, -0.15, -0.55, -0.3, 0.2, 0.35, 0.0, -0.3])


def annual_temperature(lat: np.ndarray, lon: np.ndarray, seed: int) -> np.ndarray:
    """Mean annual temperature (deg C) from the latitude band plus smooth regional noise."""
    lat = np.asarray(lat, dtype=np.float64)
    t = np.interp(np.abs(lat), _T_LAT, _T_VAL)
    return t + 4.0 * fbm(lon, lat, seed + 11, (40.0, 9.0))


def moisture(lat: np.ndarray, lon: np.ndarray, seed: int) -> np.ndarray:
    """Moisture index in about [-1.5, 1.5]: latitude band plus noise at 4000, 1000 and 200 km."""
    lat = np.asarray(lat, dtype=np.float64)
    m = np.interp(np.abs(lat), _M_LAT, _M_VAL)
    return m + 0.85 * fbm(lon, lat, seed + 12, (36.0, 9.0, 1.8))


class LandCoverField:
    """Seeded land-cover field, evaluated at any array of points.

    Each land class gets a smooth score from the climate bands (temperature and moisture
    by latitude), seeded noise at several scales (20 km down to about 150 m) and human
    influence (urban intensity from city populations, regional density for farms). The
    highest score wins. Ocean and the beach strip come from the 1 km land mask with a
    noisy threshold, so coastlines wiggle below the mask's resolution.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def evaluate(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Land-class scores ``[..., len(LAND_CLASSES)]`` and the jittered ocean indicator ``[...]``."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        s = self.seed
        x, y = to_metres(lat, lon)
        temp = annual_temperature(lat, lon, s)
        moist = moisture(lat, lon, s)
        veg = fbm(x, y, s + 21, (20e3, 5e3, 1.2e3, 300.0))
        agri_n = fbm(x, y, s + 22, (8e3, 2e3, 500.0))
        wet_n = fbm(x, y, s + 23, (15e3, 3e3, 700.0))
        lake_n = fbm(x, y, s + 24, (6e3, 1.5e3, 400.0))
        urb_n = fbm(x, y, s + 25, (3e3, 800.0, 200.0))
        coast_n = fbm(x, y, s + 26, (1.5e3, 400.0, 150.0))

        u = geography.urban_intensity(lat, lon) * (1.0 + 0.5 * urb_n)
        dens = geography.rural_density(lat, lon)
        warm = np.clip((temp + 6.0) / 6.0, 0.0, 1.0)  # 0 in the cold, 1 where trees grow
        mild = np.clip((temp - 1.0) / 6.0, 0.0, 1.0)  # 0 in the cold, 1 where crops grow
        dry = np.clip(-moist, 0.0, None)

        scores = np.empty(lat.shape + (len(LAND_CLASSES),), dtype=np.float64)
        scores[..., 0] = 3.0 * lake_n - 1.0 + 0.3 * moist  # water
        scores[..., 1] = 7.0 * (u - 0.52)  # urban
        scores[..., 2] = 2.0 - 6.0 * np.abs(u - 0.38)  # suburban
        scores[..., 3] = (2.2 * dens + 0.9 * agri_n - 0.35 - 1.2 * dry - 3.0 * u) * mild - 2.0 * (
            1 - mild
        )  # cropland
        scores[..., 4] = (0.9 * moist + 0.8 * veg + 0.1) * warm - 1.5 * (1 - warm)  # forest
        scores[..., 5] = 0.25 - np.abs(moist + 0.15) + 0.35 * veg + 0.2 * agri_n  # grassland
        scores[..., 6] = 1.4 * (dry - 0.45) + 0.3 * veg - 3.0 * (temp < 6.0)  # desert
        scores[..., 7] = 2.6 * wet_n - 0.75 + 0.3 * moist  # wetland
        scores[..., 8] = 1.5 - np.abs(temp + 6.0) / 4.0 + 0.3 * veg  # tundra
        scores[..., 9] = (-temp - 10.0) / 1.5 + 0.4 * coast_n  # snow
        oj = geography.ocean_fraction(lat, lon) + 0.3 * coast_n
        return scores, oj

    @staticmethod
    def classify(land_scores: np.ndarray, oj: np.ndarray) -> np.ndarray:
        """Class index into LANDCOVER_CLASSES for scores and ocean indicators from :meth:`evaluate`."""
        cls = np.argmax(land_scores, axis=-1).astype(np.int8) + 2
        cls = np.where(oj > 0.5 - COAST_WIDTH, np.int8(1), cls)
        return np.where(oj > 0.5, np.int8(0), cls)

    def classes(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Land-cover class index at each point."""
        return self.classify(*self.evaluate(lat, lon))


def footprint_offsets(side_m: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """East/north offsets (metres) of an n x n grid of cell centres covering a square of side ``side_m``."""
    if n < 1 or side_m <= 0:
        raise ValueError(f"footprint needs n >= 1 and side_m > 0, got n={n}, side_m={side_m}")
    c = (np.arange(n) + 0.5) / n - 0.5
    dx, dy = np.meshgrid(c * side_m, -c * side_m)
    return dx.ravel(), dy.ravel()


def offset_latlon(
    lat: np.ndarray, lon: np.ndarray, dx_m: np.ndarray, dy_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move points by east/north offsets in metres (local flat-earth approximation)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    nlat = lat + dy_m / 110_574.0
    coslat = np.maximum(np.cos(np.radians(lat)), 1e-3)
    nlon = lon + dx_m / (111_320.0 * coslat)
    nlon = (nlon + 180.0) % 360.0 - 180.0
    return np.clip(nlat, -90.0, 90.0), nlon


def fractions(
    field: LandCoverField, lat: np.ndarray, lon: np.ndarray, side_m: float, n: int
) -> np.ndarray:
    """Land-cover fractions ``[len(lat), N_LANDCOVER]`` of square footprints sampled on an n x n grid."""
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    dx, dy = footprint_offsets(side_m, n)
    plat, plon = offset_latlon(lat[:, None], lon[:, None], dx[None, :], dy[None, :])
    cls = field.classes(plat, plon)
    out = np.zeros((lat.shape[0], N_LANDCOVER))
    rows = np.repeat(np.arange(lat.shape[0]), cls.shape[1])
    np.add.at(out, (rows, cls.ravel().astype(np.int64)), 1.0)
    return out / cls.shape[1]
