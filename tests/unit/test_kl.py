"""learner/kl.py against slow python-loop references and hand-computed controller sequences."""

from __future__ import annotations

import math

import pytest
import torch

from shoal.learner.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_penalised_rewards,
    make_kl_controller,
)
from shoal.services.config import RewardSection


def _logps(seed: int, shape=(3, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return -torch.rand(shape, generator=g, dtype=torch.float64) * 3, -torch.rand(
        shape, generator=g, dtype=torch.float64
    ) * 3


def _elementwise(f, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.tensor(
        [[f(a[i, j].item(), b[i, j].item()) for j in range(a.shape[1])] for i in range(a.shape[0])], dtype=torch.float64
    )


def test_estimators_match_scalar_formulas():
    logp, ref = _logps(0)
    torch.testing.assert_close(kl_k1(logp, ref), _elementwise(lambda p, q: p - q, logp, ref))
    k3 = _elementwise(lambda p, q: math.exp(q - p) - 1 - (q - p), logp, ref)
    torch.testing.assert_close(kl_k3(logp, ref), k3)
    assert (kl_k3(logp, ref) >= 0).all()
    torch.testing.assert_close(kl_k2(logp, ref), _elementwise(lambda p, q: 0.5 * (p - q) ** 2, logp, ref))


def test_estimators_are_zero_at_equal_policies():
    logp, _ = _logps(1)
    for f in (kl_k1, kl_k3):
        assert torch.equal(f(logp, logp), torch.zeros_like(logp))


def test_k1_and_k3_are_unbiased_for_exact_kl():
    """Expectations under pi of k1 and k3 equal the exact KL(pi || ref) of two categoricals."""
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    ref = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    exact = sum(p * math.log(p / q) for p, q in zip(pi.tolist(), ref.tolist()))
    for f in (kl_k1, kl_k3):
        per_token = f(pi.log().unsqueeze(0), ref.log().unsqueeze(0)).squeeze(0)
        assert (pi * per_token).sum().item() == pytest.approx(exact, rel=1e-12)


def _penalised_reference(logp, ref, seq_rewards, lengths, kl_coef):
    B, T = logp.shape
    out = [[0.0] * T for _ in range(B)]
    for b in range(B):
        for t in range(lengths[b]):
            out[b][t] = -kl_coef * (logp[b, t].item() - ref[b, t].item())
        out[b][lengths[b] - 1] += seq_rewards[b]
    return torch.tensor(out, dtype=torch.float64)


def test_penalised_rewards_place_sequence_reward_at_last_valid_token():
    logp, ref = _logps(2, (4, 6))
    lengths = [6, 1, 3, 4]
    mask = torch.tensor([[1.0] * n + [0.0] * (6 - n) for n in lengths], dtype=torch.float64)
    seq = [1.5, -2.0, 0.25, 7.0]
    got = kl_penalised_rewards(logp, ref, torch.tensor(seq, dtype=torch.float64), mask, kl_coef=0.1)
    torch.testing.assert_close(got, _penalised_reference(logp, ref, seq, lengths, 0.1))
    assert got[1, 1:].abs().sum() == 0  # padding carries nothing


def test_penalised_rewards_without_kl_are_sparse():
    logp, ref = _logps(3, (2, 4))
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    got = kl_penalised_rewards(logp, ref, torch.tensor([1.0, 2.0], dtype=torch.float64), mask, kl_coef=0.0)
    expected = torch.tensor([[0.0, 1.0, 0, 0], [0, 0, 0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(got, expected)


def test_penalised_rewards_reject_empty_rows_and_bad_shapes():
    logp, ref = _logps(4, (2, 3))
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        kl_penalised_rewards(
            logp, ref, torch.zeros(2, dtype=torch.float64), torch.tensor([[1.0, 0, 0], [0, 0, 0]]), 0.1
        )
    with pytest.raises(ValueError, match="seq_rewards shape"):
        kl_penalised_rewards(logp, ref, torch.zeros(3), torch.ones(2, 3), 0.1)


def test_fixed_controller_never_moves():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, 64)
    assert ctl.value == 0.05


def test_adaptive_controller_sequence_matches_hand_computation():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=2.0, horizon=100)
    # kl=6: error clipped to +0.2 -> 0.1 * (1 + 0.2 * 10/100) = 0.102
    # kl=1: error -0.5 clipped to -0.2 -> 0.102 * (1 - 0.2 * 20/100) = 0.09792
    # kl=2.2: error +0.1 -> 0.09792 * (1 + 0.1 * 50/100) = 0.102816
    # kl=2.0: error 0 -> unchanged
    expected = [0.102, 0.09792, 0.102816, 0.102816]
    for (kl, n), want in zip([(6.0, 10), (1.0, 20), (2.2, 50), (2.0, 7)], expected):
        ctl.update(kl, n)
        assert ctl.value == pytest.approx(want, rel=1e-12)


def test_adaptive_controller_rejects_nan_and_roundtrips_state():
    ctl = AdaptiveKLController(0.1, 1.0, 10)
    with pytest.raises(ValueError, match="nan"):
        ctl.update(float("nan"), 4)
    ctl.update(5.0, 4)
    other = AdaptiveKLController(1.0, 9.0, 99)
    other.load_state_dict(ctl.state_dict())
    assert other.state_dict() == ctl.state_dict()
    with pytest.raises(ValueError, match="'adaptive'"):
        FixedKLController(0.1).load_state_dict(ctl.state_dict())


def test_make_kl_controller_from_config():
    assert isinstance(make_kl_controller(RewardSection(kl_coef=0.02)), FixedKLController)
    ctl = make_kl_controller(RewardSection(kl_coef=0.02, adaptive_kl=True, kl_target=3.0, kl_horizon=500))
    assert isinstance(ctl, AdaptiveKLController)
    assert (ctl.value, ctl.target, ctl.horizon) == (0.02, 3.0, 500)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_term_gradients_k2_reverse_k3_forward(seed):
    """As a loss on a token a ~ pi, E_pi[grad k2(a)] is the gradient of KL(pi || ref) and
    E_pi[grad k3(a)] that of KL(ref || pi): the expectation is a loop over the vocabulary, each
    token's gradient taken on its own, against autograd of the exact divergences. k3 times the
    importance ratio pi / pi_old (TRL's default `use_bias_correction_kl`), at pi_old = pi, has
    k2's gradient: the reverse KL's."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)

    def expected_grad(estimator) -> torch.Tensor:
        total = torch.zeros(6, dtype=torch.float64)
        for a in range(6):
            logp = torch.log_softmax(theta, 0)
            (grad,) = torch.autograd.grad(estimator(logp[a], ref[a]), theta)
            total += logp[a].exp().item() * grad
        return total

    logp = torch.log_softmax(theta, 0)
    (reverse,) = torch.autograd.grad((logp.exp() * (logp - ref)).sum(), theta)
    logp = torch.log_softmax(theta, 0)
    (forward,) = torch.autograd.grad((ref.exp() * (ref - logp)).sum(), theta)
    torch.testing.assert_close(expected_grad(kl_k2), reverse)
    torch.testing.assert_close(expected_grad(kl_k3), forward)
    torch.testing.assert_close(expected_grad(lambda lp, r: torch.exp(lp - lp.detach()) * kl_k3(lp, r)), reverse)
    assert not torch.allclose(reverse, forward, atol=1e-3)
