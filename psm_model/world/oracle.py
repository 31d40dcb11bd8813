"""Oracle retrieval scores from the world's exact set probabilities (the best any model can rank)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import product

import numpy as np

from psm_model.metadata import AUDIO_SOURCES, audio_source_index, check_hour, check_month
from psm_model.world.law import HOUR_PRIOR, MONTH_PRIOR, SOURCE_PRIOR, law
from psm_model.world.sampler import set_probability
from psm_model.world.sounds import SOUND_CLASSES


def _set_key(classes: Sequence[str | int]) -> tuple[int, ...]:
    out = set()
    for c in classes:
        if isinstance(c, str):
            if c not in SOUND_CLASSES:
                raise ValueError(
                    f"unknown sound class {c!r}; expected one of {', '.join(SOUND_CLASSES)}"
                )
            out.add(SOUND_CLASSES.index(c))
        else:
            out.add(int(c))
    return tuple(sorted(out))


def _expanded_probs(
    fr: np.ndarray, lat: np.ndarray, months: Sequence, hours: Sequence, sources: Sequence
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities of every place, with unknown metadata expanded over the sampler's priors.

    Returns ``(rows [M], weights [M], probs [M, n_sounds])``: place ``rows[m]`` has weight
    ``weights[m]`` on the law ``probs[m]``. A place with fully known metadata has one entry of
    weight 1; one with unknown month, hour or source has one entry per possible value.
    """
    n = fr.shape[0]
    m = [check_month(None if v is None or v != v else int(v)) for v in months]
    h = [check_hour(None if v is None or v != v else int(v)) for v in hours]
    s = [audio_source_index(v) if isinstance(v, str) or v is None else int(v) for v in sources]
    rows, weights, mm, hh, ss = [], [], [], [], []
    for i in range(n):
        ms = [(m[i], 1.0)] if m[i] is not None else [(k + 1, MONTH_PRIOR[k]) for k in range(12)]
        hs = [(h[i], 1.0)] if h[i] is not None else [(k, HOUR_PRIOR[k]) for k in range(24)]
        srcs = (
            [(s[i], 1.0)]
            if s[i] is not None
            else [(k, SOURCE_PRIOR[k]) for k in range(len(AUDIO_SOURCES))]
        )
        for (a, wa), (b, wb), (c, wc) in product(ms, hs, srcs):
            rows.append(i)
            weights.append(wa * wb * wc)
            mm.append(a)
            hh.append(b)
            ss.append(c)
    r = np.array(rows, dtype=np.int64)
    p = law(fr[r], lat[r], np.array(mm), np.array(hh), np.array(ss))
    return r, np.array(weights), p


def set_prob_matrix(
    fractions: np.ndarray,
    lat: np.ndarray,
    months: Sequence[int | None],
    hours: Sequence[int | None],
    sources: Sequence[str | int | None],
    sets: Sequence[Sequence[str | int]],
) -> np.ndarray:
    """P[i, j] = P(sampler draws exactly sets[j] | place i, metadata i), shape ``[N_places, N_sets]``.

    Args:
        fractions: ``[N, n_landcover]`` land-cover fractions of each place's hearing footprint
            (``World.landcover_fractions_grid`` or the index's ``fractions`` column).
        lat: ``[N]`` latitudes of the places.
        months: per-place month 1..12, or None (marginalised over the sampler's months).
        hours: per-place local hour 0..23, or None (marginalised over the sampler's hours).
        sources: per-place audio source name or index, or None (marginalised over the source prior).
        sets: the class sets (names or indices) to score.
    """
    fr = np.atleast_2d(np.asarray(fractions, dtype=np.float64))
    lat = np.asarray(lat, dtype=np.float64).ravel()
    if not (fr.shape[0] == lat.shape[0] == len(months) == len(hours) == len(sources)):
        raise ValueError(
            f"fractions, lat, months, hours and sources need one entry per place; got {fr.shape[0]}, "
            f"{lat.shape[0]}, {len(months)}, {len(hours)}, {len(sources)}"
        )
    keys = [_set_key(s) for s in sets]
    uniq = sorted(set(keys))
    col = {k: c for c, k in enumerate(uniq)}
    out = np.zeros((fr.shape[0], len(uniq)))
    rows, weights, p = _expanded_probs(fr, lat, months, hours, sources)
    simple = rows.shape[0] == fr.shape[0]  # every place fully known: one entry each, in order
    for k, c in col.items():
        v = set_probability(p, k)
        out[:, c] = v if simple else np.bincount(rows, weights * v, minlength=fr.shape[0])
    return out[:, [col[k] for k in keys]]


def oracle_scores(
    samples: Sequence[Mapping] | Mapping[str, Sequence],
    fractions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Oracle score matrices for a test set used as both queries and gallery.

    Args:
        samples: records (or a column mapping, e.g. a DataFrame) with ``classes``, ``lat``,
            ``month``, ``hour`` and ``audio_source``.
        fractions: ``[N, n_landcover]`` land-cover fractions of each sample's hearing footprint.

    Returns:
        ``(i2a, a2i)``. ``i2a[i, j] = P(classes_j | place_i, meta_i) / mean_k P(classes_j | place_k, meta_k)``
        scores clip j for image query i (a likelihood ratio: the prior of each clip's set is
        divided out). ``a2i[j, i] = P(classes_j | place_i, meta_i)`` scores image i for clip query j.
        The true match of query i is item i in both.
    """
    if isinstance(samples, Mapping) or hasattr(samples, "columns"):
        cols = samples
        classes, lat = list(cols["classes"]), np.asarray(cols["lat"], dtype=np.float64)
        months, hours, sources = list(cols["month"]), list(cols["hour"]), list(cols["audio_source"])
    else:
        classes = [s["classes"] for s in samples]
        lat = np.array([s["lat"] for s in samples], dtype=np.float64)
        months = [s.get("month") for s in samples]
        hours = [s.get("hour") for s in samples]
        sources = [s.get("audio_source") for s in samples]
    p = set_prob_matrix(fractions, lat, months, hours, sources, classes)
    prior = p.mean(axis=0, keepdims=True)
    i2a = p / np.maximum(prior, 1e-300)
    return i2a, p.T.copy()


def true_match_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of the true match (the diagonal) per query row; ties count half (random tie-breaking in expectation)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"scores must be a square [queries, gallery] matrix, got shape {s.shape}")
    d = np.diag(s)[:, None]
    better = (s > d).sum(axis=1)
    ties = (s == d).sum(axis=1) - 1
    return 1.0 + better + 0.5 * ties
