"""Science checks of a model against the world's law: uncertainty, temporal fidelity and hour gain.

Each check compares what the model says with what the synthetic world's exact law
(:func:`psm_model.world.law.law`) or its Bayes oracle (:mod:`psm_model.bayes`) says:

* **Ambiguity and uncertainty** live in :mod:`psm_model.uncertainty`.
* **Spread of sigma^2.** The coefficient of variation of ``sum sigma^2`` over the tiles of a region
  at one fixed metadata setting: near 0 means the variance head ignores the image.
* **Temporal fidelity.** For one tile, sweep the hour (or the month) in its fused metadata, and
  compare the model's match probability ``sigmoid(-a * CSD + b)`` with a class text query against
  the law's probability of that class at the same place and time: Spearman's rho per (tile, class)
  across the sweep. Pairs whose true probability does not change along the sweep have no rho; they
  are skipped and counted.
* **Hour gain.** How much I2A R@10% rises from metadata condition ``none`` to ``hour``, for the
  model and for the oracle, and the share of the oracle's gain the model reaches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from scipy.stats import rankdata

from psm_model.evaluate import neg_csd
from psm_model.features import SplitData
from psm_model.fusion import MetadataBatch
from psm_model.metadata import (
    AUDIO_SOURCES,
    audio_source_index,
    caption_source_index,
    check_hour,
    check_month,
)
from psm_model.model import PSMModel
from psm_model.world.landcover import LANDCOVER_CLASSES
from psm_model.world.law import law, sound_index
from psm_model.world.sounds import CLASS_QUERIES

TEMPORAL_CLASSES: tuple[str, ...] = ("rooster", "birdsong", "insects", "traffic", "crowd")
"""Classes of the hour sweep: dawn, dawn chorus, evening, rush hours and daytime sounds."""
SEASONAL_CLASS = "insects"
"""The month sweep's class: the law scales insects with a monthly temperature (warm months)."""
SEASONAL_HOUR = 21
"""Hour of the month sweep: the insects' evening peak."""
QUERY_TEMPLATE = "The sound of {noun}."
"""Text query of a class, in the ``captioner_b`` caption style; ``{noun}`` is the class's noun phrase."""
HOURS: tuple[int, ...] = tuple(range(24))
MONTHS: tuple[int, ...] = tuple(range(1, 13))
SWEEPS: tuple[str, ...] = ("hour", "month")
FLAT_TOLERANCE = 1e-6
"""A series whose range is below this share of its mean magnitude counts as constant."""

Gaussian = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- rank statistics


def spearman(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Spearman's rho of two equally long series (average ranks for ties); NaN if either is constant.

    Raises:
        ValueError: If the series differ in length or hold fewer than two values.
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs two series of the same length, got {a.size} and {b.size}")
    return float(rowwise_spearman(a[None], b[None])[0])


def rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``x`` with the same row of ``y`` (``[R, T]`` -> ``[R]``).

    Ties get average ranks. A row where either series is constant has no rho: NaN.

    Raises:
        ValueError: If the shapes differ or a row holds fewer than two values.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"rowwise_spearman needs two [rows, T] arrays of one shape, got {a.shape} and {b.shape}")
    if a.shape[1] < 2:
        raise ValueError(f"a rank correlation needs at least 2 values per row, got {a.shape[1]}")
    ra = rankdata(a, axis=1) - (a.shape[1] + 1) / 2.0
    rb = rankdata(b, axis=1) - (b.shape[1] + 1) / 2.0
    num = (ra * rb).sum(1)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = num / den
    rho[den == 0] = np.nan
    return np.clip(rho, -1.0, 1.0)


def is_flat(series: np.ndarray, tolerance: float = FLAT_TOLERANCE) -> np.ndarray:
    """Per row of ``[..., T]``: whether the range is at most ``tolerance`` times the mean magnitude."""
    s = np.asarray(series, dtype=np.float64)
    spread = s.max(-1) - s.min(-1)
    return spread <= tolerance * np.maximum(np.abs(s).mean(-1), 1e-300)


def coefficient_of_variation(values: np.ndarray | Sequence[float]) -> float:
    """Standard deviation over mean (population std), as a fraction.

    Raises:
        ValueError: If there are no values or their mean is not positive.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("the coefficient of variation needs at least one value")
    mean = float(v.mean())
    if not mean > 0:
        raise ValueError(f"the coefficient of variation needs a positive mean, got {mean}")
    return float(v.std() / mean)


# ----------------------------------------------------------------------------- the model side


def sum_variance(logvar: torch.Tensor) -> np.ndarray:
    """``sum sigma^2`` per row of a ``(B, d)`` log-variance."""
    return logvar.double().exp().sum(1).cpu().numpy()


def uses_variance(model: PSMModel) -> bool:
    """Whether the model's distance includes the variances (PCME++); InfoNCE never trains them."""
    return model.config.loss == "pcmepp"


