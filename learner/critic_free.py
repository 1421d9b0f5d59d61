"""The one critic-free learner shared by GRPO, RLOO and REINFORCE++ (`learner/grpo/`,
`learner/rloo/`, `learner/reinforce_pp/`), and its pure math.

Each algorithm differs only in its advantage estimator, a pure function in its own
`learning.py` (`grpo_advantages`, `rloo_advantages`, `reinforce_pp_advantages`), which a
three-line subclass of `CriticFreeLearner` calls from `advantages()`. The update, for each
batch of scored rollouts (whole groups, from `buffer/groups.py`'s GroupQueue):
  1. recompute, with the current parameters and no gradient, the log-probs of the sampled
     tokens (logits / temperature): the reported KL to the reference, the logprob mismatch,
     and the per-token KL penalty when `kl_mode: reward`;
  2. groups: the rows sharing (prompt_id, worker_id, policy_version) (`group_index`);
  3. advantages [B, T] from the algorithm's estimator, given the sequence rewards, the groups,
     the mask and, with `kl_mode: reward`, the per-token penalty -kl_coef * k1(logp, ref_logp);
  4. `epochs` passes over shuffled minibatches of `minibatch_size` GROUPS (`minibatch_unit`:
     whole groups, or as many rollouts shuffled one by one as TRL does; cut anew every epoch
     unless `reshuffle_each_epoch: false`) of: the PPO clipped surrogate (`clip_coef`) with the
     off-policy correction of `correction` (as PPO's, `learner/losses.behaviour_weights`:
     by default decoupled - the ratio against the learner's recomputed log-probs, tokens
     weighted by min(pi_prox / mu, is_cap), mu = the sampler's `Rollout.logprobs`), plus, with
     `kl_mode: loss`, kl_coef * the `kl_estimator` term on every token (k3: GRPO's
     `pi_ref/pi - log(pi_ref/pi) - 1`, the forward KL's gradient; k2: 0.5 (log pi - log
     pi_ref)^2, the reverse KL's); both aggregated by `loss_aggregation`:
       token_mean     sum of token losses / tokens in the minibatch
       sequence_mean  per-sequence mean over its tokens, then the mean over sequences (GRPO)
       dr_grpo        token losses summed per sequence / max_new_tokens (a constant), then
                      the mean over sequences (Dr.GRPO, Liu et al. 2025);
     grad-norm clip, Adam at the step's learning rate (`lr_schedule`, `learner/schedule.py`);
  5. policy_version += 1.

Choices:
- No critic, no value head: the weights published are the policy LM's, as PPO's.
- The KL coefficient is the algorithm's own `kl_coef` (`reward.kl_coef` and
  `reward.adaptive_kl` are PPO's), fixed, or adapted toward `kl_target` by Ziegler et al.'s
  controller with `adaptive_kl`; the builders turn the reference scorer on when it is > 0.
  Items without `terms.ref_logprobs` get no KL (penalty or loss term).
- The model stays in eval mode (dropout off), so the first minibatch's ratio is the
  rollout/trainer mismatch only; the only randomness is the minibatch shuffle.
- The token batch, collation and item checks are PPO's (`learner.ppo.learning`).

Tests: `pytest tests/unit/test_critic_free.py`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from shoal.core import MetricsSink, NullMetrics
from shoal.learner.checkpoint import load_checkpoint, save_checkpoint
from shoal.learner.kl import AdaptiveKLController, FixedKLController, kl_k1, kl_k2, kl_k3
from shoal.learner.losses import behaviour_weights, entropy_from_logits, kl_early_stop, masked_mean, token_logprobs
from shoal.learner.policy import PolicyLearner, TokenBatch, batch_metrics, collate, mean_stats, validate_items
from shoal.models import load_policy
from shoal.tensors import adam, gather_positions
from shoal.types import SampledBatch, ScoredRollout

LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "dr_grpo")


# ---- pure math ------------------------------------------------------------------------------
def group_index(items: Sequence[ScoredRollout]) -> torch.Tensor:
    """[B] long: the group of each item, numbered in first-seen order. A group is the items of
    one prompt from one request: same prompt_id, worker_id and policy_version."""
    ids: dict[tuple[str, str, int], int] = {}
    out = []
    for it in items:
        r = it.rollout
        out.append(ids.setdefault((r.prompt.prompt_id, r.worker_id, r.policy_version), len(ids)))
    return torch.tensor(out, dtype=torch.long)


def group_sizes(groups: torch.Tensor) -> torch.Tensor:
    """[B] the size of each row's group."""
    counts = torch.bincount(groups)
    return counts[groups]


