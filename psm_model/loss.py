"""PCME++ (closed-form probabilistic matching) and InfoNCE losses, and the tri-modal objective."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from psm_model.distance import csd

PAIRS: tuple[tuple[str, str], ...] = (("image", "audio"), ("image", "text"), ("audio", "text"))
"""Modality pairs of the tri-modal objective, in the order of ``LossConfig.weights``."""


def _check_batch(
    mu_p: torch.Tensor, logvar_p: torch.Tensor, mu_q: torch.Tensor, logvar_q: torch.Tensor
) -> None:
    for name, t in (("mu_p", mu_p), ("logvar_p", logvar_p), ("mu_q", mu_q), ("logvar_q", logvar_q)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (B, d) tensor, got {shape}")
    if mu_p.shape != logvar_p.shape or mu_q.shape != logvar_q.shape or mu_p.shape != mu_q.shape:
        raise ValueError(
            "PCME++ needs B matched pairs: mu_p, logvar_p, mu_q, logvar_q must all have the same (B, d) shape; "
            f"got {tuple(mu_p.shape)}, {tuple(logvar_p.shape)}, {tuple(mu_q.shape)}, {tuple(logvar_q.shape)}"
        )
    if mu_p.shape[0] < 1:
        raise ValueError("the batch is empty")


def alpha_at(progress: float, alpha: float, start: float = 0.0, ramp: float = 0.0) -> float:
    """The pseudo-positive weight at a point of training.

    ``alpha_at(t) = 0`` for ``t < start``, then rises linearly to ``alpha`` over ``ramp``, and
    stays there; ``ramp = 0`` makes it a step at ``start``.

    Args:
        progress: Share of training done, in [0, 1] (values outside are clipped).
        alpha: The full weight.
        start: Share of training with the term off.
        ramp: Share of training over which it rises.
    """
    t = min(max(float(progress), 0.0), 1.0)
    if t < start:
        return 0.0
    if ramp <= 0.0:
        return float(alpha)
    return float(alpha) * min(1.0, (t - start) / ramp)


def _pseudo_targets(logits: torch.Tensor) -> torch.Tensor:
    """Targets T_ij = 1 where logits_ij >= logits_ii (at least as close as the true match), else I_ij."""
    diag = logits.diagonal().unsqueeze(1)
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    return ((logits >= diag) | eye).to(logits.dtype)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) as PCME++'s VIB term: -0.5 * mean(1 + logvar - mu^2 - sigma^2)."""
    return -0.5 * torch.mean(1.0 + logvar - mu.pow(2) - logvar.exp())