def class_phrase(name: str, template: str = QUERY_TEMPLATE) -> str:
    """The text query of a sound class: ``template`` with ``{noun}`` = the class's noun phrase.

    The noun phrase is the world's map query without its leading "sound of"
    (``rooster`` -> "a rooster crowing", so the default gives "The sound of a rooster crowing.").

    Raises:
        ValueError: On an unknown class or a template without ``{noun}``.
    """
    sound_index(name)
    if "{noun}" not in template:
        raise ValueError(f"the query template must contain {{noun}}, got {template!r}")
    return template.format(noun=CLASS_QUERIES[name].removeprefix("sound of "))


def match_probability(model: PSMModel, image: Gaussian, text: Gaussian) -> np.ndarray:
    """``sigmoid(-a * CSD + b)`` of every image row with every text row, ``[B, T]``.

    The means are normalised; (a, b) are :meth:`PSMModel.match_params`. For an InfoNCE model the
    variances are left out of the CSD, as in evaluation.
    """
    a, b = model.match_params()
    score = neg_csd((torch.nn.functional.normalize(image[0], dim=-1), image[1]), text, uses_variance(model))
    return expit(a * score + b)


def _column(value: Any, own: np.ndarray, check: Any) -> np.ndarray:
    if value is None:
        return np.asarray(own, dtype=np.int64)
    return np.full(own.shape[0], check(value), dtype=np.int64)


@torch.no_grad()
def fused_sum_variance(
    model: PSMModel,
    features: torch.Tensor,
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    month: int,
    hour: int,
    audio_source: str,
    caption_source: str = "captioner_b",
    batch_size: int = 512,
) -> np.ndarray:
    """``sum sigma^2`` of image features fused with their own lat/lon and one fixed time and source.

    Raises:
        ValueError: On an empty tile set or bad metadata.
    """
    n = int(features.shape[0])
    if n == 0:
        raise ValueError("no tiles: the spread of sigma^2 needs at least one tile")
    if len(lat) != n or len(lon) != n:
        raise ValueError(f"{n} tiles but {len(lat)} latitudes and {len(lon)} longitudes")
    was_training = model.training
    model.eval()
    try:
        out = []
        for a in range(0, n, batch_size):
            meta = MetadataBatch.from_values(
                lat=np.asarray(lat[a : a + batch_size], dtype=np.float64),
                lon=np.asarray(lon[a : a + batch_size], dtype=np.float64),
                month=month, hour=hour, audio_source=audio_source, caption_source=caption_source,
                batch_size=min(batch_size, n - a),
            )
            out.append(sum_variance(model.fuse_image(features[a : a + batch_size], meta)[1]))
    finally:
        model.train(was_training)
    return np.concatenate(out)


def variance_spread(sum_var: np.ndarray | Sequence[float], a: float | None = None) -> dict[str, float]:
    """Summary of ``sum sigma^2`` over a set of tiles: n, mean, std, min, max and CV in %.

    The CV depends on the level of sum sigma^2, and the match loss leaves that level free: adding c
    to every embedding's sum sigma^2 moves every logit ``-a * CSD + b`` by ``-2 a c``, which b takes
    back, so the level stays about where the log-variance bias started it. With the match scale
    ``a``, two measures that do not depend on the level are added: ``logit_p5_p95``, how far the
    variance term moves a tile's match logit between the 5th and 95th percentile tiles
    (``a * (p95 - p5)``), and ``odds_p5_p95``, the same as a factor on the match odds.
    """
    v = np.asarray(sum_var, dtype=np.float64)
    cv = coefficient_of_variation(v)
    out = {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
           "max": float(v.max()), "cv_percent": 100.0 * cv}
    if a is not None:
        p5, p95 = np.percentile(v, [5.0, 95.0])
        out["logit_p5_p95"] = float(a) * float(p95 - p5)
        out["odds_p5_p95"] = math.exp(out["logit_p5_p95"])
    return out


def true_probs(data: SplitData, index: np.ndarray | None = None) -> np.ndarray:
    """The law's class distribution ``[N, C]`` of each sample at its own place, month, hour and source."""
    if data.fractions is None:
        raise ValueError("this split has no land-cover fractions; the law needs a world dataset index")
    i = np.arange(len(data)) if index is None else np.asarray(index)
    return law(data.fractions[i], data.lat[i], data.month[i], data.hour[i], data.audio_source[i])


# ----------------------------------------------------------------------------- temporal sweeps


