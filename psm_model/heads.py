"""Mean and log-variance heads that turn a modality's features into a diagonal Gaussian."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class GaussianHead(nn.Module):
    """Two Linear -> GELU -> Linear heads: the mean (L2-normalised) and log sigma^2.

    Every bias of the log-variance head starts at ``logvar_bias_init`` (-4), so sigma^2 starts near
    exp(-4) and the variance term does not swamp the loss early on.

    Args:
        in_dim: Width of the input features.
        embed_dim: Embedding size d.
        hidden: Hidden width of both heads (None: embed_dim).
        logvar_bias_init: Initial value of every log-variance head bias.
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
        self.mean = _mlp(in_dim, hidden, embed_dim)
        self.constant_logvar = float(logvar_bias_init)
        self.logvar = None if deterministic else _mlp(in_dim, hidden, embed_dim)
        if self.logvar is not None:
            for layer in self.logvar:
                if isinstance(layer, nn.Linear):
                    nn.init.constant_(layer.bias, logvar_bias_init)

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
