"""REINFORCE++'s advantage estimator (Hu 2025) and its learner.

No critic and no group baseline: token rewards r_t = -kl_coef * k1_t on every response token
(`kl_mode: reward`) plus the sequence reward at the last token (`learner.kl.
kl_penalised_rewards`), returns G_t = sum_{s >= t} r_s (gamma 1), and the advantages are
G normalised over ALL tokens of the whole batch (`masked_whiten`: mean 0, variance 1), not
per group. The update is the shared `shoal.learner.critic_free.CriticFreeLearner` (PPO clip
against the sampler's log-probs). Groups (`group_size` samples of a prompt) are only how the
requests are formed; a group of 1 is fine.

Tests: `pytest tests/unit/test_critic_free.py -k reinforce`.
"""

from __future__ import annotations

import torch

from shoal.learner.critic_free import CriticFreeLearner, returns_to_go
from shoal.learner.kl import last_valid_index
from shoal.learner.losses import masked_whiten


def reinforce_pp_advantages(
    seq_rewards: torch.Tensor, mask: torch.Tensor, kl_penalty: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, T] batch-normalised returns-to-go from [B] rewards and the [B, T] penalty (module docstring)."""
    token_rewards = torch.zeros(mask.shape, dtype=torch.float64)
    if kl_penalty is not None:
        token_rewards += (kl_penalty * mask).to(token_rewards.dtype)
    rows = torch.arange(mask.shape[0])
    token_rewards[rows, last_valid_index(mask)] += seq_rewards.to(token_rewards.dtype)
    return masked_whiten(returns_to_go(token_rewards, mask.to(token_rewards.dtype)), mask.to(token_rewards.dtype))


class ReinforcePPLearner(CriticFreeLearner):
    """REINFORCE++ on the shared critic-free update; groups of any size."""

    def min_group_size(self) -> int:
        return 1

    def advantages(self, seq_rewards, groups, mask, kl_penalty):
        return reinforce_pp_advantages(seq_rewards, mask, kl_penalty)