@dataclass
class Sweep:
    """Model match probabilities and true class probabilities along an hour or month sweep.

    Attributes:
        vary: ``hour`` or ``month``.
        values: The swept values, ``[V]``.
        classes: The class names, ``[C]``.
        phrases: The text query of each class.
        index: The split rows of the tiles, ``[N]``.
        model: ``[N, V, C]`` match probabilities ``sigmoid(-a * CSD + b)``.
        truth: ``[N, V, C]`` the law's class probabilities.
    """

    vary: str
    values: tuple[int, ...]
    classes: tuple[str, ...]
    phrases: tuple[str, ...]
    index: np.ndarray
    model: np.ndarray
    truth: np.ndarray


def _check_sweep(vary: str, values: Sequence[int]) -> tuple[int, ...]:
    if vary not in SWEEPS:
        raise ValueError(f"unknown sweep {vary!r}; choose one of {', '.join(SWEEPS)}")
    check = check_hour if vary == "hour" else check_month
    out = tuple(int(check(int(v))) for v in values)  # type: ignore[arg-type]
    if len(out) < 2:
        raise ValueError(f"a {vary} sweep needs at least 2 values, got {list(values)}")
    return out


@torch.no_grad()
def sweep(
    model: PSMModel,
    features: torch.Tensor,
    data: SplitData,
    index: np.ndarray | Sequence[int],
    classes: Sequence[str] = TEMPORAL_CLASSES,
    *,
    vary: str = "hour",
    values: Sequence[int] | None = None,
    month: int | None = None,
    hour: int | None = None,
    audio_source: str | None = "aporee",
    caption_source: str = "captioner_b",
    template: str = QUERY_TEMPLATE,
    phrases: Mapping[str, str] | None = None,
) -> Sweep:
    """Fuse tiles with each value of the swept metadata and score them against class text queries.

    Every metadata type is present: the tile's own lat/lon, the swept value, and for the other
    time type and the audio source either the fixed value given or (None) the sample's own.

    Args:
        model: The model.
        features: ``(len(data), d)`` pre-fusion image features of the split (one zoom).
        data: The split (it needs land-cover fractions).
        index: The split rows to sweep.
        classes: Sound class names.
        vary: ``hour`` (0..23) or ``month`` (1..12).
        values: The swept values; default every hour or every month.
        month: Fixed month for an hour sweep; None: each sample's own.
        hour: Fixed hour for a month sweep; None: each sample's own.
        audio_source: Fixed audio source name; None: each sample's own.
        caption_source: Caption source of the fused metadata.
        template: Query template (see :func:`class_phrase`).
        phrases: Explicit query text per class, overriding the template.

    Raises:
        ValueError: On an empty tile set, an unknown class, a value out of range or a split
            without land-cover fractions.
    """
    idx = np.asarray(index, dtype=np.int64).ravel()
    if idx.size == 0:
        raise ValueError("no tiles to sweep: pass at least one split row")
    if idx.min() < 0 or idx.max() >= len(data):
        raise ValueError(f"tile rows must be in 0..{len(data) - 1}")
    if data.fractions is None:
        raise ValueError("this split has no land-cover fractions; the law needs a world dataset index")
    if not classes:
        raise ValueError("no classes to sweep")
    cols = [sound_index(c) for c in classes]
    if values is None:
        values = HOURS if vary == "hour" else MONTHS
    vals = _check_sweep(vary, values)
    caption_source_index(caption_source)
    texts = tuple((phrases or {}).get(c) or class_phrase(c, template) for c in classes)
    fixed_month = _column(month, data.month[idx], check_month)
    fixed_hour = _column(hour, data.hour[idx], check_hour)
    src = _column(audio_source, data.audio_source[idx], audio_source_index)
    was_training = model.training
    model.eval()
    try:
        text = model.encode_text(list(texts))
        feats = features[torch.from_numpy(idx)]
        n, v, c = idx.size, len(vals), len(cols)
        prob = np.empty((n, v, c))
        truth = np.empty((n, v, c))
        for k, value in enumerate(vals):
            mo = np.full(n, value) if vary == "month" else fixed_month
            ho = np.full(n, value) if vary == "hour" else fixed_hour
            meta = MetadataBatch.from_values(
                lat=data.lat[idx], lon=data.lon[idx], month=mo.tolist(), hour=ho.tolist(),
                audio_source=[AUDIO_SOURCES[s] for s in src], caption_source=caption_source,
            )
            prob[:, k] = match_probability(model, model.fuse_image(feats, meta), text)
            truth[:, k] = law(data.fractions[idx], data.lat[idx], mo, ho, src)[:, cols]
    finally:
        model.train(was_training)
    return Sweep(vary, vals, tuple(classes), texts, idx, prob, truth)


