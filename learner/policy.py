"""The policy-LM pieces the policy-gradient learners share (PPO and the critic-free GRPO / RLOO
/ REINFORCE++): prompt + response batches (`TokenBatch`, `collate`), item validation, the
rows' behaviour and reference log-probs, batch metrics (reward, KL to the reference,
rollout/trainer log-prob mismatch) and the published weights. Pure torch; no Ray."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from shoal.learner.kl import kl_k1
from shoal.learner.schedule import lr_factor, set_lr
from shoal.tensors import pad_rows
from shoal.types import ScoredRollout, VersionedWeights


@dataclass
class TokenBatch:
    """Prompt + response rows, right-padded. input_ids/attention_mask: [B, L];
    response_pos/response_ids/response_mask: [B, T] (pos = where the token's logits are)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_pos: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor

    def select(self, idx: torch.Tensor) -> TokenBatch:
        """Rows idx, trimmed to their longest sequence and response."""
        seq_len = int(self.attention_mask[idx].sum(dim=1).max())
        resp_len = int(self.response_mask[idx].sum(dim=1).max())
        return TokenBatch(
            self.input_ids[idx, :seq_len],
            self.attention_mask[idx, :seq_len],
            self.response_pos[idx, :resp_len],
            self.response_ids[idx, :resp_len],
            self.response_mask[idx, :resp_len],
        )


def collate(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int) -> TokenBatch:
    """Concatenate prompt + response per row, right-pad, and index the response tokens."""
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        if len(p) == 0 or len(r) == 0:
            raise ValueError(f"row {i}: prompt has {len(p)} tokens and response {len(r)}; both need >= 1")
    seqs = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    positions = [[len(p) - 1 + t for t in range(len(r))] for p, r in zip(prompt_ids, response_ids)]
    return TokenBatch(
        input_ids=pad_rows(seqs, pad_id, torch.long),
        attention_mask=pad_rows([[1] * len(s) for s in seqs], 0, torch.long),
        response_pos=pad_rows(positions, 0, torch.long),
        response_ids=pad_rows(response_ids, pad_id, torch.long),
        response_mask=pad_rows([[1.0] * len(r) for r in response_ids], 0.0, torch.float32),
    )


def validate_items(items: Sequence[Any]) -> None:
    """ValueError naming the item that cannot be trained on."""
    if not items:
        raise ValueError("PPOLearner.step got an empty batch")
    for i, it in enumerate(items):
        if not isinstance(it, ScoredRollout):
            raise ValueError(f"batch item {i} is a {type(it).__name__}, PPOLearner needs ScoredRollout")
        ref, n = it.terms.ref_logprobs, len(it.rollout.response_ids)
        if ref is not None and len(ref) != n:
            raise ValueError(f"item {it.rollout.prompt.prompt_id}: {len(ref)} ref_logprobs for {n} response tokens")
        if not math.isfinite(it.reward):
            raise ValueError(f"item {it.rollout.prompt.prompt_id}: non-finite reward {it.reward}")


class PolicyLearner:
    """Shared methods of the learners whose `model` is a Hugging Face causal LM policy (with
    `tokenizer` and `policy_version`)."""

    model: Any
    tokenizer: Any
    optimizer: Any
    policy_version: int
    total_steps: int | None  # the run's length, over which `lr_schedule` runs

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else 0)

    def _behaviour_logprobs(self, items: Sequence[ScoredRollout], like: torch.Tensor) -> torch.Tensor:
        """[B, T] log mu: the log-probs the sampling engine recorded (the behaviour policy of each,
        possibly stale, sample), zero on padding."""
        out = torch.zeros_like(like)
        for i, it in enumerate(items):
            out[i, : len(it.rollout.logprobs)] = torch.tensor(it.rollout.logprobs)
        return out

    def _ref_logprobs(
        self, items: Sequence[ScoredRollout], old_logprobs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] reference log-probs (the policy's own where absent: no penalty) and [B] has-ref flags."""
        ref = old_logprobs.clone()
        has_ref = torch.zeros(len(items), dtype=torch.bool)
        for i, it in enumerate(items):
            if it.terms.ref_logprobs is not None:
                ref[i, : len(it.terms.ref_logprobs)] = torch.tensor(it.terms.ref_logprobs)
                has_ref[i] = True
        return ref, has_ref

    def scheduled_lr(self, cfg: Any) -> float:
        """Set the optimizer's learning rate for the update about to be taken - step
        `policy_version` of `total_steps` under `cfg.lr_schedule` (learner/schedule.py) - and
        return it."""
        schedule = getattr(cfg, "lr_schedule", "constant")
        if schedule != "constant" and self.total_steps is None:
            raise ValueError(f"lr_schedule {schedule!r} needs the run's total_steps")
        factor = lr_factor(self.policy_version, self.total_steps or 1, schedule, getattr(cfg, "lr_min_ratio", 1.0))
        lr = cfg.learning_rate * factor
        set_lr(self.optimizer, lr)
        return lr

    def get_weights(self) -> VersionedWeights:
        """The policy LM's state_dict (HF names), detached CPU clones (no value head)."""
        tensors = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return VersionedWeights(version=self.policy_version, tensors=tensors)


def batch_metrics(items, tb: TokenBatch, old_logprobs, ref_logprobs, has_ref, version: int) -> dict[str, float]:
    """reward/*, kl_ref, logprob_mismatch, lengths and token counts of one batch."""
    mask = tb.response_mask
    rewards = torch.tensor([float(it.reward) for it in items])
    lengths = mask.sum(dim=1)
    out = {
        "reward/mean": rewards.mean().item(),
        "reward/std": rewards.std(unbiased=False).item(),
        "learner/response_length": lengths.mean().item(),
        "learner/trained_tokens": lengths.sum().item(),
    }
    if has_ref.any():
        out["learner/kl_ref"] = (kl_k1(old_logprobs, ref_logprobs) * mask).sum(dim=1)[has_ref].mean().item()
    golds = [it.terms.metrics_only["gold"] for it in items if "gold" in it.terms.metrics_only]
    if golds:
        out["reward/gold_mean"] = sum(golds) / len(golds)
    mismatch = logprob_mismatch(items, old_logprobs, version)
    if mismatch is not None:
        out["learner/logprob_mismatch"] = mismatch
    return out


def logprob_mismatch(items, old_logprobs: torch.Tensor, version: int) -> float | None:
    """Mean |rollout logprob - learner logprob| over tokens of items sampled at `version`; None if none."""
    diffs = [
        (torch.tensor(it.rollout.logprobs) - old_logprobs[i, : len(it.rollout.logprobs)]).abs()
        for i, it in enumerate(items)
        if it.rollout.policy_version == version
    ]
    return torch.cat(diffs).mean().item() if diffs else None


def mean_stats(stats: list[dict[str, float]]) -> dict[str, float]:
    """Per-minibatch statistics of one batch -> their means; `learner/updates` and
    `learner/early_stopped` (set by the update loops) are summed instead."""
    keys = {k for s in stats for k in s}
    summed = {"learner/updates", "learner/early_stopped"}
    out = {}
    for k in keys:
        vals = [s[k] for s in stats if k in s]
        out[k] = sum(vals) if k in summed else sum(vals) / len(vals)
    return out
