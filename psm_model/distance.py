"""Closed-form sampled distance (CSD) between diagonal Gaussian embeddings."""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 24


def _check_pair(mu: torch.Tensor, var: torch.Tensor, name: str) -> None:
    if not isinstance(mu, torch.Tensor) or not isinstance(var, torch.Tensor):
        raise ValueError(f"mu_{name} and var_{name} must be torch tensors")
    if mu.dim() != 2 or var.shape != mu.shape:
        raise ValueError(
            f"mu_{name} and var_{name} must both have shape (B, d); got {tuple(mu.shape)} and {tuple(var.shape)}"
        )


def csd(
    mu_p: torch.Tensor,
    var_p: torch.Tensor,
    mu_q: torch.Tensor,
    var_q: torch.Tensor,
    *,
    exact: bool = True,
) -> torch.Tensor:
    """Pairwise CSD matrix ``D_ij = ||mu_p_i - mu_q_j||^2 + ||var_p_i + var_q_j||_1``.

    This is paper Eq. 7 and the same number as the SQL function ``psm.csd``. Inputs are promoted to
    a common dtype, so float64 inputs give a float64 result.

    Args:
        mu_p: Means of the first set, shape (Bp, d).
        var_p: Variances sigma^2 (not log-variances) of the first set, shape (Bp, d).
        mu_q: Means of the second set, shape (Bq, d).
        var_q: Variances sigma^2 of the second set, shape (Bq, d).
        exact: If True, sum squared differences directly (chunked to bound memory); this keeps
            ties exact and matches SQL to rounding. If False, use the faster expansion
            ``|p|^2 + |q|^2 - 2 p.q`` (clamped at 0), for large galleries.

    Returns:
        The (Bp, Bq) distance matrix.

    Raises:
        ValueError: On shape mismatches or negative variances.
    """
    _check_pair(mu_p, var_p, "p")
    _check_pair(mu_q, var_q, "q")
    if mu_p.shape[1] != mu_q.shape[1]:
        raise ValueError(f"embedding sizes differ: {mu_p.shape[1]} vs {mu_q.shape[1]}")
    dtype = torch.promote_types(
        torch.promote_types(mu_p.dtype, var_p.dtype), torch.promote_types(mu_q.dtype, var_q.dtype)
    )
    mu_p, var_p, mu_q, var_q = (t.to(dtype) for t in (mu_p, var_p, mu_q, var_q))
    if bool((var_p < 0).any()) or bool((var_q < 0).any()):
        raise ValueError(
            "variances must be non-negative; pass sigma^2 = exp(logvar), not the log-variance"
        )
    var_term = var_p.sum(1, keepdim=True) + var_q.sum(1).unsqueeze(0)
    if not exact:
        sq = (
            (mu_p * mu_p).sum(1, keepdim=True)
            + (mu_q * mu_q).sum(1).unsqueeze(0)
            - 2.0 * mu_p @ mu_q.T
        )
        return sq.clamp_min(0.0) + var_term
    bq, d = mu_q.shape
    step = max(1, _CHUNK_ELEMENTS // max(1, bq * d))
    rows = [
        (mu_p[i : i + step, None, :] - mu_q[None, :, :]).pow(2).sum(-1)
        for i in range(0, mu_p.shape[0], step)
    ]
    sq = torch.cat(rows, 0) if rows else mu_p.new_zeros((0, bq))
    return sq + var_term
