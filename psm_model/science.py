"""The whole science report of a model on a world split: :mod:`psm_model.fidelity`'s checks together.

``science_report`` runs the uncertainty, spread and temporal checks and the hour gain, and returns
JSON-able numbers (``bench/science.py`` prints and stores them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psm_model.evaluate import EvalResult
from psm_model.features import SplitData
from psm_model.fidelity import (
    QUERY_TEMPLATE,
    SEASONAL_CLASS,
    SEASONAL_HOUR,
    TEMPORAL_CLASSES,
    contrast,
    dominant_rows,
    fused_sum_variance,
    sum_variance,
    sweep,
    sweep_fidelity,
    true_probs,
    uses_variance,
    variance_spread,
)
from psm_model.metadata import METADATA_TYPES
from psm_model.model import PSMModel
from psm_model.uncertainty import uncertainty_correlations

# ----------------------------------------------------------------------------- hour gain


def metadata_gain(result: EvalResult, condition: str = "hour", base: str = "none", *, direction: str = "i2a",
                  zoom: int = 1) -> dict[str, float]:
    """R@10% gain of a metadata condition over a base condition, for the model and the oracle.

    Args:
        result: An evaluation holding model and oracle rows (no text) for both conditions.
        condition: The condition whose gain is measured (e.g. ``hour``).
        base: The condition it is measured against (e.g. ``none``).
        direction: ``i2a`` or ``a2i``.
        zoom: The zoom of the model rows.

    Returns:
        R@10% of each, the gains and ``ratio`` = model gain / oracle gain (NaN if the oracle gains
        nothing).

    Raises:
        KeyError: If the evaluation lacks one of the rows.
    """
    r = {
        (s, m): float(result.get(s, direction, zoom, False, m)["r_at_10"])
        for s in ("model", "oracle") for m in (base, condition)
    }
    gm = r["model", condition] - r["model", base]
    go = r["oracle", condition] - r["oracle", base]
    return {
        f"model_{base}": r["model", base], f"model_{condition}": r["model", condition], "model_gain": gm,
        f"oracle_{base}": r["oracle", base], f"oracle_{condition}": r["oracle", condition], "oracle_gain": go,
        "ratio": gm / go if go != 0 else float("nan"),
    }


# ----------------------------------------------------------------------------- sampling


def pick_rows(n: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct rows of ``0..n-1`` drawn with a fixed seed, sorted (all rows if fewer).

    Raises:
        ValueError: If ``count`` is not positive or there are no rows.
    """
    if count < 1:
        raise ValueError(f"the number of tiles must be >= 1, got {count}")
    if n < 1:
        raise ValueError("no tiles: the split is empty")
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))



# ----------------------------------------------------------------------------- the whole report


