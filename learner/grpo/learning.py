"""GRPO's advantage estimator (Shao et al. 2024; Dr.GRPO, Liu et al. 2025) and its learner.

For the G samples of one prompt with rewards r_1..r_G (a group: see buffer/groups.py),
    A_i = (r_i - mean(r)) / (std(r) + eps)        on every token of sample i (GRPO)
    A_i =  r_i - mean(r)                           Dr.GRPO (`loss_aggregation: dr_grpo`)
                                                   or `scale_rewards: none`
    A_i = (r_i - mean(r)) / std_batch(r - mean)    `scale_rewards: batch`
std is the sample (Bessel-corrected) standard deviation, as TRL and OpenRLHF compute it.
`batch` (REINFORCE++-baseline, Hu 2025; "group mean, batch std" of Liu et al. 2025, "Tricks
or Traps") divides by ONE std over all samples of the batch: a group whose answers score
almost alike keeps advantages near 0 instead of having its score noise blown up to +-1.
With `kl_mode: reward` each token's advantage also gets the return-to-go of the per-token
penalty -kl_coef * k1 (not normalised); with `kl_mode: loss` (GRPO's) the `kl_estimator`
term (k3 or k2) is in the loss. The update (clipped surrogate against the sampler's log-probs, aggregation) is the
shared `shoal.learner.critic_free.CriticFreeLearner`.

Tests: `pytest tests/unit/test_critic_free.py -k grpo`.
"""

from __future__ import annotations

from typing import Literal

import torch

from shoal.learner.critic_free import CriticFreeLearner, broadcast, group_mean_std, returns_to_go


def grpo_advantages(
    seq_rewards: torch.Tensor,
    groups: torch.Tensor,
    mask: torch.Tensor,
    kl_penalty: torch.Tensor | None = None,
    *,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """[B, T] group-relative advantages from [B] rewards and [B] group ids (module docstring)."""
    mean, std = group_mean_std(seq_rewards, groups)
    adv = seq_rewards.to(mean.dtype) - mean
    if scale == "group":
        adv = adv / (std + eps)
    elif scale == "batch":
        adv = adv / (adv.std() + eps) if adv.numel() > 1 else adv
    out = broadcast(adv, mask)
    if kl_penalty is not None:
        out = out + returns_to_go(kl_penalty, mask)
    return out


class GRPOLearner(CriticFreeLearner):
    """GRPO / Dr.GRPO on the shared critic-free update."""

    def advantages(self, seq_rewards, groups, mask, kl_penalty):
        return grpo_advantages(
            seq_rewards,
            groups,
            mask,
            kl_penalty,
            scale=self.cfg.reward_scaling,
            eps=self.cfg.advantage_eps,
        )
