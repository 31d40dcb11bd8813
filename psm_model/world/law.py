"""The soundscape law: the true distribution over sound classes given land cover, season, hour and source."""

from __future__ import annotations

import numpy as np

from psm_model.metadata import AUDIO_SOURCES
from psm_model.world.landcover import LANDCOVER_CLASSES
from psm_model.world.sounds import N_SOUNDS, SOUND_CLASSES

# Affinity of each land-cover class (rows, LANDCOVER_CLASSES order) for each sound (columns,
# SOUND_CLASSES order: birdsong insects frogs rooster sheep dog car_horn traffic siren crowd
# church_bells ocean_waves rain wind construction).
AFFINITY = np.array(
    [
        [0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 0.0, 0.05, 0.0, 3.0, 0.6, 1.5, 0.0],  # ocean
        [0.6, 0.3, 0.0, 0.0, 0.0, 0.3, 0.0, 0.2, 0.0, 0.8, 0.0, 2.5, 0.4, 1.0, 0.0],  # coast
        [1.0, 0.8, 1.5, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.1, 0.0, 0.3, 0.5, 0.5, 0.0],  # water
        [0.5, 0.1, 0.0, 0.0, 0.0, 0.4, 1.8, 2.5, 1.2, 2.0, 0.9, 0.0, 0.3, 0.2, 1.4],  # urban
        [1.2, 0.5, 0.1, 0.3, 0.0, 1.5, 0.5, 1.2, 0.3, 0.6, 0.6, 0.0, 0.3, 0.3, 0.6],  # suburban
        [1.0, 1.2, 0.3, 1.6, 1.4, 0.7, 0.05, 0.3, 0.0, 0.1, 0.3, 0.0, 0.4, 0.8, 0.1],  # cropland
        [2.5, 1.2, 0.4, 0.0, 0.0, 0.1, 0.0, 0.05, 0.0, 0.05, 0.0, 0.0, 0.6, 0.6, 0.05],  # forest
        [1.0, 1.5, 0.1, 0.3, 1.2, 0.3, 0.0, 0.1, 0.0, 0.05, 0.0, 0.0, 0.3, 1.2, 0.0],  # grassland
        [0.2, 0.5, 0.0, 0.0, 0.2, 0.2, 0.0, 0.05, 0.0, 0.05, 0.0, 0.0, 0.05, 2.5, 0.0],  # desert
        [1.6, 1.4, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0],  # wetland
        [0.6, 0.3, 0.1, 0.0, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 2.5, 0.0],  # tundra
        [0.05, 0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0],  # snow
    ]
)
AFFINITY_FLOOR = 0.02
"""Added to every affinity, so every sound is possible everywhere."""

# Source preference (rows AUDIO_SOURCES order: yfcc, inaturalist, aporee, freesound).
SOURCE_WEIGHTS = np.array(
    [
        [
            0.5,
            0.5,
            0.5,
            0.5,
            0.5,
            1.0,
            2.5,
            2.5,
            2.5,
            2.5,
            2.5,
            0.8,
            0.8,
            0.8,
            2.5,
        ],  # yfcc: human, urban
        [
            4.0,
            4.0,
            4.0,
            0.8,
            0.8,
            0.4,
            0.05,
            0.05,
            0.05,
            0.05,
            0.05,
            0.2,
            0.2,
            0.2,
            0.05,
        ],  # iNaturalist: animals
        [
            1.5,
            0.6,
            0.6,
            0.6,
            0.6,
            0.6,
            0.6,
            1.5,
            0.6,
            1.0,
            2.0,
            2.5,
            2.5,
            2.5,
            0.6,
        ],  # aporee: ambient field recordings
        [1.0] * N_SOUNDS,  # freesound: a mix
    ]
)
SOURCE_PRIOR = np.array([0.312, 0.371, 0.159, 0.158])
"""Share of each audio source (GeoSound's counts)."""
MONTH_PRIOR = np.full(12, 1.0 / 12.0)
"""The sampler draws months uniformly."""

assert AFFINITY.shape == (len(LANDCOVER_CLASSES), N_SOUNDS)
assert SOURCE_WEIGHTS.shape == (len(AUDIO_SOURCES), N_SOUNDS)


def _bump(h: np.ndarray, centre: float, width: float) -> np.ndarray:
    d = np.abs(np.mod(h - centre + 12.0, 24.0) - 12.0)
    return np.exp(-0.5 * (d / width) ** 2)


def _window(h: np.ndarray, start: float, end: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-2.0 * (h - start))) / (1.0 + np.exp(-2.0 * (end - h)))


def diurnal(hour: np.ndarray) -> np.ndarray:
    """Diurnal multipliers ``[..., N_SOUNDS]`` for local hours 0..23."""
    h = np.asarray(hour, dtype=np.float64)[..., None]
    day = _window(h, 6.0, 19.0)
    cols = [
        0.15
        + 1.6 * _bump(h, 6.0, 1.5)
        + 0.6 * _bump(h, 18.5, 1.5)
        + 0.5 * day,  # birdsong: dawn chorus
        0.2 + 1.6 * _bump(h, 21.0, 2.5) + 0.3 * day,  # insects: warm evenings
        0.05 + 1.5 * _bump(h, 23.5, 3.0),  # frogs: nights
        0.02 + 2.2 * _bump(h, 5.5, 1.0) + 0.3 * _window(h, 7.0, 17.0),  # rooster: dawn
        0.05 + 1.0 * _window(h, 7.0, 19.0),  # sheep: daytime
        0.3 + 0.7 * _window(h, 6.0, 22.0),  # dog
        0.1
        + 1.0 * _bump(h, 8.0, 1.5)
        + 1.0 * _bump(h, 17.5, 1.5)
        + 0.5 * day,  # car horn: rush hours
        0.15
        + 1.2 * _bump(h, 8.0, 1.5)
        + 1.2 * _bump(h, 17.5, 1.5)
        + 0.6 * _window(h, 6.0, 21.0),  # traffic
        0.6 + 0.2 * day,  # siren
        0.1 + 1.0 * _window(h, 10.0, 22.0),  # crowd
        0.02
        + 1.0 * _window(h, 7.0, 19.0)
        + 0.8 * _bump(h, 12.0, 0.7)
        + 0.6 * _bump(h, 18.0, 0.7),  # bells
        np.ones_like(h),  # ocean waves
        np.ones_like(h),  # rain
        0.8 + 0.4 * _bump(h, 15.0, 3.0),  # wind: afternoon
        0.02 + 1.2 * _window(h, 7.0, 17.0),  # construction: working hours
    ]
    return np.concatenate(cols, axis=-1)


