"""Off-policy corrections and PPO's KL-penalty form against slow, obvious loops."""

from __future__ import annotations

import math

import pytest
import torch

from shoal.learner.losses import (
    adapt_kl_penalty_coef,
    behaviour_weights,
    kl_penalty_policy_loss,
    ppo_policy_loss,
)

LENGTHS = [3, 5, 1, 4]
T = 5


def _mask() -> torch.Tensor:
    return torch.tensor([[1.0] * n + [0.0] * (T - n) for n in LENGTHS], dtype=torch.float64)


def _rand(seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn((len(LENGTHS), T), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def test_decoupled_weights_match_a_loop():
    prox, mu, mask = _rand(0, 0.5) - 2, _rand(1, 0.5) - 2, _mask()
    w, stats = behaviour_weights(prox, mu, mask, "decoupled", cap=1.5)
    raws, truncated = [], 0
    for b, n in enumerate(LENGTHS):
        for t in range(T):
            if t >= n:
                assert w[b, t] == 0.0
                continue
            raw = math.exp(prox[b, t] - mu[b, t])
            raws.append(raw)
            truncated += raw > 1.5
            assert w[b, t].item() == pytest.approx(min(raw, 1.5))
    assert stats["learner/is_weight_mean"] == pytest.approx(sum(raws) / len(raws))
    assert stats["learner/is_weight_max"] == pytest.approx(max(raws))
    assert stats["learner/is_truncated_frac"] == pytest.approx(truncated / len(raws))


@pytest.mark.parametrize("correction", ["tis_sequence", "mask_sequence"])
def test_sequence_weights_match_a_loop(correction):
    prox, mu, mask, cap = _rand(2, 0.4) - 2, _rand(3, 0.4) - 2, _mask(), 1.3
    w, stats = behaviour_weights(prox, mu, mask, correction, cap=cap)
    out = 0
    for b, n in enumerate(LENGTHS):
        log_ratio = sum(prox[b, t].item() - mu[b, t].item() for t in range(n))
        if correction == "tis_sequence":
            raw = math.exp(log_ratio)
            want, out = min(raw, cap), out + (raw > cap)
        else:
            geo = math.exp(log_ratio / n)
            inside = 1 / cap <= geo <= cap
            want, out = (1.0 if inside else 0.0), out + (not inside)
        for t in range(T):
            assert w[b, t].item() == pytest.approx(want if t < n else 0.0)
    assert stats["learner/is_truncated_frac"] == pytest.approx(out / len(LENGTHS))


def test_no_correction_is_all_ones_and_unknown_names_fail():
    prox, mu, mask = _rand(4), _rand(5), _mask()
    for name in ("none", "behavior"):
        w, stats = behaviour_weights(prox, mu, mask, name, cap=2.0)
        assert torch.equal(w, torch.ones_like(mask)) and stats == {}
    with pytest.raises(ValueError, match="unknown off-policy correction"):
        behaviour_weights(prox, mu, mask, "vtrace", cap=2.0)


def test_on_policy_samples_get_weight_one():
    """Same policy sampled and trains: every correction is the identity."""
    lp, mask = _rand(6) - 2, _mask()
    for name in ("decoupled", "tis_sequence", "mask_sequence"):
        w, stats = behaviour_weights(lp, lp.clone(), mask, name, cap=2.0)
        assert torch.allclose(w, mask) and stats["learner/is_truncated_frac"] == 0.0


def test_weighted_clipped_surrogate_matches_a_loop():
    lp, old, adv, w, mask, eps = _rand(7, 0.3), _rand(8, 0.3), _rand(9), _rand(10).abs(), _mask(), 0.2
    loss, _, _ = ppo_policy_loss(lp, old, adv, mask, eps, w)
    total, n = 0.0, 0
    for b, length in enumerate(LENGTHS):
        for t in range(length):
            r = math.exp(lp[b, t] - old[b, t])
            a = adv[b, t].item()
            total += w[b, t].item() * max(-a * r, -a * min(max(r, 1 - eps), 1 + eps))
            n += 1
    assert loss.item() == pytest.approx(total / n)
    unweighted, _, _ = ppo_policy_loss(lp, old, adv, mask, eps)
    assert unweighted.item() == pytest.approx(ppo_policy_loss(lp, old, adv, mask, eps, torch.ones_like(mask))[0].item())


def test_weights_carry_no_gradient():
    lp = _rand(11, 0.3).requires_grad_(True)
    w = _rand(12).abs().requires_grad_(True)
    loss, _, _ = ppo_policy_loss(lp, _rand(13, 0.3), _rand(14), _mask(), 0.2, w)
    loss.backward()
    assert w.grad is None and lp.grad is not None


def test_kl_penalty_loss_matches_a_loop():
    lp, old, adv, mask, beta = _rand(15, 0.3), _rand(16, 0.3), _rand(17), _mask(), 0.7
    loss, kl = kl_penalty_policy_loss(lp, old, adv, mask, beta)
    sur, kls, n = 0.0, 0.0, 0
    for b, length in enumerate(LENGTHS):
        for t in range(length):
            r = math.exp(lp[b, t] - old[b, t])  # pi_theta / pi_old
            sur += -adv[b, t].item() * r
            kls += (r - 1) - math.log(
                r
            )  # k3 of KL(pi_old || pi_theta) on pi_old samples: rho - 1 - log rho, rho = theta/old
            n += 1
    assert kl.item() == pytest.approx(kls / n)
    assert loss.item() == pytest.approx(sur / n + beta * kls / n)


def test_kl_penalty_coef_adapts_outside_its_band():
    # Schulman et al. 2017: d < target/1.5 -> beta/2; d > target*1.5 -> beta*2; else unchanged
    assert adapt_kl_penalty_coef(1.0, 0.005, 0.01) == 0.5
    assert adapt_kl_penalty_coef(1.0, 0.02, 0.01) == 2.0
    assert adapt_kl_penalty_coef(1.0, 0.012, 0.01) == 1.0
    assert adapt_kl_penalty_coef(1.0, 0.01 / 1.5, 0.01) == 1.0
