"""Bradley-Terry preference losses for reward-model training (pure functions).

Bradley & Terry (1952): P(y_w preferred to y_l) = sigmoid(r(x, y_w) - r(x, y_l)). The reward
model is fitted by maximum likelihood on human (here: gold-labelled) comparisons:
`loss = -log sigmoid(r_chosen - r_rejected)` averaged over pairs (Ziegler et al. 2019).
InstructGPT (Ouyang et al. 2022) ranks K answers per prompt and averages that loss over all
K-choose-2 pairs of the ranking (`ranking_loss`); K = 2 is the pairwise loss.

`-log sigmoid(d)` is computed as `softplus(-d)` (stable for large |d|). Tests compare every
function with a slow loop using `math.log` / `math.exp`: tests/unit/test_bradley_terry.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """mean(-log sigmoid(r_chosen - r_rejected)) over the pairs; shapes [B] (or broadcastable)."""
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen shape {tuple(r_chosen.shape)} != r_rejected shape {tuple(r_rejected.shape)}")
    return F.softplus(r_rejected - r_chosen).mean()


def ranking_loss(rewards: torch.Tensor) -> torch.Tensor:
    """InstructGPT ranking loss for [B, K] rewards of K answers ranked best first.

    Mean over the B * K(K-1)/2 pairs (i < j) of -log sigmoid(r_i - r_j).
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [B, K] with K >= 2, got shape {tuple(rewards.shape)}")
    i, j = torch.triu_indices(rewards.shape[1], rewards.shape[1], offset=1, device=rewards.device)
    return F.softplus(rewards[:, j] - rewards[:, i]).mean()


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Fraction of pairs the model orders like the label (ties count one half)."""
    if r_chosen.shape != r_rejected.shape or r_chosen.numel() == 0:
        raise ValueError(f"need equal, non-empty shapes; got {tuple(r_chosen.shape)} and {tuple(r_rejected.shape)}")
    wins = (r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()
    return wins.mean().item()


def pearson(xs: torch.Tensor, ys: torch.Tensor) -> float:
    """Pearson correlation of two 1-D samples (nan when either is constant)."""
    if xs.shape != ys.shape or xs.dim() != 1 or xs.numel() < 2:
        raise ValueError(f"need two 1-D samples of equal length >= 2; got {tuple(xs.shape)} and {tuple(ys.shape)}")
    x, y = xs.double() - xs.double().mean(), ys.double() - ys.double().mean()
    denom = (x.square().sum() * y.square().sum()).sqrt()
    return (x * y).sum().div(denom).item() if denom > 0 else float("nan")
