"""Uncertainty against ambiguity: what the oracle says is ambiguous, and what sigma^2 tracks.

* **Ambiguity** (:func:`ambiguity`): the share of the gallery that the oracle (all metadata known)
  scores at least as high as a query's true match, the match included (ties count against it), so it
  lies in ``[1/N, 1]``. :func:`expected_ambiguity` averages it over the matches the query's own law
  would draw.
* **Crowding** (:func:`crowding`): how many non-matching gallery items a training batch would give a
  match probability, with the query's own ``sum sigma^2`` taken out. PCME++'s match loss sets a
  query's ``sum sigma^2`` so that its row's match mass in a batch is 1, so ``sum sigma^2`` should
  follow crowding; whether crowding follows ambiguity is a property of the mean space.
* :func:`uncertainty_correlations` reports Spearman's rho between the model's ``sum sigma^2`` and
  each of these, and the entropy of the place's true class distribution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import expit

from psm_model.fidelity import spearman
from psm_model.metrics import rank_counts


def ambiguity(scores: np.ndarray) -> np.ndarray:
    """Per query: the share of the gallery scoring at least as high as its true match (row i, column i).

    Ties count against the true match and the match itself is counted, so a query whose match
    stands alone on top has ``1/N`` and one tied with the whole gallery has 1.
    """
    counts = rank_counts(scores)
    return counts.ranks("pessimistic") / float(counts.gallery)


def expected_ambiguity(scores: np.ndarray) -> np.ndarray:
    """Per query: its ambiguity averaged over the matches its own law would draw.

    :func:`ambiguity` depends on which clip the world happened to draw for the query; this asks
    how ambiguous a clip drawn from the query's own place would be. With I2A oracle scores (the
    likelihood ratio ``P(S_j | place_i) / P(S_j)``), reweighting the gallery by row i's scores
    turns the gallery's sound sets into draws from place i's law, so
    ``E_i = sum_j s_ij * a_ij / sum_j s_ij`` with ``a_ij`` the share of the gallery scoring at
    least ``s_ij`` in row i.

    Args:
        scores: ``[N, N]`` non-negative oracle likelihood ratios (queries x gallery).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty square matrix, got shape {s.shape}")
    if (s < 0).any():
        raise ValueError("expected ambiguity needs non-negative scores (oracle likelihood ratios)")
    n = s.shape[1]
    ordered = np.sort(s, axis=1)
    share = np.stack([n - np.searchsorted(ordered[i], s[i], side="left") for i in range(n)]) / n
    total = s.sum(axis=1)
    return np.where(total > 0, (s * share).sum(axis=1) / np.maximum(total, 1e-300), 1.0)


def crowding(scores: np.ndarray, query_sum_var: np.ndarray, a: float, b: float, batch_size: int) -> np.ndarray:
    """Per query: how many non-matching gallery items a training batch would give a match probability.

    ``scores`` are the model's ``-CSD`` (row i, column i the true match). The query's own
    ``sum sigma^2`` is first replaced by the mean over queries, so the number measures how
    crowded the query's neighbourhood is in the *mean* space, not its variance:

        crowding_i = (B - 1) / (N - 1) * sum_{j != i} sigmoid(a * (s_ij + V_i - mean V) + b)

    Without the pseudo-positive term, PCME++'s match loss pushes each query's ``sum sigma^2``
    until its row's expected match mass in a batch of ``B`` is 1; a query in a crowded
    neighbourhood therefore needs a large ``sum sigma^2``. Spearman's rho between the two tells
    whether the variance head does what its loss asks; rho between crowding and the oracle's
    ambiguity tells whether the mean space puts ambiguous places in crowded neighbourhoods.
    """
    s = np.asarray(scores, dtype=np.float64)
    v = np.asarray(query_sum_var, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or v.shape != (s.shape[0],):
        raise ValueError(f"crowding needs square scores and one variance per row, got {s.shape} and {v.shape}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    n = s.shape[0]
    p = expit(a * (s + (v - v.mean())[:, None]) + b)
    off = p.sum(1) - np.diag(p)
    return off * (batch_size - 1) / max(n - 1, 1)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of a ``[N, C]`` probability table."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"entropy needs a [N, classes] table, got shape {p.shape}")
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(1)


# ----------------------------------------------------------------------------- uncertainty vs ambiguity


def uncertainty_correlations(
    image_sum_var: np.ndarray,
    audio_sum_var: np.ndarray,
    oracle: Mapping[str, np.ndarray],
    probs: np.ndarray,
    model_scores: np.ndarray | None = None,
    match: tuple[float, float, int] | None = None,
) -> dict[str, Any]:
    """Spearman's rho of the model's ``sum sigma^2`` with the oracle's ambiguity and the true entropy.

    Args:
        image_sum_var: ``[N]`` sum sigma^2 of each fused image (all metadata).
        audio_sum_var: ``[N]`` sum sigma^2 of each clip.
        oracle: ``{"i2a": [N, N], "a2i": [N, N]}`` oracle scores, all metadata known.
        probs: ``[N, C]`` each sample's true class distribution.
        model_scores: ``[N, N]`` the model's I2A ``-CSD`` (all metadata); with ``match`` it adds
            the crowding checks.
        match: ``(a, b, batch_size)`` of training, for :func:`crowding`.

    Returns:
        ``image_vs_ambiguity``, ``image_vs_entropy``, ``audio_vs_ambiguity`` (A2I ambiguity of the
        clip as a query), ``audio_vs_entropy`` and the mean ambiguities; with model scores also
        ``image_vs_crowding``, ``crowding_vs_ambiguity``, ``crowding_vs_entropy`` and
        ``model_vs_oracle_ambiguity`` (the model's own I2A ambiguity against the oracle's).
    """
    n = len(image_sum_var)
    for name, arr in (("audio_sum_var", audio_sum_var), ("probs", probs),
                      ("oracle i2a", oracle["i2a"]), ("oracle a2i", oracle["a2i"])):
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} rows but there are {n} images")
    amb_i = ambiguity(oracle["i2a"])
    # the law-weighted ambiguity needs likelihood ratios (the oracle's I2A scores are)
    expected = expected_ambiguity(oracle["i2a"]) if np.min(oracle["i2a"]) >= 0 else None
    amb_a = ambiguity(oracle["a2i"])
    ent = entropy(probs)
    extra: dict[str, Any] = {}
    if model_scores is not None:
        if np.shape(model_scores) != (n, n):
            raise ValueError(f"model scores have shape {np.shape(model_scores)}, expected {(n, n)}")
        extra["model_vs_oracle_ambiguity"] = spearman(ambiguity(model_scores), amb_i)
        if match is not None:
            crowd = crowding(model_scores, image_sum_var, *match)
            extra.update(image_vs_crowding=spearman(image_sum_var, crowd),
                         crowding_vs_ambiguity=spearman(crowd, amb_i), crowding_vs_entropy=spearman(crowd, ent),
                         mean_crowding=float(crowd.mean()))
    return {
        "n": int(n),
        "image_vs_ambiguity": spearman(image_sum_var, amb_i),
        "image_vs_expected_ambiguity": None if expected is None else spearman(image_sum_var, expected),
        "image_vs_entropy": spearman(image_sum_var, ent),
        "audio_vs_ambiguity": spearman(audio_sum_var, amb_a),
        "audio_vs_entropy": spearman(audio_sum_var, ent),
        "mean_ambiguity_i2a": float(amb_i.mean()),
        "mean_ambiguity_a2i": float(amb_a.mean()),
        **extra,
    }