def group_mean_std(values: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] mean and sample standard deviation (Bessel-corrected, as TRL's and OpenRLHF's GRPO)
    of each row's group; a group of one has std 0."""
    n_groups = int(groups.max()) + 1
    values = values.to(torch.float64)
    counts = torch.bincount(groups, minlength=n_groups).to(values.dtype)
    sums = torch.zeros(n_groups, dtype=values.dtype).index_add_(0, groups, values)
    mean = sums / counts
    sq = torch.zeros(n_groups, dtype=values.dtype).index_add_(0, groups, (values - mean[groups]) ** 2)
    std = torch.sqrt(sq / (counts - 1).clamp(min=1))
    return mean[groups], std[groups]


def returns_to_go(token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] undiscounted sum_{s >= t} r_s over valid tokens; padding gets 0."""
    r = token_rewards * mask
    return torch.flip(torch.cumsum(torch.flip(r, [1]), dim=1), [1]) * mask


def clipped_token_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_coef: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, T] PPO's clipped surrogate per token, max(-A ratio, -A clip(ratio, 1 -+ clip_coef)),
    times the off-policy importance weights when given (constants: no gradient)."""
    ratio = torch.exp(logprobs - old_logprobs)
    out = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef))
    return out if weights is None else weights.detach() * out


