"""learner/q_math.py against slow, obvious python-loop references."""

from __future__ import annotations

import math

import pytest
import torch

from shoal.learner.q_math import (
    RESCALE_EPS,
    cql_term,
    expectile_loss,
    ilql_q_target,
    ilql_value_target,
    inverse_value_rescale,
    n_step_double_q_targets,
    polyak_update,
    sequence_priorities,
    value_rescale,
)

D = torch.float64


def _rand(seed: int, shape, scale=1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=D) * scale


def _h(x: float) -> float:
    return math.copysign(math.sqrt(abs(x) + 1) - 1, x) + RESCALE_EPS * x


def _h_inv_bisect(y: float) -> float:
    """Invert the monotone h numerically: an independent reference for the closed form."""
    lo, hi = -1e9, 1e9
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _h(mid) < y else (lo, mid)
    return (lo + hi) / 2


# ---- value rescaling -------------------------------------------------------------------------

XS = [-5000.0, -37.5, -1.0, -1e-3, 0.0, 2e-4, 0.5, 1.0, 3.0, 99.0, 12345.0]


def test_value_rescale_matches_formula():
    got = value_rescale(torch.tensor(XS, dtype=D)).tolist()
    for x, y in zip(XS, got):
        assert y == pytest.approx(_h(x), rel=1e-12, abs=1e-15)


def test_inverse_value_rescale_matches_bisection_and_round_trips():
    ys = torch.tensor([_h(x) for x in XS], dtype=D)
    inv = inverse_value_rescale(ys)
    for y, x_got, x in zip(ys.tolist(), inv.tolist(), XS):
        assert x_got == pytest.approx(_h_inv_bisect(y), rel=1e-7, abs=1e-7)
        assert x_got == pytest.approx(x, rel=1e-7, abs=1e-9)
    z = _rand(0, (1000,), scale=300.0)
    torch.testing.assert_close(value_rescale(inverse_value_rescale(z)), z, rtol=1e-10, atol=1e-10)


# ---- n-step double-Q targets -------------------------------------------------------------------

L, A = 7, 3
# (mask, dones) rows: mid-episode item; done at 2 then padding; truncated (no done) then
# padding; front padding then done at 5; a one-turn episode; a done on a padded position only.
ROWS = [
    ([1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]),
    ([1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1]),
    ([1, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1]),
    ([0, 0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1]),
    ([1, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]),
    ([1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0]),
]


def _batch(seed: int):
    mask = torch.tensor([m for m, _ in ROWS], dtype=D)
    dones = torch.tensor([d for _, d in ROWS], dtype=D)
    rewards = _rand(seed, mask.shape) * mask
    q_online, q_target = _rand(seed + 1, (*mask.shape, A), 3.0), _rand(seed + 2, (*mask.shape, A), 3.0)
    return rewards, dones, mask, q_online, q_target


def _n_step_reference(r, d, m, qo, qt, gamma, n, rescale):
    h = _h if rescale else (lambda x: x)
    h_inv = _h_inv_bisect if rescale else (lambda x: x)
    targets = [[0.0] * len(m[0]) for _ in m]
    valid = [[0.0] * len(m[0]) for _ in m]
    for b in range(len(m)):
        length = len(m[b])
        for t in range(length):
            if m[b][t] == 0:
                continue
            ret, disc, steps, terminal = 0.0, 1.0, 0, False
            for k in range(n):
                j = t + k
                if d[b][j]:
                    ret += disc * r[b][j]
                    terminal = True
                    break
                if j + 1 >= length or m[b][j + 1] == 0:
                    break
                ret += disc * r[b][j]
                disc *= gamma
                steps += 1
            if not terminal and steps == 0:
                continue
            if not terminal:
                jb = t + steps
                best = max(range(len(qo[b][jb])), key=lambda a: qo[b][jb][a])
                ret += disc * h_inv(qt[b][jb][best])
            targets[b][t], valid[b][t] = h(ret), 1.0
    return torch.tensor(targets, dtype=D), torch.tensor(valid, dtype=D)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("rescale", [False, True])
def test_n_step_double_q_targets_match_loop(n, rescale):
    r, d, m, qo, qt = _batch(3)
    targets, valid = n_step_double_q_targets(r, d, m, qo, qt, gamma=0.9, n=n, rescale=rescale)
    ref_t, ref_v = _n_step_reference(r.tolist(), d.tolist(), m.tolist(), qo.tolist(), qt.tolist(), 0.9, n, rescale)
    torch.testing.assert_close(valid, ref_v)
    torch.testing.assert_close(targets, ref_t, rtol=1e-7, atol=1e-7)


def test_n_step_targets_by_hand():
    # 4 real turns, the last one done; n = 2, gamma = 0.5, no rescaling.
    r = torch.tensor([[1.0, 2.0, 4.0, 8.0, 0.0]], dtype=D)
    d = torch.tensor([[0, 0, 0, 1, 1]], dtype=D)
    m = torch.tensor([[1, 1, 1, 1, 0]], dtype=D)
    qo = torch.tensor([[[0.0, 1.0]] * 5], dtype=D)  # online argmax: action 1 everywhere
    qt = torch.tensor([[[100.0, 10.0]] * 5], dtype=D)  # target value of action 1: 10 (double Q, not max)
    targets, valid = n_step_double_q_targets(r, d, m, qo, qt, gamma=0.5, n=2, rescale=False)
    want = [1 + 0.5 * 2 + 0.25 * 10, 2 + 0.5 * 4 + 0.25 * 10, 4 + 0.5 * 8, 8.0, 0.0]
    torch.testing.assert_close(targets, torch.tensor([want], dtype=D))
    torch.testing.assert_close(valid, torch.tensor([[1, 1, 1, 1, 0]], dtype=D))


