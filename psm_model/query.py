"""Queries: encode a text, an audio clip or both as one Gaussian, and compose Gaussians.

:func:`encode_query` is the one query encoder: the ``psm query embed`` command, the workers and
the dashboard all call it. :func:`compose` is "add the text to the query" as the paper does at
inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
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


QUERY_KINDS: tuple[str, ...] = ("text", "audio", "audio+text")
"""What a query holds (the ``kind`` stored beside its Gaussian in ``psm.queries``)."""


class EncodedQuery(NamedTuple):
    """A query's Gaussian: ``kind`` (one of :data:`QUERY_KINDS`), unit-norm ``mu`` and ``var``.

    ``mu`` and ``var`` (sigma^2, not its log) are (d,) float32 arrays.
    """

    kind: str
    mu: np.ndarray
    var: np.ndarray


AudioQuery = str | Path | tuple[np.ndarray, int]
"""An audio query: a file (WAV, FLAC, OGG, MP3; any sample rate) or ``(mono samples, rate)``."""


def encode_query(
    model: Any,
    *,
    text: str | None = None,
    audio: AudioQuery | None = None,
    rule: str = DEFAULT_RULE,
    max_audio_seconds: float | None = None,
    min_audio_seconds: float | None = None,
) -> EncodedQuery:
    """Encode a text, an audio clip, or both (composed as in the paper) with a PSM model.

    With both, the raw audio and text means are composed by ``rule`` (see :func:`compose`);
    alone, each is the model's own unit-mean Gaussian.

    Args:
        model: A loaded ``psm_model`` model (``encode_text``, ``encode_audio``).
        text: The query text.
        audio: An audio file (the model resamples any rate), or ``(samples, sample_rate)`` of a
            clip already in memory (an upload).
        rule: How the text joins the audio when both are given; one of :data:`COMPOSE_RULES`.
        max_audio_seconds: The longest clip accepted (default
            :data:`psm_model.audio_io.MAX_AUDIO_SECONDS`, 10 minutes); a file's length is read
            from its header, so a long one is refused before it is decoded.
        min_audio_seconds: The shortest clip accepted (default
            :data:`psm_model.audio_io.MIN_AUDIO_SECONDS`, 0.5 s).

    Returns:
        (kind, mu, sigma^2) with mu unit-norm and sigma^2 = exp(log sigma^2), both (d,) float32.

    Raises:
        ValueError: When neither is given, the text is blank, the audio file is missing,
            unreadable, corrupt or empty, the clip is longer or shorter than the limits, or the
            samples or rate are not usable.
    """
    from psm_model.audio_io import (
        MAX_AUDIO_SECONDS,
        MIN_AUDIO_SECONDS,
        check_duration,
        check_sample_rate,
        check_waveform,
        load_audio,
    )

    longest = MAX_AUDIO_SECONDS if max_audio_seconds is None else float(max_audio_seconds)
    shortest = MIN_AUDIO_SECONDS if min_audio_seconds is None else float(min_audio_seconds)

    if text is not None and not text.strip():
        raise ValueError("the query text is empty")
    if text is None and audio is None:
        raise ValueError("give --text, --audio, or both")
    if audio is not None:
        if isinstance(audio, tuple):
            if len(audio) != 2:
                raise ValueError("in-memory audio is a (samples, sample_rate) pair")
            wave, rate = check_waveform(audio[0], "audio clip"), check_sample_rate(audio[1])
            check_duration(len(wave), rate, "the audio clip", max_seconds=longest, min_seconds=shortest)
        else:
            wave, rate = load_audio(audio, max_seconds=longest, min_seconds=shortest)
    both = text is not None and audio is not None
    with torch.no_grad():
        if audio is not None:
            mu_a, logvar_a = model.encode_audio([wave], rate, raw_mean=both)
        if text is not None:
            mu_t, logvar_t = model.encode_text([text], raw_mean=both)
        if both:
            mu, logvar = compose(mu_a, logvar_a, mu_t, logvar_t, rule)
            kind = "audio+text"
        elif audio is not None:
            mu, logvar, kind = mu_a, logvar_a, "audio"
        else:
            mu, logvar, kind = mu_t, logvar_t, "text"
    mu_np = mu.detach().cpu().numpy().astype(np.float32).reshape(-1)
    var_np = np.exp(logvar.detach().cpu().numpy().astype(np.float64)).astype(np.float32).reshape(-1)
    return EncodedQuery(kind, mu_np, var_np)
