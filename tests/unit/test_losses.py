"""learner/losses.py against slow, obvious python-loop references."""

from __future__ import annotations

import math

import pytest
import torch

from shoal.learner.losses import (
    entropy_from_logits,
    gae,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    token_logprobs,
    value_loss,
)

LENGTHS = [5, 1, 3, 4]
T = 5


def _mask(lengths=LENGTHS, width=T) -> torch.Tensor:
    return torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths], dtype=torch.float64)


SHAPE = (len(LENGTHS), T)


def _rand(seed: int, shape=SHAPE, scale=1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _valid(lengths=LENGTHS):
    return [(b, t) for b, n in enumerate(lengths) for t in range(n)]


def test_masked_mean_and_whiten_match_loops():
    x, mask = _rand(0), _mask()
    vals = [x[b, t].item() for b, t in _valid()]
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / len(vals)
    assert masked_mean(x, mask).item() == pytest.approx(mean, rel=1e-12)
    w = masked_whiten(x, mask)
    for b in range(len(LENGTHS)):
        for t in range(T):
            want = (x[b, t].item() - mean) / math.sqrt(var + 1e-8) if t < LENGTHS[b] else 0.0
            assert w[b, t].item() == pytest.approx(want, rel=1e-9, abs=1e-12)
    unshifted = masked_whiten(x, mask, shift_mean=False)
    assert unshifted[0, 0].item() == pytest.approx(w[0, 0].item() + mean, rel=1e-9)


def test_masked_mean_rejects_empty_mask():
    with pytest.raises(ValueError, match="all-zero mask"):
        masked_mean(torch.ones(2, 3), torch.zeros(2, 3))


def _gae_reference(rewards, values, lengths, gamma, lam):
    adv = [[0.0] * T for _ in lengths]
    ret = [[0.0] * T for _ in lengths]
    for b, n in enumerate(lengths):
        last = 0.0
        for t in reversed(range(n)):
            next_v = values[b][t + 1] if t + 1 < n else 0.0
            delta = rewards[b][t] + gamma * next_v - values[b][t]
            last = delta + gamma * lam * last
            adv[b][t] = last
            ret[b][t] = last + values[b][t]
    return torch.tensor(adv, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_loop_with_ragged_masks(gamma, lam):
    mask = _mask()
    rewards, values = _rand(1) * mask, _rand(2)  # values on padding are garbage: must be ignored
    adv, ret = gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = _gae_reference(rewards.tolist(), values.tolist(), LENGTHS, gamma, lam)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)


def test_gae_lambda_one_gives_discounted_return_minus_value():
    mask = _mask([3], 3)
    rewards = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.2, 0.4, 0.6]], dtype=torch.float64)
    adv, ret = gae(rewards, values, mask, 0.5, 1.0)
    torch.testing.assert_close(ret, torch.tensor([[0.25, 0.5, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(adv, ret - values)


def test_gae_rejects_non_prefix_mask():
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), mask, 1.0, 0.95)


def _policy_reference(logp, old, adv, lengths, clip):
    losses, clipped, kls = [], [], []
    for b, t in _valid(lengths):
        ratio = math.exp(logp[b][t] - old[b][t])
        surrogate = min(ratio * adv[b][t], min(max(ratio, 1 - clip), 1 + clip) * adv[b][t])
        losses.append(-surrogate)
        clipped.append(1.0 if abs(ratio - 1) > clip else 0.0)
        kls.append((ratio - 1) - math.log(ratio))
    n = len(losses)
    return sum(losses) / n, sum(clipped) / n, sum(kls) / n


def test_ppo_policy_loss_matches_loop_including_clip_fraction():
    mask = _mask()
    old = -_rand(3).abs()
    logp = old + _rand(4, scale=0.3)  # ratios spread across both sides of [0.8, 1.2]
    adv = _rand(5)
    loss, clip_fraction, approx_kl = ppo_policy_loss(logp, old, adv, mask, clip_coef=0.2)
    want_loss, want_cf, want_kl = _policy_reference(logp.tolist(), old.tolist(), adv.tolist(), LENGTHS, 0.2)
    assert loss.item() == pytest.approx(want_loss, rel=1e-12)
    assert clip_fraction.item() == pytest.approx(want_cf, rel=1e-12)
    assert 0.0 < want_cf < 1.0  # the data exercises both branches
    assert approx_kl.item() == pytest.approx(want_kl, rel=1e-12)


def test_ppo_policy_gradient_vanishes_when_clipped_in_the_advantage_direction():
    old = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.tensor([[0.5, -0.5]], dtype=torch.float64, requires_grad=True)  # ratios e^0.5, e^-0.5
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    loss, clip_fraction, _ = ppo_policy_loss(logp, old, adv, torch.ones(1, 2), 0.2)
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros_like(logp))
    assert clip_fraction.item() == 1.0


def _value_reference(values, old, returns, lengths, clip):
    losses = []
    for b, t in _valid(lengths):
        unclipped = (values[b][t] - returns[b][t]) ** 2
        if clip is None:
            losses.append(0.5 * unclipped)
            continue
        v_clip = old[b][t] + min(max(values[b][t] - old[b][t], -clip), clip)
        losses.append(0.5 * max(unclipped, (v_clip - returns[b][t]) ** 2))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("vf_clip", [None, 0.2, 0.05])
def test_value_loss_matches_loop(vf_clip):
    mask = _mask()
    old, values, returns = _rand(6), _rand(6) + _rand(7, scale=0.3), _rand(8)
    got = value_loss(values, old, returns, mask, vf_clip)
    want = _value_reference(values.tolist(), old.tolist(), returns.tolist(), LENGTHS, vf_clip)
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_value_clipping_changes_the_loss():
    mask = _mask()
    old, values, returns = _rand(6), _rand(6) + _rand(7, scale=0.3), _rand(8)
    assert value_loss(values, old, returns, mask, 0.05).item() != pytest.approx(
        value_loss(values, old, returns, mask, None).item()
    )


def test_token_logprobs_and_entropy_match_loops():
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(len(LENGTHS), T, 7, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, 7, (len(LENGTHS), T), generator=g)
    mask = _mask()
    lp = token_logprobs(logits, tokens)
    ents = []
    for b in range(len(LENGTHS)):
        for t in range(T):
            row = logits[b, t].tolist()
            z = math.log(sum(math.exp(v) for v in row))
            assert lp[b, t].item() == pytest.approx(row[tokens[b, t]] - z, rel=1e-12)
            if t < LENGTHS[b]:
                ents.append(-sum(math.exp(v - z) * (v - z) for v in row))
    assert entropy_from_logits(logits, mask).item() == pytest.approx(sum(ents) / len(ents), rel=1e-12)


def test_kl_early_stop_threshold_is_one_and_a_half_targets():
    from shoal.learner.losses import kl_early_stop

    assert not kl_early_stop(0.5, None)
    assert not kl_early_stop(0.15, 0.1) and kl_early_stop(0.1501, 0.1)
    assert kl_early_stop(0.21, 0.1, factor=2.0) and not kl_early_stop(0.2, 0.1, factor=2.0)