def test_n_step_targets_accept_bool_dones_and_carry_no_gradient():
    r, d, m, qo, qt = _batch(4)
    qo.requires_grad_(True)
    qt.requires_grad_(True)
    t_bool, v_bool = n_step_double_q_targets(r, d.bool(), m, qo, qt, 0.997, 5)
    t_float, v_float = n_step_double_q_targets(r, d, m, qo, qt, 0.997, 5)
    torch.testing.assert_close(t_bool, t_float)
    torch.testing.assert_close(v_bool, v_float)
    assert not t_float.requires_grad


def test_n_step_targets_reject_bad_shapes_and_n():
    r, d, m, qo, qt = _batch(5)
    with pytest.raises(ValueError, match="n >= 1"):
        n_step_double_q_targets(r, d, m, qo, qt, 0.9, 0)
    with pytest.raises(ValueError, match=r"\[B, L, A\]"):
        n_step_double_q_targets(r, d, m, qo[:, :-1], qt, 0.9, 1)
    with pytest.raises(ValueError, match="equal"):
        n_step_double_q_targets(r, d[:, :-1], m, qo, qt, 0.9, 1)


# ---- priorities and importance weights -------------------------------------------------------


@pytest.mark.parametrize("eta", [0.9, 0.0, 1.0, 0.5])
def test_sequence_priorities_match_loop(eta):
    td = _rand(6, (4, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=D)
    got = sequence_priorities(td, mask, eta).tolist()
    for b in range(4):
        vals = [abs(td[b, t].item()) for t in range(6) if mask[b, t] > 0]
        want = eta * max(vals) + (1 - eta) * sum(vals) / len(vals) if vals else 0.0
        assert got[b] == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_sequence_priorities_ignore_huge_errors_on_padding():
    td = torch.tensor([[1.0, -2.0, 1e9]], dtype=D)
    assert sequence_priorities(td, torch.tensor([[1.0, 1.0, 0.0]], dtype=D), 0.9).item() == pytest.approx(
        0.9 * 2 + 0.1 * 1.5
    )


# ---- ILQL / IQL / CQL pieces -----------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_loss_matches_loop(tau):
    diff, mask = _rand(7, (3, 5)), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=D)
    vals = [
        (tau if diff[b, t] >= 0 else 1 - tau) * diff[b, t].item() ** 2 for b in range(3) for t in range(5) if mask[b, t]
    ]
    assert expectile_loss(diff, tau, mask).item() == pytest.approx(sum(vals) / len(vals), rel=1e-12)
    all_vals = [(tau if x >= 0 else 1 - tau) * x**2 for x in diff.flatten().tolist()]
    assert expectile_loss(diff, tau).item() == pytest.approx(sum(all_vals) / len(all_vals), rel=1e-12)
    if tau == 0.5:
        assert expectile_loss(diff, tau).item() == pytest.approx(0.5 * (diff**2).mean().item())


def test_expectile_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        expectile_loss(torch.zeros(2), 1.0)


def test_cql_term_matches_loop():
    q_all, taken = _rand(8, (2, 4, 5), 2.0), torch.tensor([[0, 3, 4, 1], [2, 2, 0, 1]])
    q_taken = torch.gather(q_all, -1, taken.unsqueeze(-1)).squeeze(-1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=D)
    vals = []
    for b in range(2):
        for t in range(4):
            if mask[b, t]:
                row = q_all[b, t].tolist()
                top = max(row)
                vals.append(top + math.log(sum(math.exp(x - top) for x in row)) - row[taken[b, t]])
    assert cql_term(q_all, q_taken, mask).item() == pytest.approx(sum(vals) / len(vals), rel=1e-12)
    assert min(vals) > 0  # logsumexp exceeds any single Q-value
    with pytest.raises(ValueError, match=r"\+ \[A\]"):
        cql_term(q_all, q_taken[:, :2])


def test_polyak_update_matches_loop_and_is_in_place():
    target = [_rand(9, (3, 2)), _rand(10, (4,))]
    online = [_rand(11, (3, 2)), _rand(12, (4,))]
    want = [
        [(1 - 0.005) * a + 0.005 * b for a, b in zip(t.flatten().tolist(), o.flatten().tolist())]
        for t, o in zip(target, online)
    ]
    ids = [id(t) for t in target]
    polyak_update(target, online, 0.005)
    for t, w, i in zip(target, want, ids):
        assert id(t) == i
        assert t.flatten().tolist() == pytest.approx(w, rel=1e-12)
    polyak_update(target, online, 1.0)
    assert all(torch.equal(t, o) for t, o in zip(target, online))
    with pytest.raises(ValueError, match="shape mismatch"):
        polyak_update([torch.zeros(2)], [torch.zeros(3)], 0.1)


def test_polyak_update_on_module_parameters_keeps_no_graph():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    polyak_update(target.parameters(), online.parameters(), 0.5)
    assert all(p.grad is None for p in target.parameters())


def test_ilql_targets_match_loop():
    q1, q2 = _rand(13, (2, 5)), _rand(14, (2, 5))
    v = ilql_value_target(q1, q2)
    assert v.flatten().tolist() == [min(a, b) for a, b in zip(q1.flatten().tolist(), q2.flatten().tolist())]
    r, v_next = _rand(15, (2, 5)), _rand(16, (2, 5))
    dones = torch.tensor([[0, 0, 0, 0, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)
    q_t = ilql_q_target(r, dones, v_next.requires_grad_(True), 0.99)
    assert not q_t.requires_grad
    for b in range(2):
        for t in range(5):
            want = r[b, t].item() + (0.0 if dones[b, t] else 0.99 * v_next[b, t].item())
            assert q_t[b, t].item() == pytest.approx(want, rel=1e-12)
