"""Bayes-optimal retrieval scores from the synthetic world's exact sampling law (the oracle scorer).

The world draws a clip's sound set S from a known distribution given the place (its land-cover
footprint and latitude), month, hour and audio source. For a test split used as queries and gallery:

* I2A: the other gallery clips come from elsewhere, so the best score of clip j for image query q
  is the likelihood ratio ``P(S_j | place_q, meta_q) / P(S_j)`` with ``P(S_j)`` the mean of
  ``P(S_j | place_i, meta_i)`` over the split.
* A2I: the images are ranked by ``P(S_q | place_j, meta_j)``.

Metadata the scorer is not given (a metadata condition such as "none" or "hour only") is
marginalised over the sampler's own distribution of it. The place is always known: the image shows
the footprint. The caption source does not change the sounds, so it carries no information here.

With text (:func:`caption_oracle_scores`) the scorer is also told what the caption tells: the
exact set of the clip's classes, the context items the caption names (its place, and in a world
built with caption context its month, time of day and source tag) and its caption source (a
caption's style gives it away).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import permutations, product

import numpy as np

from psm_model.world.captions import time_of_day
from psm_model.world.law import HOUR_PRIOR, MONTH_PRIOR, SOURCE_PRIOR, law
from psm_model.world.sampler import K_PROBS
from psm_model.world.sounds import SOUND_CLASSES

SOUND_METADATA: tuple[str, ...] = ("month", "hour", "audio_source")
"""Metadata types that change the sound distribution (the rest carry no information)."""
CAPTION_NAMED: tuple[str, ...] = ("landcover", "month", "time_of_day", "audio_source")
"""What a caption may name besides its sounds (the index column ``caption_named``)."""
_CHECKED_BY = {"landcover": None, "month": "month", "time_of_day": "hour", "audio_source": "audio_source"}
"""The metadata type an image must be given to check a named item (None: the image shows it)."""


def set_indices(classes: list[tuple[str, ...]] | list[tuple[int, ...]]) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Unique sorted class-index sets and, per sample, the index of its set among them."""
    sets = [tuple(sorted(SOUND_CLASSES.index(c) if isinstance(c, str) else int(c) for c in cl)) for cl in classes]
    uniq = sorted(set(sets))
    where = {s: k for k, s in enumerate(uniq)}
    return uniq, np.array([where[s] for s in sets], dtype=np.int64)


def set_probabilities(p: np.ndarray, sets: list[tuple[int, ...]]) -> np.ndarray:
    """P(the sampler draws exactly set u) for class probabilities p ``[N, C]`` and U sets: ``[N, U]``.

    Vectorised form of :func:`psm_model.world.sampler.set_probability` (k drawn from K_PROBS, then k
    distinct classes one by one proportionally to p). The sum over draw orders is factored through
    ``1 / (1 - p_x)`` and the symmetric ``1 / (1 - p_x - p_y)``.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.empty((p.shape[0], len(sets)))
    by_size: dict[int, list[int]] = {}
    for u, s in enumerate(sets):
        by_size.setdefault(len(s), []).append(u)
    if any(not 1 <= k <= len(K_PROBS) for k in by_size):
        raise ValueError(f"a sound set holds 1..{len(K_PROBS)} classes, got sizes {sorted(by_size)}")
    inv1 = 1.0 / np.maximum(1.0 - p, 1e-300)
    for k, cols in by_size.items():
        idx = np.array([sets[u] for u in cols], dtype=np.int64)  # [M, k]
        if k == 1:
            out[:, cols] = K_PROBS[0] * p[:, idx[:, 0]]
            continue
        pa, pb = p[:, idx[:, 0]], p[:, idx[:, 1]]
        ia, ib = inv1[:, idx[:, 0]], inv1[:, idx[:, 1]]
        if k == 2:
            out[:, cols] = K_PROBS[1] * pa * pb * (ia + ib)
            continue
        pc, ic = p[:, idx[:, 2]], inv1[:, idx[:, 2]]
        sab = 1.0 / np.maximum(1.0 - pa - pb, 1e-300)
        sac = 1.0 / np.maximum(1.0 - pa - pc, 1e-300)
        sbc = 1.0 / np.maximum(1.0 - pb - pc, 1e-300)
        orders = ia * (sab + sac) + ib * (sab + sbc) + ic * (sac + sbc)
        out[:, cols] = K_PROBS[2] * pa * pb * pc * orders
    return out


def _set_probabilities_reference(p: np.ndarray, sets: list[tuple[int, ...]]) -> np.ndarray:
    """Straightforward sum over draw orders (used by the tests to check the factored form)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros((p.shape[0], len(sets)))
    for u, s in enumerate(sets):
        for order in permutations(s):
            term = np.ones(p.shape[0])
            used = np.zeros(p.shape[0])
            for c in order:
                term = term * p[:, c] / np.maximum(1.0 - used, 1e-300)
                used = used + p[:, c]
            out[:, u] += term
        out[:, u] *= K_PROBS[len(s) - 1]
    return out