def sweep_fidelity(model_prob: np.ndarray, truth: np.ndarray, classes: Sequence[str],
                   tolerance: float = FLAT_TOLERANCE) -> dict[str, Any]:
    """Spearman's rho across the sweep per (tile, class), with its median overall and per class.

    A pair whose true probability is flat along the sweep has no rho and is skipped (counted in
    ``skipped``); a pair where only the model is flat gets rho 0 (counted in ``model_flat``): a
    model that ignores the swept metadata should not look better by dropping out.

    Args:
        model_prob: ``[N, V, C]`` model values (any monotone score gives the same rho).
        truth: ``[N, V, C]`` true probabilities.
        classes: The C class names.
        tolerance: Relative range below which a series counts as flat (:func:`is_flat`).

    Returns:
        ``{"median", "mean", "per_class": {c: {"median", "mean", "n", "skipped", "model_flat"}},
        "pairs", "skipped", "model_flat", "rho": [N, C] with NaN for skipped pairs}``.

    Raises:
        ValueError: On shapes that disagree or an empty sweep.
    """
    m = np.asarray(model_prob, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if m.ndim != 3 or m.shape != t.shape:
        raise ValueError(f"model and truth must be [tiles, values, classes] of one shape, got {m.shape} and {t.shape}")
    n, v, c = m.shape
    if n == 0 or c == 0:
        raise ValueError("the sweep is empty: no tiles or no classes")
    if len(classes) != c:
        raise ValueError(f"{len(classes)} class names for {c} classes")
    mt = m.transpose(0, 2, 1).reshape(n * c, v)
    tt = t.transpose(0, 2, 1).reshape(n * c, v)
    flat_truth = is_flat(tt, tolerance)
    flat_model = is_flat(mt, tolerance) & ~flat_truth
    rho = rowwise_spearman(mt, tt)
    rho[flat_model] = 0.0
    rho[flat_truth] = np.nan
    rho = rho.reshape(n, c)
    flat_truth = flat_truth.reshape(n, c)
    flat_model = flat_model.reshape(n, c)
    per_class = {}
    for k, name in enumerate(classes):
        r = rho[:, k][~flat_truth[:, k]]
        per_class[name] = {
            "median": float(np.median(r)) if r.size else float("nan"),
            "mean": float(r.mean()) if r.size else float("nan"),
            "n": int(r.size),
            "skipped": int(flat_truth[:, k].sum()),
            "model_flat": int(flat_model[:, k].sum()),
        }
    valid = rho[~flat_truth]
    return {
        "median": float(np.median(valid)) if valid.size else float("nan"),
        "mean": float(valid.mean()) if valid.size else float("nan"),
        "per_class": per_class,
        "pairs": int(n * c),
        "skipped": int(flat_truth.sum()),
        "model_flat": int(flat_model.sum()),
        "rho": rho,
    }


def dominant_rows(data: SplitData, landcover: str = "cropland") -> np.ndarray:
    """Split rows whose hearing footprint is dominated (largest share) by a land-cover class."""
    if landcover not in LANDCOVER_CLASSES:
        raise ValueError(f"unknown land cover {landcover!r}; expected one of {', '.join(LANDCOVER_CLASSES)}")
    if data.fractions is None:
        raise ValueError("this split has no land-cover fractions; it needs a world dataset index")
    return np.flatnonzero(data.fractions.argmax(1) == LANDCOVER_CLASSES.index(landcover))


def contrast(s: Sweep, name: str, first: int, second: int) -> dict[str, float]:
    """Mean model probability and mean true probability of one class at two swept values, and ratios.

    Raises:
        ValueError: If the class or either value is not in the sweep.
    """
    if name not in s.classes:
        raise ValueError(f"class {name!r} is not in this sweep ({', '.join(s.classes)})")
    for v in (first, second):
        if v not in s.values:
            raise ValueError(f"{s.vary} {v} is not in this sweep ({list(s.values)})")
    k = s.classes.index(name)
    a, b = s.values.index(first), s.values.index(second)
    m1, m2 = float(s.model[:, a, k].mean()), float(s.model[:, b, k].mean())
    t1, t2 = float(s.truth[:, a, k].mean()), float(s.truth[:, b, k].mean())
    return {
        "tiles": int(s.index.size),
        "model_first": m1, "model_second": m2, "model_ratio": m1 / m2 if m2 > 0 else float("nan"),
        "true_first": t1, "true_second": t2, "true_ratio": t1 / t2 if t2 > 0 else float("nan"),
        "share_first_above": float((s.model[:, a, k] > s.model[:, b, k]).mean()),
    }
