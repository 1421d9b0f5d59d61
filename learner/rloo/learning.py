"""RLOO's advantage estimator (Ahmadian et al. 2024) and its learner.

For the k samples of one prompt (a group: see buffer/groups.py), with R_i the sequence
reward, minus kl_coef * sum_t k1 when `kl_mode: reward` (the whole generation is one action,
as in the paper),
    A_i = R_i - 1/(k-1) sum_{j != i} R_j           on every token of sample i.
A group left short by the scorers uses its own size k (at least 2). The update is the shared
`shoal.learner.critic_free.CriticFreeLearner`: the clipped surrogate against the sampler's
log-probs, which with one epoch on on-policy samples is RLOO's REINFORCE gradient (ratio 1).

Tests: `pytest tests/unit/test_critic_free.py -k rloo`.
"""

from __future__ import annotations

import torch

from shoal.learner.critic_free import CriticFreeLearner, broadcast, group_sizes


def rloo_advantages(
    seq_rewards: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor, kl_penalty: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, T] leave-one-out advantages from [B] rewards and [B] group ids (module docstring)."""
    total = seq_rewards.to(torch.float64)
    if kl_penalty is not None:
        total = total + (kl_penalty * mask).sum(dim=1).to(torch.float64)
    n = group_sizes(groups)
    if bool((n < 2).any()):
        raise ValueError("RLOO needs groups of at least 2 samples")
    sums = torch.zeros(int(groups.max()) + 1, dtype=total.dtype).index_add_(0, groups, total)[groups]
    baseline = (sums - total) / (n - 1).to(total.dtype)
    return broadcast(total - baseline, mask)


class RLOOLearner(CriticFreeLearner):
    """RLOO on the shared critic-free update."""

    def advantages(self, seq_rewards, groups, mask, kl_penalty):
        return rloo_advantages(seq_rewards, groups, mask, kl_penalty)
