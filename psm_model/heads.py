"""Mean and log-variance heads that turn a modality's features into a diagonal Gaussian."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualHead(nn.Module):
    """A direct Linear map plus a Linear -> GELU -> Linear branch added to it.

    Only the direct layer's bias is set (``bias_init``); its weights are Xavier-uniform. The
    branch keeps PyTorch's default initialisation, so its GELU sits in its working range and the
    output depends on the input from the first step.

    Args:
        in_dim: Width of the input features.
        out_dim: Output width.
        hidden: Hidden width of the branch.
        bias_init: Initial bias of the direct layer (None: PyTorch's default).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, bias_init: float | None = None) -> None:
        super().__init__()
        self.direct = nn.Linear(in_dim, out_dim)
        self.branch = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        if bias_init is not None:
            nn.init.xavier_uniform_(self.direct.weight)
            nn.init.constant_(self.direct.bias, bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (..., in_dim) to (..., out_dim)."""
        return self.direct(x) + self.branch(x)


class GaussianHead(nn.Module):
    """Two residual heads: the mean (L2-normalised) and log sigma^2.

    The log-variance head's direct bias starts at ``logvar_bias_init`` (-4), so sigma^2 starts near
    exp(-4) and the variance term does not swamp the loss early on. Only that bias: a hidden layer
    biased to -4 would put its GELU in the flat region, where sigma^2 cannot depend on the input.

    Args:
        in_dim: Width of the input features.
        embed_dim: Embedding size d.
        hidden: Hidden width of both heads' branches (None: embed_dim).
        logvar_bias_init: Initial bias of the log-variance head's direct layer.
        deterministic: No log-variance head: log sigma^2 is the constant ``logvar_bias_init`` in
            every dimension (InfoNCE models). CSD then ranks exactly like cosine similarity.
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int,
        hidden: int | None = None,
        logvar_bias_init: float = -4.0,
        deterministic: bool = False,
    ) -> None:
        super().__init__()
        hidden = hidden or embed_dim
        self.mean = ResidualHead(in_dim, embed_dim, hidden)
        self.constant_logvar = float(logvar_bias_init)
        self.logvar = None if deterministic else ResidualHead(in_dim, embed_dim, hidden, logvar_bias_init)

    def forward(
        self, features: torch.Tensor, raw_mean: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map (B, in_dim) features to (mu, logvar), each (B, d).

        Args:
            features: Input features.
            raw_mean: Return the mean before L2 normalisation (used to compose queries).

        Returns:
            The mean (unit norm unless ``raw_mean``) and log sigma^2.
        """
        mu = self.mean(features)
        if not raw_mean:
            mu = F.normalize(mu, dim=-1)
        if self.logvar is None:
            return mu, torch.full_like(mu, self.constant_logvar)
        return mu, self.logvar(features)
