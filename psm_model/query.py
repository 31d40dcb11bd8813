"""Query composition: "add the text to the query" as the paper does at inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

COMPOSE_RULES: tuple[str, ...] = ("raw", "unit", "precision")
"""How a text Gaussian is added to a query Gaussian (see :func:`compose`); ``raw`` is the paper's."""

DEFAULT_RULE = "unit"
"""The default rule. The facts page's ``raw`` lets the long raw image mean drown the text: on the
demo model, I2A R@10% with text is 0.72 with ``raw`` and 0.99 with ``unit`` (docs/model.md)."""


def compose(
    mu_a: torch.Tensor,
    logvar_a: torch.Tensor,
    mu_t: torch.Tensor,
    logvar_t: torch.Tensor,
    rule: str = DEFAULT_RULE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add a text embedding to a query embedding (audio + text, image + text, ...).

    Rules:

    * ``raw`` (the facts page): mean = normalise(mean_a + mean_t); log-variance = logvar_a +
      logvar_t. The published method adds the *raw* (pre-normalisation) means: get them with
      ``raw_mean=True`` from ``encode_audio`` / ``encode_text`` / ``fuse_image``. Unit means are
      also accepted and give the normalised bisector. A raw image mean is several times longer
      than a raw text mean, so the text moves the query little.
    * ``unit`` (the default): each mean is normalised first, then they are summed and
      normalised (the bisector whatever the raw norms); log-variances are summed as in ``raw``.
    * ``precision``: the product of the two Gaussians with unit means: per dimension the mean
      is the precision-weighted average ``(u_a / s2_a + u_t / s2_t) / (1 / s2_a + 1 / s2_t)``,
      then normalised, and the variance is ``1 / (1 / s2_a + 1 / s2_t)``.

    Args:
        mu_a: (B, d) or (d,) query means (raw or unit).
        logvar_a: Matching log sigma^2.
        mu_t: (B, d) or (d,) text means (raw or unit); a single row broadcasts over B.
        logvar_t: Matching log sigma^2.
        rule: One of :data:`COMPOSE_RULES`.

    Returns:
        (mu, logvar) of the composed query, mu L2-normalised.

    Raises:
        ValueError: On an unknown rule, shapes that do not match or broadcast, or means that
            cancel out.
    """
    if rule not in COMPOSE_RULES:
        raise ValueError(f"unknown compose rule {rule!r}; choose one of {', '.join(COMPOSE_RULES)}")
    tensors = {"mu_a": mu_a, "logvar_a": logvar_a, "mu_t": mu_t, "logvar_t": logvar_t}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.dim() not in (1, 2):
            raise ValueError(f"{name} must be a (B, d) or (d,) tensor")
    if mu_a.shape != logvar_a.shape or mu_t.shape != logvar_t.shape:
        raise ValueError("each mean needs a log-variance of the same shape")
    if mu_a.shape[-1] != mu_t.shape[-1]:
        raise ValueError(f"embedding sizes differ: {mu_a.shape[-1]} vs {mu_t.shape[-1]}")
    if rule != "raw":
        mu_a, mu_t = F.normalize(mu_a, dim=-1), F.normalize(mu_t, dim=-1)
    try:
        if rule == "precision":
            # weight of a = (1 / s2_a) / (1 / s2_a + 1 / s2_t) = sigmoid(logvar_t - logvar_a)
            w_a = torch.sigmoid(logvar_t - logvar_a)
            raw = w_a * mu_a + (1.0 - w_a) * mu_t
            logvar = -torch.logaddexp(-logvar_a, -logvar_t)
        else:
            raw = mu_a + mu_t
            logvar = logvar_a + logvar_t
    except RuntimeError as e:
        raise ValueError(
            f"query and text batches do not broadcast: {tuple(mu_a.shape)} vs {tuple(mu_t.shape)}"
        ) from e
    if bool((raw.norm(dim=-1) < 1e-12).any()):
        raise ValueError("the query and text means cancel out; the composed mean is undefined")
    return F.normalize(raw, dim=-1), logvar