def minibatch_rows(groups: torch.Tensor, minibatch_groups: int, unit: str, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch's minibatches: row indices of [B] group ids, cut at random. `groups`: the rows of
    `minibatch_groups` whole groups each; `samples`: rows shuffled one by one, minibatch_groups x
    the mean group size per minibatch (the last may be smaller)."""
    n_groups = int(groups.max()) + 1
    if unit == "groups":
        perm = torch.randperm(n_groups, generator=gen)
        return [torch.isin(groups, chosen).nonzero().flatten() for chosen in perm.split(minibatch_groups)]
    if unit == "samples":
        rows = max(1, round(len(groups) * minibatch_groups / n_groups))
        return list(torch.randperm(len(groups), generator=gen).split(rows))
    raise ValueError(f"minibatch_unit {unit!r} is not one of ('groups', 'samples')")


def aggregate_token_losses(losses: torch.Tensor, mask: torch.Tensor, mode: str, max_tokens: int) -> torch.Tensor:
    """[B, T] token losses -> scalar, by `loss_aggregation` (module docstring)."""
    if mode == "token_mean":
        return masked_mean(losses, mask)
    per_seq = (losses * mask).sum(dim=1)
    if mode == "sequence_mean":
        return (per_seq / mask.sum(dim=1).clamp(min=1)).mean()
    if mode == "dr_grpo":
        return per_seq.mean() / max_tokens
    raise ValueError(f"loss_aggregation {mode!r} is not one of {LOSS_AGGREGATIONS}")


# ---- the learner ----------------------------------------------------------------------------
class CriticFreeLearner(PolicyLearner):
    """The Learner role for the critic-free estimators; subclasses define `advantages`."""

    def __init__(
        self,
        model_path: str,
        cfg: Any,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        seed: int = 0,
        device: str = "cpu",
        metrics: MetricsSink | None = None,
        total_steps: int | None = None,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {max_new_tokens}")
        self.cfg, self.temperature, self.device = cfg, float(temperature), torch.device(device)
        self.max_new_tokens = int(max_new_tokens)
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.model, self.tokenizer = load_policy(model_path)
        self.model.to(self.device).eval()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = adam(self.params, cfg.learning_rate)
        self.shuffle_gen = torch.Generator().manual_seed(seed)
        self.policy_version, self.step_count, self.seed = 0, 0, seed
        self.total_steps = total_steps
        adaptive = getattr(cfg, "adaptive_kl", False)
        self.kl_ctl = (
            AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
            if adaptive
            else FixedKLController(cfg.kl_coef)
        )

    # ---- the estimator (per algorithm) --------------------------------------------------
    def advantages(
        self, seq_rewards: torch.Tensor, groups: torch.Tensor, mask: torch.Tensor, kl_penalty: torch.Tensor | None
    ) -> torch.Tensor:
        """[B, T] advantages from [B] sequence rewards, [B] groups, the [B, T] mask and, with
        kl_mode reward, the [B, T] per-token penalty -kl_coef * k1 (else None)."""
        raise NotImplementedError

    def min_group_size(self) -> int:
        """Groups smaller than this cannot be trained on (a group baseline needs two samples)."""
        return 2

    # ---- model evaluation ---------------------------------------------------------------
    def forward(self, tb: TokenBatch) -> torch.Tensor:
        """Tempered logits [B, T, V] at the response tokens."""
        out = self.model(input_ids=tb.input_ids.to(self.device), attention_mask=tb.attention_mask.to(self.device))
        return gather_positions(out.logits, tb.response_pos.to(self.device)).float() / self.temperature

    @torch.no_grad()
    def _evaluate(self, tb: TokenBatch) -> torch.Tensor:
        """No-grad log-probs [B, T] of every row, in chunks of 32 rows."""
        logps = torch.zeros(tb.response_mask.shape)
        for idx in torch.arange(len(tb.input_ids)).split(32):
            sub = tb.select(idx)
            width = sub.response_mask.shape[1]
            logps[idx, :width] = token_logprobs(self.forward(sub), sub.response_ids.to(self.device)).cpu()
        return logps * tb.response_mask

    # ---- the step -----------------------------------------------------------------------
    def step(self, batch: SampledBatch) -> dict[str, float]:
        """One update on a batch of whole groups of ScoredRollout; returns learner/ and reward/ metrics."""
        start = time.perf_counter()
        items = list(batch.items)
        validate_items(items)
        groups = group_index(items)
        self._check_groups(items, groups)
        tb = collate(
            [it.rollout.prompt.token_ids for it in items], [it.rollout.response_ids for it in items], self._pad_id()
        )
        mask = tb.response_mask
        old_logprobs = self._evaluate(tb)
        ref_logprobs, has_ref = self._ref_logprobs(items, old_logprobs)
        behaviour = self._behaviour_logprobs(items, old_logprobs)
        seq_rewards = torch.tensor([float(it.reward) for it in items])
        kl_coef = float(self.kl_ctl.value)
        kl_penalty = None
        if self.cfg.kl_mode == "reward":
            kl_penalty = -kl_coef * kl_k1(old_logprobs, ref_logprobs) * mask
        advantages = self.advantages(seq_rewards, groups, mask, kl_penalty).to(torch.float32) * mask
        ref_in_loss = ref_logprobs if self.cfg.kl_mode == "loss" and kl_coef > 0 and bool(has_ref.any()) else None
        correction = self.cfg.correction
        ratio_ref = behaviour if correction == "behavior" else old_logprobs
        weights, is_stats = behaviour_weights(old_logprobs, behaviour, mask, correction, self.cfg.is_cap)
        lr = self.scheduled_lr(self.cfg)
        train = self._train(tb, groups, ratio_ref, weights, advantages, ref_in_loss, has_ref)
        metrics = {
            **train,
            **is_stats,
            **batch_metrics(items, tb, old_logprobs, ref_logprobs, has_ref, self.policy_version),
        }
        metrics.update(self._group_metrics(seq_rewards, groups, advantages, mask))
        self.policy_version += 1
        self.step_count += 1
        if "learner/kl_ref" in metrics:
            self.kl_ctl.update(metrics["learner/kl_ref"], len(items))
        metrics.update(
            {"learner/kl_coef": kl_coef, "learner/lr": lr, "learner/policy_version": float(self.policy_version)}
        )
        metrics["learner/step_s"] = time.perf_counter() - start
        self.metrics.log(metrics, step=self.policy_version)
        return metrics

    def _check_groups(self, items: Sequence[ScoredRollout], groups: torch.Tensor) -> None:
        sizes = group_sizes(groups)
        small = (sizes < self.min_group_size()).nonzero().flatten().tolist()
        if small:
            it = items[small[0]]
            raise ValueError(
                f"prompt {it.rollout.prompt.prompt_id}: a group of {int(sizes[small[0]])} sample(s); "
                f"{type(self).__name__} needs groups of at least {self.min_group_size()} (use the GroupQueue)"
            )

    def _group_metrics(self, seq_rewards, groups, advantages, mask) -> dict[str, float]:
        _, std = group_mean_std(seq_rewards, groups)
        n_groups = int(groups.max()) + 1
        flat = torch.zeros(n_groups, dtype=torch.bool).index_fill_(0, groups[std == 0], True)
        return {
            "learner/groups": float(n_groups),
            "learner/group_size_mean": len(groups) / n_groups,
            "learner/zero_std_groups": flat.float().mean().item(),  # groups whose samples all tie: no signal
            "learner/advantage_mean": masked_mean(advantages, mask).item(),
            "learner/advantage_abs_mean": masked_mean(advantages.abs(), mask).item(),
        }

    def _train(self, tb, groups, ratio_ref, weights, advantages, ref_logprobs, has_ref) -> dict[str, float]:
        """`epochs` passes over shuffled minibatches (`minibatch_rows`), stopped early past
        target_kl; the mean of each statistic, and how many updates were applied."""
        stats: list[dict[str, float]] = []
        minibatches: list[torch.Tensor] = []
        for epoch in range(self.cfg.epochs):
            if epoch == 0 or self.cfg.reshuffle_each_epoch:
                minibatches = minibatch_rows(groups, self.cfg.minibatch_size, self.cfg.minibatch_unit, self.shuffle_gen)
            for idx in minibatches:
                ref = None if ref_logprobs is None else ref_logprobs[idx]
                stats.append(
                    self._update(tb.select(idx), ratio_ref[idx], weights[idx], advantages[idx], ref, has_ref[idx])
                )
                if stats[-1]["learner/early_stopped"]:
                    return mean_stats(stats)
        return mean_stats(stats)

    def _update(self, sub: TokenBatch, old_logprobs, weights, advantages, ref_logprobs, has_ref) -> dict[str, float]:
        """One gradient step on a minibatch (rows already selected, trimmed here)."""
        width = sub.response_mask.shape[1]
        old_logprobs, weights, advantages = (x[:, :width].to(self.device) for x in (old_logprobs, weights, advantages))
        mask = sub.response_mask.to(self.device)
        logits = self.forward(sub)
        logprobs = token_logprobs(logits, sub.response_ids.to(self.device))
        mode = self.cfg.loss_aggregation
        pg_loss = aggregate_token_losses(
            clipped_token_losses(logprobs, old_logprobs, advantages, self.cfg.clip_coef, weights),
            mask,
            mode,
            self.max_new_tokens,
        )
        loss = pg_loss
        stats: dict[str, float] = {}
        if ref_logprobs is not None:
            ref = ref_logprobs[:, :width].to(self.device)
            estimator = kl_k2 if self.cfg.kl_estimator == "k2" else kl_k3
            kl_tokens = estimator(logprobs, ref) * has_ref.to(self.device, logprobs.dtype)[:, None]
            kl_loss = aggregate_token_losses(kl_tokens, mask, mode, self.max_new_tokens)
            loss = loss + self.kl_ctl.value * kl_loss
            stats["learner/kl_loss"] = kl_loss.item()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {loss.item()} (policy {pg_loss.item()}) at policy_version {self.policy_version}"
            )
        with torch.no_grad():
            ratio = torch.exp(logprobs - old_logprobs)
            stats.update(
                {
                    "learner/policy_loss": pg_loss.item(),
                    "learner/entropy": entropy_from_logits(logits.detach(), mask).item(),
                    "learner/clip_fraction": masked_mean(
                        ((ratio - 1.0).abs() > self.cfg.clip_coef).to(ratio.dtype), mask
                    ).item(),
                    "learner/approx_kl": masked_mean(kl_k3(old_logprobs, logprobs), mask).item(),
                }
            )
        if kl_early_stop(stats["learner/approx_kl"], self.cfg.target_kl):
            return {**stats, "learner/early_stopped": 1.0, "learner/updates": 0.0}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        return {**stats, "learner/grad_norm": grad_norm.item(), "learner/early_stopped": 0.0, "learner/updates": 1.0}

    # ---- weights, checks, checkpoints ---------------------------------------------------
    def logprobs(self, prompt_ids: Sequence[list[int]], response_ids: Sequence[list[int]]) -> list[list[float]]:
        """Teacher-forced log pi(a_t | s_t) (logits / temperature) with the current weights."""
        logps = self._evaluate(collate(prompt_ids, response_ids, self._pad_id()))
        return [logps[i, : len(r)].tolist() for i, r in enumerate(response_ids)]

    def save(self, path: str) -> None:
        """Checkpoint model (HF dir), optimizer, version, step, shuffle rng."""
        save_checkpoint(
            path,
            model=self.model,
            tokenizer=self.tokenizer,
            extra_state={},
            optimizer_state=self.optimizer.state_dict(),
            rng_state={"shuffle": self.shuffle_gen.get_state()},
            meta={
                "policy_version": self.policy_version,
                "step": self.step_count,
                "temperature": self.temperature,
                "seed": self.seed,
                "algorithm": type(self).__name__,
                "kl_controller": self.kl_ctl.state_dict(),
            },
        )

    def restore(self, path: str) -> None:
        """Load everything `save` wrote; FileNotFoundError naming the path if it is empty or missing."""
        ckpt = load_checkpoint(path, map_location="cpu")
        ckpt.load_model_into(self.model)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.shuffle_gen.set_state(ckpt.rng_state["shuffle"])
        self.policy_version, self.step_count = int(ckpt.meta["policy_version"]), int(ckpt.meta["step"])
        if "kl_controller" in ckpt.meta:
            self.kl_ctl.load_state_dict(ckpt.meta["kl_controller"])


def broadcast(seq_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] per-sequence values -> [B, T] on every valid token."""
    return seq_values.to(mask.dtype)[:, None] * mask


__all__ = [
    "LOSS_AGGREGATIONS",
    "CriticFreeLearner",
    "aggregate_token_losses",
    "broadcast",
    "clipped_token_losses",
    "group_index",
    "group_mean_std",
    "group_sizes",
    "minibatch_rows",
    "returns_to_go",
]
