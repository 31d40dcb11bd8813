"""The Gaussian heads: a live log-variance head whose sigma^2 depends on its input and learns ambiguity."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from psm_model.heads import GaussianHead, ResidualHead
from psm_model.loss import PCMEppLoss


def _var_sum(head: GaussianHead, x: torch.Tensor) -> torch.Tensor:
    return head(x)[1].exp().sum(-1)


def test_only_the_direct_logvar_bias_starts_at_minus_four():
    torch.manual_seed(0)
    head = GaussianHead(64, 32, logvar_bias_init=-4.0)
    assert head.logvar is not None
    assert torch.all(head.logvar.direct.bias == -4.0)
    # the branch keeps PyTorch's default init: small biases, so its GELU works in its curved range
    for layer in head.logvar.branch:
        if isinstance(layer, nn.Linear):
            assert layer.bias.abs().max() < 1.0
    # and the mean head is untouched by the log-variance setting
    assert head.mean.direct.bias.abs().max() < 1.0


def test_logvar_starts_near_minus_four_and_depends_on_the_input():
    torch.manual_seed(0)
    head = GaussianHead(64, 32)
    x = torch.randn(256, 64)
    with torch.no_grad():
        logvar = head(x)[1]
    assert abs(float(logvar.mean()) + 4.0) < 0.5
    with torch.no_grad():
        vs = _var_sum(head, x)
    cv = float(vs.std() / vs.mean())
    assert cv > 0.05, f"sum sigma^2 hardly depends on the input at initialisation (CV {cv:.4f})"
    # the hidden units of the branch are alive: most GELUs see inputs where their slope is not flat
    pre = head.logvar.branch[0](x)
    slope = torch.autograd.functional.jacobian(lambda t: nn.functional.gelu(t).sum(), pre[:8]).abs()
    assert float((slope > 0.05).float().mean()) > 0.5


def test_pcmepp_teaches_the_variance_head_which_inputs_are_ambiguous():
    """One input paired with four different targets (ambiguous) must end with a larger sigma^2."""
    torch.manual_seed(0)
    n_unique, n_amb, k, d_in, d = 24, 4, 4, 32, 16
    unique_x = torch.randn(n_unique, d_in)
    amb_x = torch.randn(n_amb, d_in)
    p_in = torch.cat([unique_x, amb_x.repeat_interleave(k, 0)])  # each ambiguous input 4 times
    q_in = torch.randn(p_in.shape[0], d_in)  # every pair has its own target
    hp, hq = GaussianHead(d_in, d), GaussianHead(d_in, d)
    crit = PCMEppLoss(init_a=5.0, init_b=5.0, alpha=0.0, beta=1e-4)
    # the optimiser of training (TrainSettings): AdamW, betas (0.9, 0.98), eps 1e-6, weight decay 0.2
    opt = torch.optim.AdamW(
        [*hp.parameters(), *hq.parameters(), *crit.parameters()],
        lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2,
    )
    for _ in range(300):
        loss = crit(*hp(p_in), *hq(q_in))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        v_unique = _var_sum(hp, unique_x).mean()
        v_amb = _var_sum(hp, amb_x).mean()
    assert float(v_amb) > 1.5 * float(v_unique), (float(v_amb), float(v_unique))


def test_residual_head_is_a_linear_map_plus_its_branch():
    torch.manual_seed(0)
    h = ResidualHead(8, 4, 16, bias_init=-2.0)
    x = torch.randn(5, 8)
    expected = x @ h.direct.weight.T + h.direct.bias + h.branch(x)
    assert torch.allclose(h(x), expected, atol=1e-6)
    bound = math.sqrt(6.0 / (8 + 4))  # Xavier-uniform limit
    assert float(h.direct.weight.abs().max()) <= bound + 1e-6


@pytest.mark.parametrize("deterministic", [True, False])
def test_head_shapes(deterministic):
    head = GaussianHead(10, 6, deterministic=deterministic)
    mu, logvar = head(torch.randn(3, 10))
    assert mu.shape == logvar.shape == (3, 6)
    assert torch.allclose(mu.norm(dim=-1), torch.ones(3), atol=1e-5)
