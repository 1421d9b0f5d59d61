"""KL math for RLHF: per-token KL estimators, the KL-penalised reward, and beta controllers.

Estimators (Schulman 2020, "Approximating KL Divergence"): for a token a ~ pi, with
log-ratio `log r = ref_logp - logp`,
    k1 = -log r                      (unbiased, can be negative per token)
    k2 = 0.5 (log r)^2               (biased, always >= 0, low variance)
    k3 = (r - 1) - log r             (unbiased, always >= 0)
each an estimate of KL(pi || pi_ref) for that token (k1: the penalised reward, the reported
KL; k3: PPO's approx_kl and GRPO's loss term). As a LOSS term on tokens sampled from pi their
gradients differ (Tang & Munos 2025, "On a few pitfalls in KL divergence gradient estimation"):
grad k2 = (logp - ref_logp) grad logp, whose expectation under pi is the gradient of the
reverse KL(pi || pi_ref) of that token's distribution; grad k3 = (1 - pi_ref / pi) grad logp,
whose expectation is the gradient of the FORWARD KL(pi_ref || pi): it pulls pi back where pi_ref
has mass, but barely pushes pi out of answers pi_ref finds unlikely.

Penalised reward (Ziegler et al. 2019; Ouyang et al. 2022, InstructGPT): per response token
`-kl_coef * (logp - ref_logp)` (k1), plus the sequence reward added at the last valid token.

Controllers: `FixedKLController` keeps beta; `AdaptiveKLController` is Ziegler et al.'s
proportional controller: e = clip(KL / target - 1, -0.2, 0.2), beta *= 1 + e * n_steps /
horizon, with KL the mean per-sequence KL and n_steps the number of samples in the batch.

Pure torch; no Ray. Tests: `pytest tests/unit/test_kl.py`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

ADAPTIVE_KL_ERROR_CLIP = 0.2  # Ziegler et al. 2019, section 2.2


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = logp - ref_logp, per token."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 (logp - ref_logp)^2, per token."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r with r = exp(ref_logp - logp), per token."""
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


def last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """[B] index of the last nonzero entry of each row of a [B, T] mask; ValueError on an empty row."""
    lengths = mask.sum(dim=1)
    empty = (lengths == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask rows {empty} have no valid token; a sequence reward needs one")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, -1).max(dim=1).values


def kl_penalised_rewards(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    seq_rewards: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """[B, T] token rewards: -kl_coef * k1 on valid tokens, + seq_rewards[b] at the last valid token.

    logprobs, ref_logprobs, mask: [B, T]; seq_rewards: [B]. Padded tokens get 0.
    """
    if logprobs.shape != ref_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(
            f"shapes differ: logprobs {tuple(logprobs.shape)}, ref_logprobs {tuple(ref_logprobs.shape)}, mask {tuple(mask.shape)}"
        )
    if seq_rewards.shape != (logprobs.shape[0],):
        raise ValueError(f"seq_rewards shape {tuple(seq_rewards.shape)} != ({logprobs.shape[0]},)")
    rewards = -kl_coef * kl_k1(logprobs, ref_logprobs) * mask
    last = last_valid_index(mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += seq_rewards.to(rewards.dtype)
    return rewards


class FixedKLController:
    """A constant beta."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, "fixed")
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. (2019) proportional controller of beta toward a target KL (nats/sequence)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if init_kl_coef < 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                f"adaptive KL needs init_kl_coef >= 0, target > 0, horizon > 0; got {init_kl_coef}, {target}, {horizon}"
            )
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """beta *= 1 + clip(current_kl / target - 1, -0.2, 0.2) * n_steps / horizon."""
        if not math.isfinite(current_kl):
            raise ValueError(f"adaptive KL update got a non-finite current_kl {current_kl}")
        error = min(max(current_kl / self.target - 1.0, -ADAPTIVE_KL_ERROR_CLIP), ADAPTIVE_KL_ERROR_CLIP)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, "adaptive")
        self.value, self.target, self.horizon = float(state["value"]), float(state["target"]), int(state["horizon"])


KLController = FixedKLController | AdaptiveKLController


def _check_kind(state: dict[str, Any], kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"KL controller state of kind {state.get('kind')!r} cannot load into a {kind!r} controller")


def make_kl_controller(reward_cfg: Any) -> KLController:
    """From a RewardSection: adaptive (kl_coef, kl_target, kl_horizon) when adaptive_kl, else fixed."""
    if reward_cfg.adaptive_kl:
        return AdaptiveKLController(reward_cfg.kl_coef, reward_cfg.kl_target, reward_cfg.kl_horizon)
    return FixedKLController(reward_cfg.kl_coef)
