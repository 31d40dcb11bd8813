"""Query composition: "add the text to the query" as the paper does at inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compose(
    mu_a: torch.Tensor, logvar_a: torch.Tensor, mu_t: torch.Tensor, logvar_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add a text embedding to a query embedding (audio + text, image + text, ...).

    mean = normalise(mean_a + mean_t); log-variance = logvar_a + logvar_t. The published method adds
    the *raw* (pre-normalisation) means: get them with ``raw_mean=True`` from ``encode_audio`` /
    ``encode_text`` / ``fuse_image``. Unit means are also accepted and give the normalised bisector,
    which equals the raw-mean result only when both raw norms are equal.

    Args:
        mu_a: (B, d) or (d,) query means (raw or unit).
        logvar_a: Matching log sigma^2.
        mu_t: (B, d) or (d,) text means (raw or unit); a single row broadcasts over B.
        logvar_t: Matching log sigma^2.

    Returns:
        (mu, logvar) of the composed query, mu L2-normalised.

    Raises:
        ValueError: On shapes that do not match or broadcast, or means that cancel out.
    """
    tensors = {"mu_a": mu_a, "logvar_a": logvar_a, "mu_t": mu_t, "logvar_t": logvar_t}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.dim() not in (1, 2):
            raise ValueError(f"{name} must be a (B, d) or (d,) tensor")
    if mu_a.shape != logvar_a.shape or mu_t.shape != logvar_t.shape:
        raise ValueError("each mean needs a log-variance of the same shape")
    if mu_a.shape[-1] != mu_t.shape[-1]:
        raise ValueError(f"embedding sizes differ: {mu_a.shape[-1]} vs {mu_t.shape[-1]}")
    try:
        raw = mu_a + mu_t
        logvar = logvar_a + logvar_t
    except RuntimeError as e:
        raise ValueError(
            f"query and text batches do not broadcast: {tuple(mu_a.shape)} vs {tuple(mu_t.shape)}"
        ) from e
    if bool((raw.norm(dim=-1) < 1e-12).any()):
        raise ValueError("the query and text means cancel out; the composed mean is undefined")
    return F.normalize(raw, dim=-1), logvar