class PCMEppLoss(nn.Module):
    """PCME++ closed-form probabilistic matching loss between B matched pairs.

    ``D = csd(mu_p, exp(logvar_p), mu_q, exp(logvar_q))``, ``logits = -a * D + b``;
    ``loss = 2 * match + alpha * (pseudo(logits) + pseudo(logits^T)) + beta * vib``, where ``match``
    is the mean BCE-with-logits against the identity, ``pseudo`` the same against targets that also
    count every pair at least as close as the true match, and ``vib = KL(p) + KL(q)``.

    Args:
        init_a: Initial value of the learnable scale a.
        init_b: Initial value of the learnable shift b.
        alpha: Weight of the pseudo-positive terms.
        beta: Weight of the VIB term.
    """

    def __init__(
        self, init_a: float = 5.0, init_b: float = 5.0, alpha: float = 0.1, beta: float = 1e-4
    ) -> None:
        super().__init__()
        if not (math.isfinite(init_a) and math.isfinite(init_b)):
            raise ValueError(f"init_a and init_b must be finite, got {init_a}, {init_b}")
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be non-negative, got {alpha}, {beta}")
        self.a = nn.Parameter(torch.tensor(float(init_a)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))
        self.alpha = float(alpha)
        self.beta = float(beta)

    def logits(
        self, mu_p: torch.Tensor, logvar_p: torch.Tensor, mu_q: torch.Tensor, logvar_q: torch.Tensor
    ) -> torch.Tensor:
        """Matching logits ``-a * CSD + b`` for every (p_i, q_j), shape (Bp, Bq)."""
        dist = csd(mu_p, logvar_p.exp(), mu_q, logvar_q.exp())
        return -self.a.to(dist.dtype) * dist + self.b.to(dist.dtype)

    def match_params(self) -> tuple[float, float]:
        """Return (a, b): the match probability of two embeddings is sigmoid(-a * CSD + b)."""
        return float(self.a.detach()), float(self.b.detach())

    def forward(
        self, mu_p: torch.Tensor, logvar_p: torch.Tensor, mu_q: torch.Tensor, logvar_q: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Compute the loss for B matched pairs (row i of p matches row i of q).

        Args:
            mu_p: (B, d) means of modality p.
            logvar_p: (B, d) log sigma^2 of modality p.
            mu_q: (B, d) means of modality q.
            logvar_q: (B, d) log sigma^2 of modality q.

        Returns:
            Dict with the scalar ``loss`` and its terms ``match``, ``pseudo_match`` (the sum of both
            directions) and ``vib``.

        Raises:
            ValueError: On shapes that are not B matched (B, d) pairs.
        """
        _check_batch(mu_p, logvar_p, mu_q, logvar_q)
        logits = self.logits(mu_p, logvar_p, mu_q, logvar_q)
        eye = torch.eye(logits.shape[0], dtype=logits.dtype, device=logits.device)
        match = F.binary_cross_entropy_with_logits(logits, eye)
        with torch.no_grad():
            targets = _pseudo_targets(logits)
            targets_t = _pseudo_targets(logits.T)
        pseudo = F.binary_cross_entropy_with_logits(
            logits, targets
        ) + F.binary_cross_entropy_with_logits(logits.T, targets_t)
        vib = gaussian_kl(mu_p, logvar_p) + gaussian_kl(mu_q, logvar_q)
        loss = 2.0 * match + self.alpha * pseudo + self.beta * vib
        return {"loss": loss, "match": match, "pseudo_match": pseudo, "vib": vib}


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE on cosine similarity with a learnable, capped logit scale (GeoCLAP baseline).

    Args:
        init_logit_scale: Initial logit scale (1 / temperature), 1 / 0.07 by default.
        max_logit_scale: The logit scale is clamped to at most this value (100).
    """

    def __init__(
        self, init_logit_scale: float = 1.0 / 0.07, max_logit_scale: float = 100.0
    ) -> None:
        super().__init__()
        if not 0 < init_logit_scale <= max_logit_scale:
            raise ValueError(
                f"need 0 < init_logit_scale <= max_logit_scale, got {init_logit_scale}, {max_logit_scale}"
            )
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_logit_scale = float(max_logit_scale)

    def logit_scale(self) -> torch.Tensor:
        """The current logit scale, exp(parameter) clamped to ``max_logit_scale``."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def match_params(self) -> tuple[float, float]:
        """Return (a, b) so that sigmoid(-a * CSD + b) ranks like the InfoNCE logits.

        For unit means and no variance, CSD = 2 - 2 cos, so ``s * cos = -(s / 2) * CSD + s`` with s
        the logit scale. The sigmoid of it orders pairs like the model but is not calibrated.
        """
        s = float(self.logit_scale().detach())
        return s / 2.0, s

    def forward(
        self,
        mu_p: torch.Tensor,
        logvar_p: torch.Tensor | None,
        mu_q: torch.Tensor,
        logvar_q: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the symmetric InfoNCE loss; log-variances are accepted and ignored.

        Args:
            mu_p: (B, d) embeddings of modality p (normalised here).
            logvar_p: Ignored (may be None); kept so both losses share one call signature.
            mu_q: (B, d) embeddings of modality q.
            logvar_q: Ignored (may be None).

        Returns:
            Dict with the scalar ``loss`` (mean of both directions), ``p_to_q``, ``q_to_p`` and the
            detached ``logit_scale``.

        Raises:
            ValueError: On shapes that are not B matched (B, d) pairs.
        """
        if not isinstance(mu_p, torch.Tensor) or not isinstance(mu_q, torch.Tensor):
            raise ValueError("mu_p and mu_q must be torch tensors")
        if mu_p.dim() != 2 or mu_p.shape != mu_q.shape or mu_p.shape[0] < 1:
            raise ValueError(
                f"mu_p and mu_q must be matched (B, d) tensors, got {tuple(mu_p.shape)}, {tuple(mu_q.shape)}"
            )
        p = F.normalize(mu_p, dim=-1)
        q = F.normalize(mu_q, dim=-1)
        scale = self.logit_scale().to(p.dtype)
        logits = scale * p @ q.T
        target = torch.arange(p.shape[0], device=p.device)
        p_to_q = F.cross_entropy(logits, target)
        q_to_p = F.cross_entropy(logits.T, target)
        loss = 0.5 * (p_to_q + q_to_p)
        return {"loss": loss, "p_to_q": p_to_q, "q_to_p": q_to_p, "logit_scale": scale.detach()}


Gaussian = tuple[torch.Tensor, torch.Tensor]


class TriModalLoss(nn.Module):
    """Weighted sum of the pair losses image-audio, image-text and audio-text.

    PCME++ shares one (a, b) across the three pairs; InfoNCE learns one temperature per pair.

    Args:
        kind: ``"pcmepp"`` or ``"infonce"``.
        weights: Weights of (image-audio, image-text, audio-text).
        init_a: PCME++ initial a.
        init_b: PCME++ initial b.
        alpha: PCME++ pseudo-positive weight (full value).
        alpha_start: Share of training before which alpha is 0 (see :func:`alpha_at`).
        alpha_ramp: Share of training over which alpha then rises to its full value.
        beta: PCME++ VIB weight.
        init_logit_scale: InfoNCE initial logit scale.
        max_logit_scale: InfoNCE logit scale cap.
    """

    def __init__(
        self,
        kind: str = "pcmepp",
        weights: tuple[float, float, float] = (0.5, 0.25, 0.25),
        *,
        init_a: float = 5.0,
        init_b: float = 5.0,
        alpha: float = 0.1,
        alpha_start: float = 0.0,
        alpha_ramp: float = 0.0,
        beta: float = 1e-4,
        init_logit_scale: float = 1.0 / 0.07,
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        self.alpha_schedule = (float(alpha), float(alpha_start), float(alpha_ramp))
        if kind not in ("pcmepp", "infonce"):
            raise ValueError(f"unknown loss {kind!r}; choose pcmepp or infonce")
        if len(weights) != 3 or min(weights) < 0:
            raise ValueError(f"weights must be 3 non-negative numbers, got {weights}")
        self.kind = kind
        self.weights = tuple(float(w) for w in weights)
        if kind == "pcmepp":
            self.pcme = PCMEppLoss(init_a, init_b, alpha, beta)
        else:
            self.infonce = nn.ModuleDict(
                {f"{p}_{q}": InfoNCELoss(init_logit_scale, max_logit_scale) for p, q in PAIRS}
            )

    def set_progress(self, progress: float) -> float:
        """Set PCME++'s pseudo-positive weight for the share of training done; returns it (0 for InfoNCE)."""
        if self.kind != "pcmepp":
            return 0.0
        self.pcme.alpha = alpha_at(progress, *self.alpha_schedule)
        return self.pcme.alpha

    def pair_loss(self, p: str, q: str) -> nn.Module:
        """The criterion used for the pair (p, q)."""
        return self.pcme if self.kind == "pcmepp" else self.infonce[f"{p}_{q}"]

    def match_params(self) -> tuple[float, float]:
        """(a, b) of the match probability sigmoid(-a * CSD + b); for InfoNCE, from the image-audio pair."""
        return self.pair_loss("image", "audio").match_params()

    def forward(
        self,
        image: Gaussian | None = None,
        audio: Gaussian | None = None,
        text: Gaussian | None = None,
    ) -> dict[str, torch.Tensor]:
        """Sum the weighted pair losses over the modalities given.

        Args:
            image: (mu, logvar) of the (metadata-fused) images, or None.
            audio: (mu, logvar) of the audio clips, or None.
            text: (mu, logvar) of the captions, or None.

        Returns:
            Dict with ``loss``, each pair's loss (``image_audio`` ...) and each pair's terms
            (``image_audio/match`` ...).

        Raises:
            ValueError: If fewer than two modalities are given.
        """
        given = {"image": image, "audio": audio, "text": text}
        out: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for weight, (p, q) in zip(self.weights, PAIRS, strict=True):
            if given[p] is None or given[q] is None:
                continue
            terms = self.pair_loss(p, q)(given[p][0], given[p][1], given[q][0], given[q][1])
            name = f"{p}_{q}"
            out[name] = terms["loss"]
            for key, value in terms.items():
                if key != "loss":
                    out[f"{name}/{key}"] = value
            total = weight * terms["loss"] if total is None else total + weight * terms["loss"]
        if total is None:
            raise ValueError("the tri-modal loss needs at least two of image, audio and text")
        out["loss"] = total
        return out
