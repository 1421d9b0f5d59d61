"""Q-learning math for recurrent (R2D2) and token-level offline (ILQL) learners.

Papers and conventions:
- Value rescaling (Pohlen et al. 2018, "Observe and Look Further"; used by R2D2, Kapturowski
  et al. 2019): h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x, eps = 1e-3, and its closed-form
  inverse h^-1(x) = sign(x)(((sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps))^2 - 1).
- n-step double-Q targets (R2D2; Acme/rlax `transformed_n_step_q_learning`):
      y_t = h( sum_{k<m} gamma^k r_{t+k} + gamma^m h^-1( Q_target(h_{t+m}, argmax_a Q_online(h_{t+m}, a)) ) )
  with m = n, shortened where the sequence runs out (rlax truncates the last n-1 returns to
  bootstrap from the last available step); no bootstrap after a real `done`.
- Sequence priorities (R2D2): p = eta * max_t |delta_t| + (1 - eta) * mean_t |delta_t|.
- Expectile loss (IQL, Kostrikov et al. 2022; ILQL, Snell et al. 2023): |tau - 1(u < 0)| u^2.
- CQL term (Kumar et al. 2020, as ILQL uses it): logsumexp_a Q(h, a) - Q(h, a_data).
- Polyak averaging of target networks: target <- (1 - alpha) target + alpha online.

Shapes: [B, L] over the positions of a replay item (SequenceItem: burn-in + trace + 1 turns)
or over tokens; Q-values [B, L, A]. `mask` is 1 on real turns and 0 on padding. Targets never
read a masked position: `n_step_double_q_targets` returns a `valid` mask next to the targets,
0 where no target can be formed (padding; a last real position with no done and no successor).
A truncated episode's final observation is such a position (the adder,
`buffer.sequences.cut_episode`, puts it after the last turn with mask 1 and done=False), so
the final turns bootstrap from Q(final_observation). The learner's loss mask is `valid * trace_positions`.

Deviations to know:
- A `done` on a mask-0 position is ignored (padding is done=True by convention; it never ends
  a real return early).
- Importance weights (PER) are the buffer's (`buffer.prioritized`), not computed here.
- Losses here return masked means (scalars); `masked_mean` raises on an all-zero mask.

Pure torch; no Ray. Tests: `pytest tests/unit/test_q_math.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from shoal.learner.losses import masked_mean

RESCALE_EPS = 1e-3  # Pohlen et al. 2018; R2D2


def value_rescale(x: torch.Tensor, eps: float = RESCALE_EPS) -> torch.Tensor:
    """h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x."""
    return torch.sign(x) * (torch.sqrt(x.abs() + 1.0) - 1.0) + eps * x


def inverse_value_rescale(x: torch.Tensor, eps: float = RESCALE_EPS) -> torch.Tensor:
    """h^-1(x) = sign(x)(((sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps))^2 - 1), exact inverse of h."""
    root = (torch.sqrt(1.0 + 4.0 * eps * (x.abs() + 1.0 + eps)) - 1.0) / (2.0 * eps)
    return torch.sign(x) * (root**2 - 1.0)


def _check_sequence_shapes(rewards, dones, mask, q_online, q_target) -> None:
    if not rewards.shape == dones.shape == mask.shape or rewards.dim() != 2:
        raise ValueError(
            f"rewards, dones, mask must be equal [B, L]; got {tuple(rewards.shape)}, {tuple(dones.shape)}, {tuple(mask.shape)}"
        )
    if q_online.shape != q_target.shape or q_online.shape[:2] != rewards.shape or q_online.dim() != 3:
        raise ValueError(
            f"q_online {tuple(q_online.shape)} and q_target {tuple(q_target.shape)} must be [B, L, A] with [B, L] = {tuple(rewards.shape)}"
        )


def _shift(x: torch.Tensor, k: int, fill: float) -> torch.Tensor:
    """x[:, t + k] at column t ([B, L]); `fill` past the end."""
    if k == 0:
        return x
    pad = torch.full_like(x[:, :k], fill)
    return torch.cat([x[:, k:], pad], dim=1)[:, : x.shape[1]]


def n_step_double_q_targets(
    rewards: torch.Tensor,
    dones: torch.Tensor,
    mask: torch.Tensor,
    q_online: torch.Tensor,
    q_target: torch.Tensor,
    gamma: float,
    n: int,
    rescale: bool = True,
    eps: float = RESCALE_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n-step double-Q targets over whole items -> (targets [B, L], valid [B, L]); no gradient.

    rewards, dones, mask: [B, L] per position (dones: the episode ended after that turn).
    q_online, q_target: [B, L, A] Q-values at every position (in rescaled space if `rescale`).
    For a valid position t, walk k = 0..n-1: a real done at t+k ends the return (no bootstrap);
    r_{t+k} is added only if position t+k+1 exists and is real, so the return always
    bootstraps from a real position t+m, m <= n (shorter at the item's end or before padding):
        target = h(G + gamma^m h^-1(q_target[t+m, argmax_a q_online[t+m, a]])), G = sum_{k<m} gamma^k r_{t+k}.
    valid is 0 on padding and where m = 0 with no done (nothing to bootstrap from); targets there are 0.
    """
    _check_sequence_shapes(rewards, dones, mask, q_online, q_target)
    if n < 1:
        raise ValueError(f"n-step targets need n >= 1, got n={n}")
    rewards, q_online, q_target = rewards.detach(), q_online.detach(), q_target.detach()
    real = mask > 0
    real_done = (dones > 0) & real
    alive, terminal = real.clone(), torch.zeros_like(real)
    ret, disc = torch.zeros_like(rewards), torch.ones_like(rewards)
    steps = torch.zeros_like(rewards, dtype=torch.long)
    for k in range(n):
        r_k, done_k = _shift(rewards, k, 0.0), _shift(real_done, k, False)
        next_real = _shift(real, k + 1, False)
        ends = alive & done_k
        extends = alive & ~done_k & next_real
        ret = ret + torch.where(ends | extends, disc * r_k, torch.zeros_like(ret))
        terminal, steps = terminal | ends, steps + extends.long()
        disc = torch.where(extends, disc * gamma, disc)
        alive = extends
    bootstrap = _bootstrap_values(q_online, q_target, steps)
    if rescale:
        bootstrap = inverse_value_rescale(bootstrap, eps)
    bootstraps = ~terminal & (steps > 0)
    ret = ret + torch.where(bootstraps, disc * bootstrap, torch.zeros_like(ret))
    targets = value_rescale(ret, eps) if rescale else ret
    valid = (terminal | bootstraps).to(rewards.dtype)
    return targets * valid, valid