def conditional_set_probs(
    fractions: np.ndarray,
    lat: np.ndarray,
    month: np.ndarray,
    hour: np.ndarray,
    source: np.ndarray,
    sets: list[tuple[int, ...]],
    known: tuple[str, ...] = SOUND_METADATA,
) -> np.ndarray:
    """``P(S_u | place_i, known metadata of i)`` ``[N, U]``, marginalising unknown metadata over its prior."""
    unknown = [m for m in SOUND_METADATA if m not in known]
    grids = {
        "month": [(m, MONTH_PRIOR[m - 1]) for m in range(1, 13)],
        "hour": [(h, HOUR_PRIOR[h]) for h in range(24)],
        "audio_source": [(s, SOURCE_PRIOR[s]) for s in range(len(SOURCE_PRIOR))],
    }
    own = {"month": np.asarray(month), "hour": np.asarray(hour), "audio_source": np.asarray(source)}
    out = np.zeros((fractions.shape[0], len(sets)))
    for combo in product(*(grids[m] for m in unknown)):
        values = dict(own)
        weight = 1.0
        for name, (v, w) in zip(unknown, combo, strict=True):
            values[name] = np.full(fractions.shape[0], v)
            weight *= float(w)
        probs = law(fractions, lat, values["month"], values["hour"], values["audio_source"])
        out += weight * set_probabilities(probs, sets)
    return out


def oracle_scores(
    fractions: np.ndarray,
    lat: np.ndarray,
    month: np.ndarray,
    hour: np.ndarray,
    source: np.ndarray,
    classes: list[tuple[str, ...]],
    known: tuple[str, ...] = SOUND_METADATA,
) -> dict[str, np.ndarray]:
    """Oracle score matrices for a split used as both queries and gallery (row i matches column i).

    Args:
        fractions: ``[N, L]`` land-cover fractions of each place's hearing footprint.
        lat: ``[N]`` latitudes.
        month: ``[N]`` months 1..12.
        hour: ``[N]`` hours 0..23.
        source: ``[N]`` audio source indices.
        classes: N sound sets (class names or indices), one per clip.
        known: The metadata types the scorer may use (others are marginalised).

    Returns:
        ``{"i2a": [N, N], "a2i": [N, N]}``, higher is better.
    """
    sets, which = set_indices(classes)
    cond = conditional_set_probs(fractions, lat, month, hour, source, sets, known)  # [N places, U]
    marginal = cond.mean(0)  # P(S_u) over the split
    lik = cond[:, which]  # [query place i, clip j] = P(S_j | place_i)
    i2a = lik / np.maximum(marginal[which][None, :], 1e-300)
    a2i = lik.T  # [query clip q, image j] = P(S_q | place_j)
    return {"i2a": i2a, "a2i": np.ascontiguousarray(a2i)}


def caption_oracle_scores(
    base: dict[str, np.ndarray],
    classes: list[tuple[str, ...]] | list[tuple[int, ...]],
    named: Sequence[Collection[str]] | None,
    fractions: np.ndarray,
    month: np.ndarray,
    hour: np.ndarray,
    source: np.ndarray,
    caption_source: np.ndarray,
    keep: Collection[str],
) -> dict[str, np.ndarray]:
    """Oracle score matrices with the true match's caption added to each query.

    * I2A (image i + its caption, gallery clips j): the caption names the clip's exact sound set,
      so the clips with that set come first, ordered by the base score (they tie: the base score
      of clip j depends on its set only); every other clip scores -1.
    * A2I (clip j + its caption, gallery images i): the base score ``P(S_j | place_i, meta_i)``
      times the indicator that image i agrees with what the caption names and the image side can
      check: a named place must be image i's dominant land cover (always checkable: the image
      shows it); a named month, time of day or audio source must be image i's only when that
      metadata type is in ``keep``; the caption source must be image i's only when
      ``caption_source`` is in ``keep``.

    A named item the image side is not given is not used to sharpen the law (the caption's month
    could say which places fit the clip in that month), so in a world built with caption context
    and a condition that drops that item this is not an upper bound.

    Args:
        base: :func:`oracle_scores` of the split under the same metadata condition.
        classes: N sound sets, one per clip.
        named: Per sample, what its caption names among :data:`CAPTION_NAMED`; None for an index
            without the ``caption_named`` column (older worlds): then only the sound set and the
            caption source are used.
        fractions: ``[N, L]`` land-cover fractions (the named place is their argmax).
        month: ``[N]`` months 1..12.
        hour: ``[N]`` hours 0..23.
        source: ``[N]`` audio source indices.
        caption_source: ``[N]`` caption source indices.
        keep: Metadata types (``METADATA_TYPES`` names) the image side is given.

    Returns:
        ``{"i2a": [N, N], "a2i": [N, N]}``, higher is better.

    Raises:
        ValueError: On a named item outside :data:`CAPTION_NAMED` or inputs of different lengths.
    """
    n = base["a2i"].shape[0]
    if (named is not None and len(named) != n) or len(classes) != n:
        raise ValueError(f"need one sound set and caption entry per sample; got {len(classes)} sets for {n} samples")
    _, which = set_indices(classes)
    i2a = np.where(which[:, None] == which[None, :], base["i2a"], -1.0)
    fits = np.ones((n, n), dtype=bool)  # [query clip j, image i]
    if named is not None:
        unknown = {w for s in named for w in s} - set(CAPTION_NAMED)
        if unknown:
            raise ValueError(f"unknown caption_named items {sorted(unknown)}; expected {', '.join(CAPTION_NAMED)}")
        values = {
            "landcover": np.argmax(fractions, axis=1),
            "month": np.asarray(month),
            "time_of_day": np.array([time_of_day(int(h)) for h in hour]),
            "audio_source": np.asarray(source),
        }
        for what, needs in _CHECKED_BY.items():
            if needs is not None and needs not in keep:
                continue
            said = np.array([what in s for s in named], dtype=bool)
            v = values[what]
            fits &= ~said[:, None] | (v[:, None] == v[None, :])
    if "caption_source" in keep:
        cs = np.asarray(caption_source)
        fits &= cs[:, None] == cs[None, :]
    return {"i2a": i2a, "a2i": np.where(fits, base["a2i"], 0.0)}