HOUR_PRIOR = 0.25 + _window(np.arange(24.0), 6.0, 21.0) + 0.5 * _bump(np.arange(24.0), 6.0, 1.5)
HOUR_PRIOR = HOUR_PRIOR / HOUR_PRIOR.sum()
"""The sampler's distribution of local hours: mostly daytime, with some dawn and night recordings."""


def season_month(month: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Northern-equivalent month: in the southern hemisphere the seasons are shifted by six months."""
    m = np.asarray(month, dtype=np.float64)
    return np.where(np.asarray(lat) < 0, np.mod(m + 5.0, 12.0) + 1.0, m)


def temperature(lat: np.ndarray, month: np.ndarray) -> np.ndarray:
    """A crude monthly temperature (deg C): latitude band plus a seasonal swing growing with latitude."""
    a = np.abs(np.asarray(lat, dtype=np.float64))
    annual = np.interp(
        a,
        [0.0, 15.0, 30.0, 45.0, 60.0, 70.0, 80.0, 90.0],
        [27.0, 25.0, 19.0, 11.0, 1.0, -9.0, -18.0, -30.0],
    )
    swing = 12.0 * np.minimum(a / 60.0, 1.0)
    return annual + swing * np.cos(2 * np.pi * (season_month(month, lat) - 7.0) / 12.0)


def seasonal(month: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Seasonal multipliers ``[..., N_SOUNDS]``; mirrored in the southern hemisphere."""
    m = season_month(month, lat)[..., None]
    t = temperature(lat, month)[..., None]
    tropic = (np.abs(np.asarray(lat, dtype=np.float64)) < 20.0)[..., None]
    warm = 1.0 / (1.0 + np.exp(-(t - 12.0) / 3.0))
    spring = np.exp(-0.5 * ((m - 4.5) / 1.2) ** 2)
    breeding = np.exp(-0.5 * ((m - 5.0) / 1.8) ** 2)
    ones = np.ones_like(m + t)
    cols = [
        np.where(tropic, 0.9, 0.35 + 0.75 * breeding),  # birdsong: spring breeding season
        0.05 + warm,  # insects: warm months
        0.08
        + np.where(tropic, 0.7, spring) / (1.0 + np.exp(-(t - 6.0) / 2.0)),  # frogs: spring nights
        ones,  # rooster
        0.6 + 0.4 / (1.0 + np.exp(-t / 3.0)),  # sheep: outdoors when not freezing
        ones,
        ones,
        ones,
        ones,
        0.8 + 0.3 * warm,  # crowd: more outdoor life in summer
        ones,
        ones,
        0.7 + 0.3 * np.cos(2 * np.pi * (m - 11.0) / 12.0),  # rain
        0.8 + 0.3 * np.cos(2 * np.pi * (m - 1.0) / 12.0),  # wind: winter storms
        0.8 + 0.3 * warm,  # construction season
    ]
    return np.concatenate([np.broadcast_to(c, np.broadcast(m, t).shape) for c in cols], axis=-1)


def law(
    fractions: np.ndarray,
    lat: np.ndarray,
    month: np.ndarray,
    hour: np.ndarray,
    source: np.ndarray,
) -> np.ndarray:
    """Class probabilities ``[N, N_SOUNDS]`` from land-cover fractions and fully known metadata.

    Args:
        fractions: ``[N, len(LANDCOVER_CLASSES)]`` land-cover fractions under the footprint.
        lat: ``[N]`` or scalar latitude (sets the hemisphere and climate band).
        month: ``[N]`` or scalar month 1..12.
        hour: ``[N]`` or scalar local hour 0..23.
        source: ``[N]`` or scalar index into AUDIO_SOURCES.
    """
    f = np.atleast_2d(np.asarray(fractions, dtype=np.float64))
    n = f.shape[0]
    lat = np.broadcast_to(np.asarray(lat, dtype=np.float64), (n,))
    month = np.broadcast_to(np.asarray(month, dtype=np.float64), (n,))
    hour = np.broadcast_to(np.asarray(hour, dtype=np.float64), (n,))
    source = np.broadcast_to(np.asarray(source, dtype=np.int64), (n,))
    w = (
        (f @ AFFINITY + AFFINITY_FLOOR)
        * diurnal(hour)
        * seasonal(month, lat)
        * SOURCE_WEIGHTS[source]
    )
    return w / w.sum(axis=-1, keepdims=True)


def sound_index(name: str) -> int:
    """Index of a sound class name; raises ValueError for unknown names."""
    try:
        return SOUND_CLASSES.index(name)
    except ValueError as e:
        raise ValueError(
            f"unknown sound class {name!r}; expected one of {', '.join(SOUND_CLASSES)}"
        ) from e
