"""Retrieval metrics: the rank of the true match, R@10% and median rank, with ties handled explicitly.

Conventions (paper / facts page): the whole split is both the queries and the gallery, and query i's
true match is gallery item i. Higher score = better match (the model uses -CSD). Ranks are 1-based.

Ties. A gallery item whose score equals the true match's score is *tied* with it. Three rules:

* ``"random"`` (default): ties are broken uniformly at random, and we report the *expected* value
  under that rule. A query with ``b`` strictly better items and ``t`` tied others has a rank that is
  uniform on ``{b+1, ..., b+t+1}``; its recall contribution is the exact probability that this rank
  is ``< k``, and its rank for the median is the mid-rank ``b + 1 + t / 2``.
* ``"optimistic"``: the true match wins every tie, rank ``b + 1``.
* ``"pessimistic"``: the true match loses every tie, rank ``b + t + 1``.

A NaN score is treated as the worst possible score (never better than anything).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TIE_RULES: tuple[str, ...] = ("random", "optimistic", "pessimistic")


@dataclass(frozen=True)
class RankCounts:
    """Per query: how many gallery items score strictly better than the true match, and how many tie.

    Attributes:
        better: (Q,) number of gallery items with a strictly higher score than the true match.
        tied: (Q,) number of *other* gallery items with exactly the true match's score.
        gallery: Gallery size N.
    """

    better: np.ndarray
    tied: np.ndarray
    gallery: int

    def ranks(self, ties: str = "random") -> np.ndarray:
        """1-based ranks under a tie rule (``random`` gives mid-ranks, possibly x.5)."""
        _check_ties(ties)
        b = self.better.astype(np.float64)
        t = self.tied.astype(np.float64)
        if ties == "optimistic":
            return b + 1.0
        if ties == "pessimistic":
            return b + t + 1.0
        return b + 1.0 + t / 2.0

    def hit_probability(self, k: float, ties: str = "random") -> np.ndarray:
        """Per query, the probability that the rank is strictly below ``k`` under a tie rule."""
        _check_ties(ties)
        if ties != "random":
            return (self.ranks(ties) < k).astype(np.float64)
        lo = self.better.astype(np.float64) + 1.0  # best possible rank
        count = self.tied.astype(np.float64) + 1.0  # number of equally likely ranks
        # ranks lo .. lo + count - 1; those < k number clip(ceil(k) - lo, 0, count)
        below = np.clip(np.ceil(k) - lo, 0.0, count)
        return below / count


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"unknown tie rule {ties!r}; choose one of {', '.join(TIE_RULES)}")


def rank_counts(scores: np.ndarray | torch.Tensor, targets: np.ndarray | None = None) -> RankCounts:
    """Count, per query, the gallery items scoring better than / equal to the true match.

    Args:
        scores: (Q, N) similarity matrix, higher is better (use ``-csd``). Float64 keeps exact ties.
        targets: (Q,) index of each query's true match in the gallery; default ``arange(Q)``
            (the paper's protocol, where Q = N).

    Returns:
        The counts.

    Raises:
        ValueError: On a non-2-D score matrix, an empty gallery or out-of-range targets.
    """
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"scores must be a (queries, gallery) matrix, got shape {s.shape}")
    q, n = s.shape
    if targets is None:
        if q > n:
            raise ValueError(f"{q} queries but only {n} gallery items; pass targets explicitly")
        targets = np.arange(q)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (q,) or (targets < 0).any() or (targets >= n).any():
        raise ValueError(f"targets must be ({q},) gallery indices in 0..{n - 1}")
    s = np.where(np.isnan(s), -np.inf, s)
    true = s[np.arange(q), targets][:, None]
    better = (s > true).sum(1)
    tied = (s == true).sum(1) - 1
    return RankCounts(better.astype(np.int64), tied.astype(np.int64), n)


def recall_at_fraction(counts: RankCounts, fraction: float = 0.1, ties: str = "random") -> float:
    """Share of queries whose rank is strictly below ``fraction * N`` (R@10% for 0.1).

    Under ``ties="random"`` this is the expected share when ties are broken at random.

    Raises:
        ValueError: On a fraction outside (0, 1] or an unknown tie rule.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if counts.better.size == 0:
        raise ValueError("no queries")
    return float(counts.hit_probability(fraction * counts.gallery, ties).mean())


def median_rank(counts: RankCounts, ties: str = "random") -> float:
    """Median of the 1-based ranks (mid-ranks under ``ties="random"``); numpy's median of an even count."""
    if counts.better.size == 0:
        raise ValueError("no queries")
    return float(np.median(counts.ranks(ties)))


def recall_curve(counts: RankCounts, fractions: np.ndarray, ties: str = "random") -> np.ndarray:
    """Recall at each gallery fraction k% (for the dashboard's recall-vs-k plot)."""
    return np.array([recall_at_fraction(counts, float(f), ties) for f in fractions])


def retrieval_metrics(
    scores: np.ndarray | torch.Tensor,
    targets: np.ndarray | None = None,
    ties: str = "random",
    fraction: float = 0.1,
) -> dict[str, float | int]:
    """R@10% and median rank of a score matrix.

    Returns:
        ``{"r_at_10": ..., "median_rank": ..., "n": queries}`` (``r_at_10`` uses ``fraction``).
    """
    counts = rank_counts(scores, targets)
    return {
        "r_at_10": recall_at_fraction(counts, fraction, ties),
        "median_rank": median_rank(counts, ties),
        "n": int(counts.better.size),
    }