def _bootstrap_values(q_online: torch.Tensor, q_target: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """[B, L]: q_target[b, t + m, argmax_a q_online[b, t + m, a]] with m = steps[b, t] (index clamped)."""
    length = q_online.shape[1]
    index = (torch.arange(length, device=steps.device) + steps).clamp(max=length - 1)
    index = index.unsqueeze(-1).expand(-1, -1, q_online.shape[-1])
    best = torch.gather(q_online, 1, index).argmax(dim=-1, keepdim=True)
    return torch.gather(torch.gather(q_target, 1, index), -1, best).squeeze(-1)


def sequence_priorities(td_errors: torch.Tensor, mask: torch.Tensor, eta: float = 0.9) -> torch.Tensor:
    """[B] R2D2 priorities eta * max|delta| + (1 - eta) * mean|delta| over mask-1 positions; 0 for an empty row.

    td_errors, mask: [B, L]; pass the trace positions with a valid target as the mask.
    """
    if td_errors.shape != mask.shape:
        raise ValueError(f"td_errors {tuple(td_errors.shape)} and mask {tuple(mask.shape)} differ")
    m = (mask > 0).to(td_errors.dtype)
    abs_td = td_errors.detach().abs() * m
    count = m.sum(dim=1)
    mean = abs_td.sum(dim=1) / count.clamp(min=1.0)
    return eta * abs_td.max(dim=1).values + (1.0 - eta) * mean


def expectile_loss(diff: torch.Tensor, tau: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of |tau - 1(diff < 0)| * diff^2, diff = target - prediction (IQL's L2^tau); masked if given."""
    if not 0.0 < tau < 1.0:
        raise ValueError(f"expectile tau must be in (0, 1), got {tau}")
    loss = (tau - (diff < 0).to(diff.dtype)).abs() * diff**2
    return loss.mean() if mask is None else masked_mean(loss, mask)


def cql_term(q_all: torch.Tensor, q_taken: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of logsumexp_a q_all[..., a] - q_taken (q_all [..., A], q_taken [...]); masked if given."""
    if q_all.shape[:-1] != q_taken.shape:
        raise ValueError(f"q_all {tuple(q_all.shape)} must be q_taken {tuple(q_taken.shape)} + [A]")
    gap = torch.logsumexp(q_all, dim=-1) - q_taken
    return gap.mean() if mask is None else masked_mean(gap, mask)


@torch.no_grad()
def polyak_update(target: Iterable[torch.Tensor], online: Iterable[torch.Tensor], alpha: float) -> None:
    """In place: target <- (1 - alpha) target + alpha online, for matching parameter lists."""
    target, online = list(target), list(online)
    if len(target) != len(online) or not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"polyak_update needs equal lists and alpha in [0, 1]; got {len(target)} vs {len(online)}, alpha={alpha}"
        )
    for t, o in zip(target, online):
        if t.shape != o.shape:
            raise ValueError(f"polyak_update shape mismatch: target {tuple(t.shape)} vs online {tuple(o.shape)}")
        t.mul_(1.0 - alpha).add_(o.detach(), alpha=alpha)


def ilql_value_target(q1_target: torch.Tensor, q2_target: torch.Tensor) -> torch.Tensor:
    """ILQL V target: min(Q1_target, Q2_target)(h, a_data), detached."""
    return torch.minimum(q1_target, q2_target).detach()


def ilql_q_target(rewards: torch.Tensor, dones: torch.Tensor, v_next: torch.Tensor, gamma: float) -> torch.Tensor:
    """ILQL Q target: r + gamma (1 - done) V(h'), detached (IQL backup: no max over actions)."""
    if not rewards.shape == dones.shape == v_next.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, dones {tuple(dones.shape)}, v_next {tuple(v_next.shape)} differ"
        )
    return (rewards + gamma * (1.0 - dones.to(rewards.dtype)) * v_next).detach()
