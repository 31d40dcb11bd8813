"""How the world draws samples: places that cluster where people are, metadata, and 1-3 sound classes."""

from __future__ import annotations

from itertools import permutations

import numpy as np

from psm_model.world import geography
from psm_model.world.landcover import offset_latlon
from psm_model.world.law import HOUR_PRIOR, MONTH_PRIOR, SOURCE_PRIOR
from psm_model.world.sounds import N_SOUNDS

K_PROBS = np.array([0.45, 0.35, 0.20])
"""P(a clip holds k = 1, 2, 3 sound classes)."""
CAPTION_PRIOR = np.array([0.34, 0.33, 0.33])
"""Share of each caption source (metadata, captioner_a, captioner_b)."""

# Per audio source: P(place near a city), and the offset scale in units of the city's urban radius.
_NEAR_CITY = np.array([0.9, 0.55, 0.75, 0.8])
_OFFSET_SCALE = np.array([0.8, 3.0, 1.8, 1.4])
_OCEAN_KEEP = 0.15
"""Chance of keeping a drawn place that falls in the ocean (recordings from boats and piers)."""


def draw_set(p: np.ndarray, rng: np.random.Generator) -> tuple[int, ...]:
    """Draw k from K_PROBS, then k distinct classes one by one with probability proportional to p.

    Returns the sorted class indices. :func:`set_probability` gives the exact probability.
    """
    k = int(rng.choice(3, p=K_PROBS)) + 1
    p = np.asarray(p, dtype=np.float64).copy()
    chosen: list[int] = []
    for _ in range(k):
        q = p / p.sum()
        c = int(rng.choice(N_SOUNDS, p=q))
        chosen.append(c)
        p[c] = 0.0
    return tuple(sorted(chosen))


def set_probability(p: np.ndarray, classes: tuple[int, ...] | frozenset[int]) -> np.ndarray:
    """Exact P(draw_set returns exactly ``classes``) for class probabilities p ``[..., N_SOUNDS]``.

    The set of size k has probability K_PROBS[k-1] times the sum, over the k! orders, of the
    successive-draw products p_a / 1 * p_b / (1 - p_a) * p_c / (1 - p_a - p_b).
    """
    cls = tuple(sorted({int(c) for c in classes}))
    if not 1 <= len(cls) <= len(K_PROBS):
        raise ValueError(f"a sound set holds 1..{len(K_PROBS)} distinct classes, got {classes!r}")
    if cls[0] < 0 or cls[-1] >= N_SOUNDS:
        raise ValueError(f"sound class indices must be in 0..{N_SOUNDS - 1}, got {classes!r}")
    p = np.asarray(p, dtype=np.float64)
    total = np.zeros(p.shape[:-1])
    for order in permutations(cls):
        term = np.ones(p.shape[:-1])
        used = np.zeros(p.shape[:-1])
        for c in order:
            pc = p[..., c]
            term = term * pc / np.maximum(1.0 - used, 1e-300)
            used = used + pc
        total = total + term
    return K_PROBS[len(cls) - 1] * total


def draw_places(
    n: int, sources: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Recording places that cluster where people are.

    Per audio source, a share of places lies near a city drawn with weight population^0.75 and
    offset by an exponential distance scaled by the city's urban radius; the rest are uniform
    over land (by area). Places in the ocean are mostly redrawn.
    """
    c = geography.cities()
    w = c.population**0.75
    w = w / w.sum()
    lat = np.empty(n)
    lon = np.empty(n)
    todo = np.arange(n)
    for _ in range(50):
        if todo.size == 0:
            break
        m = todo.size
        src = sources[todo]
        near = rng.random(m) < _NEAR_CITY[src]
        city = rng.choice(c.lat.shape[0], size=m, p=w)
        dist = rng.exponential(1.0, m) * _OFFSET_SCALE[src] * c.radius_m[city]
        ang = rng.uniform(0, 2 * np.pi, m)
        clat, clon = offset_latlon(c.lat[city], c.lon[city], dist * np.cos(ang), dist * np.sin(ang))
        ulat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, m)))
        ulon = rng.uniform(-180.0, 180.0, m)
        plat = np.where(near, clat, ulat)
        plon = np.where(near, clon, ulon)
        ocean = geography.is_ocean(plat, plon)
        polar = np.abs(plat) > 84.0
        keep = (~ocean | (near & (rng.random(m) < _OCEAN_KEEP))) & ~polar
        lat[todo[keep]] = plat[keep]
        lon[todo[keep]] = plon[keep]
        todo = todo[~keep]
    if todo.size:
        raise RuntimeError(f"could not draw {todo.size} land places in 50 rounds")
    return lat, lon


def draw_metadata(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Audio source, caption source, month (1..12) and local hour (0..23) for n samples."""
    return {
        "source": rng.choice(len(SOURCE_PRIOR), size=n, p=SOURCE_PRIOR),
        "caption_source": rng.choice(len(CAPTION_PRIOR), size=n, p=CAPTION_PRIOR),
        "month": rng.choice(12, size=n, p=MONTH_PRIOR) + 1,
        "hour": rng.choice(24, size=n, p=HOUR_PRIOR),
    }
