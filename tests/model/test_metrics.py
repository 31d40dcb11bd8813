"""Rank metrics against hand-computed rankings, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from psm_model.metrics import median_rank, rank_counts, recall_at_fraction, retrieval_metrics


def test_ranks_without_ties_match_hand_computation():
    # query 0: true score 0.9 is best -> rank 1; query 1: 0.2 beaten by 0.8 and 0.5 -> rank 3;
    # query 2: 0.4 beaten by 0.7 -> rank 2.
    s = np.array([[0.9, 0.1, 0.3], [0.8, 0.2, 0.5], [0.1, 0.7, 0.4]])
    c = rank_counts(s)
    assert c.ranks("optimistic").tolist() == [1.0, 3.0, 2.0]
    assert c.ranks("random").tolist() == [1.0, 3.0, 2.0]
    assert median_rank(c) == 2.0
    # N = 3: rank < 0.3 never holds; rank < 0.7 * 3 = 2.1 holds for ranks 1 and 2.
    assert recall_at_fraction(c, 0.1) == 0.0
    assert recall_at_fraction(c, 0.7) == pytest.approx(2 / 3)


def test_ties_under_each_rule():
    # 10 gallery items; query 0's true match ties with 3 others and 1 item is strictly better.
    s = np.zeros((2, 10))
    s[0] = [5, 9, 5, 5, 5, 1, 1, 1, 1, 1]
    s[1] = [0, 3, 2, 2, 2, 2, 2, 2, 2, 2]  # query 1: true 3 is the strict best
    c = rank_counts(s)
    assert c.better.tolist() == [1, 0] and c.tied.tolist() == [3, 0]
    assert c.ranks("optimistic").tolist() == [2.0, 1.0]
    assert c.ranks("pessimistic").tolist() == [5.0, 1.0]
    assert c.ranks("random").tolist() == [3.5, 1.0]  # mid-rank of 2..5
    # R@k with k = 0.3 * 10 = 3: ranks 2..5 equally likely, 1 of 4 is < 3.
    assert recall_at_fraction(c, 0.3, "random") == pytest.approx((0.25 + 1.0) / 2)
    assert recall_at_fraction(c, 0.3, "optimistic") == 1.0
    assert recall_at_fraction(c, 0.3, "pessimistic") == 0.5
    assert median_rank(c, "random") == pytest.approx((3.5 + 1.0) / 2)


def test_all_tied_gives_the_chance_level():
    s = np.ones((20, 20))
    m = retrieval_metrics(s)
    assert m["r_at_10"] == pytest.approx(1 / 20)  # ranks 1..20 equally likely, only rank 1 is < 0.1 * 20
    assert m["median_rank"] == pytest.approx(10.5)
    assert m["n"] == 20


def test_nan_scores_count_as_worst_and_targets_can_be_given():
    s = np.array([[np.nan, 1.0], [0.0, np.nan]])
    c = rank_counts(s, targets=np.array([1, 0]))
    assert c.ranks().tolist() == [1.0, 1.0]
    c2 = rank_counts(s)
    assert c2.ranks().tolist() == [2.0, 2.0]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="matrix"):
        rank_counts(np.zeros(3))
    with pytest.raises(ValueError, match="tie rule"):
        rank_counts(np.eye(3)).ranks("coin")
    with pytest.raises(ValueError, match="fraction"):
        recall_at_fraction(rank_counts(np.eye(3)), 0.0)
    with pytest.raises(ValueError, match="targets"):
        rank_counts(np.eye(3), targets=np.array([0, 1, 3]))
