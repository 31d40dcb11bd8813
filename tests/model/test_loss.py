"""PCME++, InfoNCE and the tri-modal loss against their formulas, computed independently in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psm_model.distance import csd
from psm_model.loss import InfoNCELoss, PCMEppLoss, TriModalLoss


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _bce(logits: np.ndarray, targets: np.ndarray) -> float:
    # -t log sigmoid(l) - (1 - t) log sigmoid(-l), written with softplus; mean over all entries.
    return float(np.mean(targets * _softplus(-logits) + (1 - targets) * _softplus(logits)))


def reference_pcmepp(
    mu_p, lv_p, mu_q, lv_q, a=5.0, b=5.0, alpha=0.1, beta=1e-4
) -> dict[str, float]:
    """The facts-page formula in numpy float64, one loop per entry (no shared code with psm_model)."""
    mu_p, lv_p, mu_q, lv_q = (np.asarray(x, dtype=np.float64) for x in (mu_p, lv_p, mu_q, lv_q))
    n = mu_p.shape[0]
    var_p, var_q = np.exp(lv_p), np.exp(lv_q)
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = np.sum((mu_p[i] - mu_q[j]) ** 2) + np.sum(np.abs(var_p[i] + var_q[j]))
    logits = -a * dist + b
    eye = np.eye(n)
    match = _bce(logits, eye)

    def pseudo(lg: np.ndarray) -> float:
        t = np.array(
            [[1.0 if (i == j or lg[i, j] >= lg[i, i]) else 0.0 for j in range(n)] for i in range(n)]
        )
        return _bce(lg, t)

    def kl(mu: np.ndarray, lv: np.ndarray) -> float:
        return float(-0.5 * np.mean(1 + lv - mu**2 - np.exp(lv)))

    ps = pseudo(logits) + pseudo(logits.T)
    vib = kl(mu_p, lv_p) + kl(mu_q, lv_q)
    return {
        "loss": 2 * match + alpha * ps + beta * vib,
        "match": match,
        "pseudo_match": ps,
        "vib": vib,
    }


def _gaussians(n: int, d: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mu_p = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    mu_q = torch.nn.functional.normalize(
        mu_p + 0.8 * torch.randn(n, d, generator=g, dtype=dtype), dim=1
    )
    lv_p = -4 + 0.5 * torch.randn(n, d, generator=g, dtype=dtype)
    lv_q = -4 + 0.5 * torch.randn(n, d, generator=g, dtype=dtype)
    return mu_p, lv_p, mu_q, lv_q


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_pcmepp_equals_formula(n):
    mu_p, lv_p, mu_q, lv_q = _gaussians(n, 8, seed=n)
    crit = PCMEppLoss(init_a=5.0, init_b=5.0, alpha=0.1, beta=1e-4)
    out = crit(mu_p, lv_p, mu_q, lv_q)
    ref = reference_pcmepp(mu_p.numpy(), lv_p.numpy(), mu_q.numpy(), lv_q.numpy())
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    for key, value in ref.items():
        assert abs(float(out[key].detach()) - value) < 1e-6, key


def test_pcmepp_pseudo_positive_ties():
    # Rows 0, 1, 2 of q are identical and p rows 0..2 too: D has exact ties, which count as pseudo-positives.
    mu_p, lv_p, mu_q, lv_q = _gaussians(6, 4, seed=3)
    mu_q[1] = mu_q[0]
    mu_q[2] = mu_q[0]
    lv_q[1] = lv_q[0]
    lv_q[2] = lv_q[0]
    mu_p[1] = mu_p[0]
    lv_p[1] = lv_p[0]
    crit = PCMEppLoss(init_a=3.0, init_b=2.0, alpha=0.5, beta=0.01)
    out = crit(mu_p, lv_p, mu_q, lv_q)
    ref = reference_pcmepp(
        mu_p.numpy(), lv_p.numpy(), mu_q.numpy(), lv_q.numpy(), a=3.0, b=2.0, alpha=0.5, beta=0.01
    )
    for key, value in ref.items():
        assert abs(float(out[key].detach()) - value) < 1e-6, key
    # The ties really are in play: row 0 of p has 3 entries at least as close as its match.
    logits = crit.logits(mu_p, lv_p, mu_q, lv_q)
    assert int((logits[0] >= logits[0, 0]).sum()) >= 3


def test_pcmepp_float32_close_to_float64():
    mu_p, lv_p, mu_q, lv_q = _gaussians(12, 16, seed=7)
    crit = PCMEppLoss()
    out64 = crit(mu_p, lv_p, mu_q, lv_q)["loss"]
    out32 = crit(*(t.float() for t in (mu_p, lv_p, mu_q, lv_q)))["loss"]
    assert out32.dtype == torch.float32
    assert abs(float(out32.detach()) - float(out64.detach())) < 1e-4


def test_pcmepp_gradients_reach_a_b_and_inputs():
    mu_p, lv_p, mu_q, lv_q = (t.float().requires_grad_() for t in _gaussians(5, 8, seed=1))
    crit = PCMEppLoss()
    crit(mu_p, lv_p, mu_q, lv_q)["loss"].backward()
    for t in (mu_p, lv_p, mu_q, lv_q, crit.a, crit.b):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_pcmepp_bad_arguments():
    mu = torch.zeros(4, 8)
    with pytest.raises(ValueError, match="same \\(B, d\\) shape"):
        PCMEppLoss()(mu, mu, torch.zeros(3, 8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="must be a \\(B, d\\) tensor"):
        PCMEppLoss()(torch.zeros(8), mu, mu, mu)
    with pytest.raises(ValueError, match="non-negative"):
        PCMEppLoss(alpha=-1.0)


def test_csd_matches_sql_formula_and_fast_path():
    mu_p, lv_p, mu_q, lv_q = _gaussians(7, 5, seed=2)
    mu_q = mu_q[:4]
    lv_q = lv_q[:4]
    var_p, var_q = lv_p.exp(), lv_q.exp()
    d = csd(mu_p, var_p, mu_q, var_q)
    assert d.shape == (7, 4) and d.dtype == torch.float64
    for i in range(7):
        for j in range(4):
            sql = float(((mu_p[i] - mu_q[j]) ** 2).sum() + (var_p[i] + var_q[j]).abs().sum())
            assert abs(float(d[i, j]) - sql) < 1e-12
    fast = csd(mu_p, var_p, mu_q, var_q, exact=False)
    assert torch.allclose(fast, d, atol=1e-12)
    # Unit means: CSD = 2 - 2 <mu_p, mu_q> + sum var_p + sum var_q (facts page).
    alt = 2 - 2 * mu_p @ mu_q.T + var_p.sum(1, keepdim=True) + var_q.sum(1)
    assert torch.allclose(d, alt, atol=1e-12)


def test_csd_bad_arguments():
    with pytest.raises(ValueError, match="non-negative"):
        csd(torch.zeros(2, 3), -torch.ones(2, 3), torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="embedding sizes differ"):
        csd(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="shape \\(B, d\\)"):
        csd(torch.zeros(3), torch.ones(3), torch.zeros(2, 3), torch.ones(2, 3))


def reference_infonce(p: np.ndarray, q: np.ndarray, scale: float) -> float:
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    logits = scale * p @ q.T

    def ce(lg: np.ndarray) -> float:
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        return float(np.mean(lse - np.diag(lg)))

    return 0.5 * (ce(logits) + ce(logits.T))


def test_infonce_equals_formula_and_caps_scale():
    mu_p, _, mu_q, _ = _gaussians(6, 8, seed=4)
    crit = InfoNCELoss()
    out = crit(mu_p, None, mu_q, None)
    assert (
        abs(float(out["loss"].detach()) - reference_infonce(mu_p.numpy(), mu_q.numpy(), 1 / 0.07))
        < 1e-6
    )
    assert abs(float(out["logit_scale"]) - 1 / 0.07) < 1e-4
    capped = InfoNCELoss(init_logit_scale=100.0)
    with torch.no_grad():
        capped.log_logit_scale.fill_(math.log(500.0))
    assert abs(float(capped.logit_scale().detach()) - 100.0) < 1e-4
    a, b = InfoNCELoss(init_logit_scale=10.0).match_params()
    assert abs(a - 5.0) < 1e-5 and abs(b - 10.0) < 1e-5


def test_trimodal_weights_and_shared_ab():
    img, aud, txt = (_gaussians(5, 8, seed=s)[:2] for s in (10, 11, 12))
    crit = TriModalLoss("pcmepp", (0.5, 0.25, 0.25))
    out = crit(image=img, audio=aud, text=txt)
    single = PCMEppLoss()
    expected = (
        0.5 * single(*img, *aud)["loss"]
        + 0.25 * single(*img, *txt)["loss"]
        + 0.25 * single(*aud, *txt)["loss"]
    )
    assert abs(float(out["loss"].detach()) - float(expected.detach())) < 1e-9
    assert sum(p.numel() for p in crit.parameters()) == 2  # one shared (a, b)
    assert set(out) >= {
        "image_audio",
        "image_text",
        "audio_text",
        "image_audio/match",
        "image_audio/vib",
    }
    only = crit(image=img, audio=aud)
    assert (
        abs(float(only["loss"].detach()) - 0.5 * float(single(*img, *aud)["loss"].detach())) < 1e-9
    )
    with pytest.raises(ValueError, match="at least two"):
        crit(image=img)
    infonce = TriModalLoss("infonce", (1.0, 1.0, 1.0))
    assert len(list(infonce.parameters())) == 3  # one temperature per pair
    assert torch.isfinite(infonce(image=img, audio=aud, text=txt)["loss"])
    with pytest.raises(ValueError, match="unknown loss"):
        TriModalLoss("triplet")


def test_alpha_schedule_follows_its_definition():
    from psm_model.loss import alpha_at

    # off before start, linear over the ramp, full after, clipped outside [0, 1]
    assert alpha_at(0.0, 0.1, start=0.4, ramp=0.2) == 0.0
    assert alpha_at(0.39, 0.1, start=0.4, ramp=0.2) == 0.0
    assert alpha_at(0.5, 0.1, start=0.4, ramp=0.2) == pytest.approx(0.05)
    assert alpha_at(0.6, 0.1, start=0.4, ramp=0.2) == pytest.approx(0.1)
    assert alpha_at(1.5, 0.1, start=0.4, ramp=0.2) == pytest.approx(0.1)
    assert alpha_at(-1.0, 0.1) == pytest.approx(0.1)  # no schedule: the facts-page constant
    assert alpha_at(0.3, 0.1, start=0.3) == pytest.approx(0.1)  # ramp 0: a step at start


def test_trimodal_set_progress_sets_the_pcme_alpha_and_changes_the_loss():
    from psm_model.loss import TriModalLoss

    crit = TriModalLoss("pcmepp", alpha=0.2, alpha_start=0.5, alpha_ramp=0.25)
    g = torch.Generator().manual_seed(1)
    p = (torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=-1), torch.full((8, 6), -3.0))
    q = (torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=-1), torch.full((8, 6), -3.0))
    assert crit.set_progress(0.1) == 0.0 and crit.pcme.alpha == 0.0
    off = crit(image=p, audio=q)
    assert crit.set_progress(0.625) == pytest.approx(0.1)
    assert crit.set_progress(0.9) == pytest.approx(0.2)
    on = crit(image=p, audio=q)
    pseudo = on["image_audio/pseudo_match"]
    assert float(on["loss"] - off["loss"]) == pytest.approx(0.5 * 0.2 * float(pseudo), rel=1e-5)
    assert TriModalLoss("infonce").set_progress(0.9) == 0.0


def test_alpha_schedule_shares_are_checked():
    from psm_model.config import preset_config

    with pytest.raises(ValueError, match="alpha_start and objective.alpha_ramp are shares"):
        preset_config("tiny", objective={"alpha_start": 1.5})
