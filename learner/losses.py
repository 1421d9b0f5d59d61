"""PPO math for language models: masked statistics, GAE, clipped losses, log-probs, entropy.

Papers: PPO (Schulman et al. 2017) clipped surrogate; GAE (Schulman et al. 2016); value
clipping and the 0.5 * squared-error value loss as in the PPO implementations (baselines,
CleanRL). Tokens are time steps; tensors are [B, T] over response tokens, padded on the
right, with a mask that is 1 on real response tokens and 0 on padding.

Conventions (deviations to know):
- Means are token-level over the whole (mini)batch: sum(x * mask) / sum(mask).
- `gae`: the mask of each row must be a prefix (1...1 0...0); the value after the last valid
  token is 0 (the response ends the episode).
- `masked_whiten` uses the population variance (no Bessel correction).
- `approx_kl` is the k3 estimator of KL(pi_old || pi) (as CleanRL's `approx_kl`).

Off-policy corrections for asynchronous training (`behaviour_weights`): the three policies of an
async update are the behaviour policy mu that sampled (the rollout's log-probs), the proximal
policy pi_prox (the learner's recomputed log-probs before the update) and pi_theta.

Pure torch; no Ray. Tests: `pytest tests/unit/test_losses.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shoal.learner.kl import kl_k3

WHITEN_EPS = 1e-8


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over entries where mask is 1; ValueError if the mask is empty."""
    count = mask.sum()
    if count.item() == 0:
        raise ValueError(f"masked_mean over an all-zero mask of shape {tuple(mask.shape)}")
    return masked_sum(x, mask) / count


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance of x over masked entries."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over masked entries; padded entries are 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def check_prefix_mask(mask: torch.Tensor) -> None:
    """ValueError naming the rows whose mask is not of the form 1...1 0...0."""
    m = mask.to(torch.int64)
    bad = ((m[:, 1:] - m[:, :-1]) > 0).any(dim=1).nonzero().flatten().tolist()
    if bad or ((m != 0) & (m != 1)).any():
        raise ValueError(f"response mask rows {bad} are not 0/1 prefixes (1...1 0...0)")


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens -> (advantages, returns), [B, T].

    delta_t = r_t + gamma * V_{t+1} - V_t, with V = 0 after the last valid token;
    A_t = delta_t + gamma * gae_lambda * A_{t+1}; returns = A + V. Padding gets 0.
    """
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(
            f"shapes differ: rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, mask {tuple(mask.shape)}"
        )
    check_prefix_mask(mask)
    mask = mask.to(values.dtype)
    next_values = torch.zeros_like(values)
    next_values[:, :-1] = values[:, 1:] * mask[:, 1:]
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_mask = mask[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        running = deltas[:, t] + gamma * gae_lambda * running * next_mask
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate -> (loss, clip_fraction, approx_kl); the last two are detached.

    loss = mean_t w_t * max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - clip_coef, 1 + clip_coef)),
    ratio_t = exp(logprobs_t - old_logprobs_t); w_t = 1 unless `weights` (off-policy importance
    weights, `behaviour_weights`, constants: no gradient flows through them) are given.
    clip_fraction: share of tokens with |ratio - 1| > clip_coef.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    surrogate = torch.maximum(unclipped, clipped)
    if weights is not None:
        surrogate = weights.detach() * surrogate
    loss = masked_mean(surrogate, mask)
    with torch.no_grad():
        clip_fraction = masked_mean(((ratio - 1.0).abs() > clip_coef).to(ratio.dtype), mask)
        approx_kl = masked_mean(kl_k3(old_logprobs, logprobs), mask)
    return loss, clip_fraction, approx_kl


def kl_penalty_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's KL-penalty form (Schulman et al. 2017, sec. 4; the form the seed notes derive first)
    -> (loss, kl); kl detached.

    loss = mean_t w_t * (-A_t * ratio_t) + beta * mean_t KL_t(pi_old || pi_theta), the per-token KL
    by the k3 estimator on the sampled tokens (non-negative, unbiased under pi_old).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    surrogate = -advantages * ratio
    if weights is not None:
        surrogate = weights.detach() * surrogate
    kl = masked_mean(kl_k3(old_logprobs, logprobs), mask)
    return masked_mean(surrogate, mask) + beta * kl, kl.detach()


def adapt_kl_penalty_coef(beta: float, measured_kl: float, target_kl: float, band: float = 1.5) -> float:
    """Schulman et al. 2017's rule: halve beta when the measured KL is below target/band, double
    it when above target*band, keep it inside the band."""
    if measured_kl < target_kl / band:
        return beta / 2.0
    if measured_kl > target_kl * band:
        return beta * 2.0
    return beta


CORRECTIONS = ("none", "behavior", "decoupled", "tis_sequence", "mask_sequence")


def kl_early_stop(approx_kl: float, target_kl: float | None, factor: float = 1.5) -> bool:
    """PPO's early stopping (Spinning Up; CleanRL --target-kl): stop updating on this batch once
    the policy has moved more than factor * target_kl nats per token from pi_old."""
    return target_kl is not None and approx_kl > factor * target_kl


def behaviour_weights(
    prox_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, mask: torch.Tensor, correction: str, cap: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Off-policy importance weights [B, T] of the samples' behaviour policy mu (the sampler's
    log-probs, possibly some versions old) relative to the proximal policy pi_prox (the learner's
    log-probs before this update), and their statistics (learner/is_weight_mean, _max,
    is_truncated_frac; raw weights, before truncation).

    - decoupled (Hilton et al. 2021; AReaL; token-level truncated IS as in Yao et al. 2025):
      w_t = min(pi_prox_t / mu_t, cap);
    - tis_sequence: one weight per sequence, min(prod_t pi_prox_t / mu_t, cap);
    - mask_sequence (TRL's default): 1 when the sequence's geometric-mean ratio lies in
      [1/cap, cap], else 0 (the sequence is left out of the loss);
    - none / behavior: all ones (no correction).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown off-policy correction {correction!r} (have: {', '.join(CORRECTIONS)})")
    if correction in ("none", "behavior"):
        return torch.ones_like(mask), {}
    log_w = (prox_logprobs - behaviour_logprobs) * mask
    if correction == "decoupled":
        raw = torch.exp(log_w)
        weights = torch.clamp(raw, max=cap) * mask
        truncated = masked_mean((raw > cap).to(raw.dtype), mask)
        stats_raw = raw[mask.bool()]
    else:
        lengths = mask.sum(dim=1).clamp(min=1)
        if correction == "tis_sequence":
            raw_seq = torch.exp(log_w.sum(dim=1))
            keep = torch.clamp(raw_seq, max=cap)
            truncated = (raw_seq > cap).to(raw_seq.dtype).mean()
        else:
            raw_seq = torch.exp(log_w.sum(dim=1) / lengths)
            inside = (raw_seq >= 1.0 / cap) & (raw_seq <= cap)
            keep = inside.to(raw_seq.dtype)
            truncated = (~inside).to(raw_seq.dtype).mean()
        weights = keep.unsqueeze(1) * mask
        stats_raw = raw_seq
    stats = {
        "learner/is_weight_mean": float(stats_raw.mean()) if stats_raw.numel() else 1.0,
        "learner/is_weight_max": float(stats_raw.max()) if stats_raw.numel() else 1.0,
        "learner/is_truncated_frac": float(truncated),
    }
    return weights, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    vf_clip: float | None,
) -> torch.Tensor:
    """0.5 * mean_t max((V - R)^2, (V_clip - R)^2), V_clip = old + clip(V - old, +-vf_clip).

    With vf_clip None: 0.5 * mean_t (V - R)^2.
    """
    losses = (values - returns) ** 2
    if vf_clip is not None:
        clipped = old_values + torch.clamp(values - old_values, -vf_clip, vf_clip)
        losses = torch.maximum(losses, (clipped - returns) ** 2)
    return 0.5 * masked_mean(losses, mask)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """[..., V] logits -> [...] entropy of softmax(logits)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy of softmax(logits) ([B, T, V]) over masked tokens."""
    return masked_mean(token_entropy(logits), mask)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[B, T, V] logits, [B, T] token ids -> [B, T] log softmax(logits)[token]."""
    logp = F.log_softmax(logits, dim=-1)
    return torch.gather(logp, -1, tokens.unsqueeze(-1)).squeeze(-1)