@torch.no_grad()
def science_report(
    model: PSMModel,
    data: SplitData,
    *,
    tiles: int = 300,
    seed: int = 0,
    zoom: int = 1,
    classes: Sequence[str] = TEMPORAL_CLASSES,
    seasonal_class: str = SEASONAL_CLASS,
    seasonal_hour: int = SEASONAL_HOUR,
    audio_source: str | None = "aporee",
    caption_source: str = "captioner_b",
    template: str = QUERY_TEMPLATE,
    spread_month: int = 5,
    spread_hour: int = 6,
    farmland: str = "cropland",
    contrast_hours: tuple[int, int] = (6, 18),
    hour_gain: bool = True,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    crowding_batch: int = 64,
) -> dict[str, Any]:
    """Every check of this module on one split (see the module docstring), as JSON-able numbers.

    Args:
        model: The model.
        data: A world split with land-cover fractions (the test split: queries = gallery).
        tiles: Tiles of the temporal sweeps, drawn with ``seed``.
        seed: Seed of that draw.
        zoom: Zoom of the image side.
        classes: Classes of the hour sweep.
        seasonal_class: Class of the month sweep.
        seasonal_hour: Fixed hour of the month sweep.
        audio_source: Fixed audio source of the sweeps (None: each sample's own).
        caption_source: Caption source fused into the sweeps and the spread.
        template: Text query template (:func:`class_phrase`).
        spread_month: Month of the sigma^2 spread.
        spread_hour: Hour of the sigma^2 spread.
        farmland: Land cover of the contrast tiles (those it dominates).
        contrast_hours: The two hours of the rooster contrast.
        hour_gain: Also evaluate R@10% under ``none`` and ``hour`` (model and oracle).
        cache_dir: Where oracle matrices are cached.
        batch_size: Encoding batch size.
        crowding_batch: The training batch size that :func:`psm_model.uncertainty.crowding` assumes
            (the demo preset's 64).

    Returns:
        ``uncertainty``, ``spread``, ``hourly``, ``seasonal``, ``contrast`` and ``hour_gain``
        sections, plus ``arrays`` (per-tile rho and sum sigma^2, numpy) for whoever wants them.
    """
    from psm_model.bayes import SOUND_METADATA
    from psm_model.evaluate import compute_oracle, embed_split, evaluate, fused_images, neg_csd

    t0 = time.perf_counter()
    cache = Path(cache_dir) if cache_dir is not None else None
    emb = embed_split(model, data, (zoom,), batch_size)
    feats = emb.image_features[int(zoom)]
    image = fused_images(model, feats, data, METADATA_TYPES)
    image_var = sum_variance(image[1])
    audio_var = sum_variance(emb.audio[1])
    variance = uses_variance(model)
    model_scores = neg_csd((torch.nn.functional.normalize(image[0], dim=-1), image[1]), emb.audio, variance)
    match = (*model.match_params(), crowding_batch) if variance else None
    oracle = compute_oracle(data, SOUND_METADATA, cache)
    out: dict[str, Any] = {"split": data.name, "n": len(data), "zoom": int(zoom), "score":
                           "-csd" if uses_variance(model) else "-csd without variances (cosine)"}
    out["uncertainty"] = uncertainty_correlations(image_var, audio_var, oracle, true_probs(data),
                                                  model_scores, match)
    split_var = fused_sum_variance(model, feats, data.lat, data.lon, month=spread_month, hour=spread_hour,
                                   audio_source=audio_source or "aporee", caption_source=caption_source)
    out["spread"] = {"month": spread_month, "hour": spread_hour, "audio_source": audio_source or "aporee",
                     "split": variance_spread(split_var, model.match_params()[0] if variance else None)}
    rows = pick_rows(len(data), tiles, seed)
    common: dict[str, Any] = {"audio_source": audio_source, "caption_source": caption_source, "template": template}
    hourly = sweep(model, feats, data, rows, classes, vary="hour", **common)
    hf = sweep_fidelity(hourly.model, hourly.truth, hourly.classes)
    out["hourly"] = {"tiles": int(rows.size), "phrases": dict(zip(hourly.classes, hourly.phrases, strict=True)),
                     **{k: v for k, v in hf.items() if k != "rho"}}
    seasonal = sweep(model, feats, data, rows, (seasonal_class,), vary="month", hour=seasonal_hour, **common)
    sf = sweep_fidelity(seasonal.model, seasonal.truth, seasonal.classes)
    out["seasonal"] = {"tiles": int(rows.size), "class": seasonal_class, "hour": seasonal_hour,
                       **{k: v for k, v in sf.items() if k != "rho"}}
    farm = dominant_rows(data, farmland)
    if farm.size:
        pair = sweep(model, feats, data, farm, ("rooster",), vary="hour", values=contrast_hours, **common)
        out["contrast"] = {"landcover": farmland, "class": "rooster", "hours": list(contrast_hours),
                           **contrast(pair, "rooster", *contrast_hours)}
    else:
        out["contrast"] = {"landcover": farmland, "class": "rooster", "hours": list(contrast_hours), "tiles": 0}
    if hour_gain:
        res = evaluate(model, data, zooms=(zoom,), text=(False,), metadata=("none", "hour"), cache_dir=cache,
                       batch_size=batch_size)
        out["hour_gain"] = metadata_gain(res, "hour", "none", zoom=zoom)
    out["seconds"] = time.perf_counter() - t0
    out["arrays"] = {"image_sum_var": image_var, "audio_sum_var": audio_var, "hourly_rho": hf["rho"],
                     "seasonal_rho": sf["rho"], "sweep_rows": rows}
    return out
