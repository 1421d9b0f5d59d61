"""DPO-family learning: DPO, IPO, conservative DPO and RPO's NLL term, on preference pairs
(offline from a data set, or online from the rollout workers' ranked answers).

Rafailov et al. 2023 (the seed notes' closed form of KL-regularised RLHF): with the implicit
reward r(x, y) = beta * log pi(y | x) / pi_ref(y | x) and the margin
    h = log pi(y_w | x) / pi_ref(y_w | x) - log pi(y_l | x) / pi_ref(y_l | x)
(sequence log-probs: sums over the answer's tokens, EOS included), per pair:
    sigmoid (DPO)         -log sigmoid(beta h)
    sigmoid, eps > 0      -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)   (cDPO)
    ipo                   (h - 1 / (2 beta))^2                                       (Azar et al. 2023)
    + rpo_alpha * the mean token NLL of the chosen answers                           (RPO, Pang et al. 2024)

The step, for a batch of PreferencePair (from `buffer/pairs.py`):
  1. one right-padded batch of 2B rows: the chosen answers, then the rejected ones;
  2. the policy's token log-probs (with gradient) and the frozen reference's (no gradient);
  3. the loss above, mean over pairs; grad-norm clip; Adam; policy_version += 1.

Reference: a frozen copy of the SFT policy in the learner, evaluated on every batch. Not cached
per pair and not computed by scorer actors: online pairs are new at every step (a cache buys
nothing there), the actors' reference scorer returns tempered log-probs of sampled tokens only,
and the full reference distribution gives the exact KL metric below for one extra no-grad
forward pass per step. Iterative DPO (`ref_refresh_interval` N > 0): every N steps the reference
becomes a copy of the policy (then it is checkpointed with the policy).

Metrics (`learner/...`): dpo_loss, rewards_chosen / rewards_rejected (the implicit rewards,
beta * log-ratio), reward_margin, preference_accuracy (implicit reward of chosen > rejected),
kl_ref (sum over the chosen answer's tokens of the exact KL(pi || pi_ref) of the next-token
distributions, mean over pairs), nll_chosen, logps_chosen / logps_rejected.

Deviations: log-probs at temperature 1 (the model's own distribution; sampling temperature only
matters when generating); one gradient step per batch (as TRL's DPOTrainer); the IPO loss on
summed log-probs as in the paper (TRL averages over tokens).

Tests: `pytest tests/unit/test_dpo.py` (losses against slow loops and a hand case).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from shoal.core import MetricsSink, NullMetrics
from shoal.learner.checkpoint import load_checkpoint, prefixed, save_checkpoint
from shoal.learner.losses import token_logprobs
from shoal.learner.policy import PolicyLearner, TokenBatch, collate
from shoal.models import load_policy
from shoal.tensors import adam, gather_positions
from shoal.types import PreferencePair, SampledBatch


# ---- pure math ------------------------------------------------------------------------------
def preference_losses(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
    loss: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B] sequence log-probs of chosen / rejected under the policy and the reference ->
    ([B] losses, [B] implicit rewards of chosen, [B] of rejected; rewards detached)."""
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    h = chosen_logratio - rejected_logratio
    if loss == "sigmoid":
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"loss {loss!r} is not one of ('sigmoid', 'ipo')")
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] token log-probs and mask -> [B] sums over each answer's tokens."""
    return (token_logps * mask).sum(dim=1)


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """[B, T, V] logits of pi and pi_ref -> [B, T] exact KL(pi || pi_ref) of each next-token distribution."""
    logp, ref_logp = F.log_softmax(logits, dim=-1), F.log_softmax(ref_logits, dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(dim=-1)


def pair_rows(items: Sequence[PreferencePair], pad_id: int) -> TokenBatch:
    """2B rows: every pair's prompt + chosen answer, then every pair's prompt + rejected answer."""
    prompts = [it.prompt.token_ids for it in items]
    return collate(prompts + prompts, [it.chosen_ids for it in items] + [it.rejected_ids for it in items], pad_id)


def validate_pairs(items: Sequence[Any]) -> None:
    """ValueError naming the item that cannot be trained on."""
    if not items:
        raise ValueError("DPOLearner.step got an empty batch")
    for i, it in enumerate(items):
        if not isinstance(it, PreferencePair):
            raise ValueError(f"batch item {i} is a {type(it).__name__}, DPOLearner needs PreferencePair")
        if not it.chosen_ids or not it.rejected_ids:
            raise ValueError(f"pair {it.pair_id}: an empty answer")


# ---- the learner ----------------------------------------------------------------------------
class DPOLearner(PolicyLearner):
    """The Learner role for the DPO family: the policy, its frozen reference, Adam."""

    def __init__(
        self,
        model_path: str,
        cfg: Any,
        *,
        seed: int = 0,
        device: str = "cpu",
        metrics: MetricsSink | None = None,
    ) -> None:
        self.cfg, self.device, self.seed = cfg, torch.device(device), seed
        self.metrics = metrics if metrics is not None else NullMetrics()
        torch.manual_seed(seed)
        self.model, self.tokenizer = load_policy(model_path)
        self.model.to(self.device).eval()  # dropout off: the first step's policy equals the reference
        self.reference, _ = load_policy(model_path)
        self.reference.to(self.device).eval().requires_grad_(False)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = adam(self.params, cfg.learning_rate)
        self.policy_version, self.step_count = 0, 0
        self.reference_version = 0  # the policy_version the reference was copied from (0: SFT)

    def _logits(self, model: Any, tb: TokenBatch) -> torch.Tensor:
        out = model(input_ids=tb.input_ids.to(self.device), attention_mask=tb.attention_mask.to(self.device))
        return gather_positions(out.logits, tb.response_pos.to(self.device)).float()

    def step(self, batch: SampledBatch) -> dict[str, float]:
        """One gradient step on a batch of PreferencePair; returns learner/ metrics."""
        start = time.perf_counter()
        items = list(batch.items)
        validate_pairs(items)
        n, cfg = len(items), self.cfg
        tb = pair_rows(items, self._pad_id())
        mask, tokens = tb.response_mask.to(self.device), tb.response_ids.to(self.device)
        logits = self._logits(self.model, tb)
        with torch.no_grad():
            ref_logits = self._logits(self.reference, tb)
        token_logps = token_logprobs(logits, tokens)
        logps = sequence_logps(token_logps, mask)
        ref_logps = sequence_logps(token_logprobs(ref_logits, tokens), mask)
        losses, r_chosen, r_rejected = preference_losses(
            logps[:n], logps[n:], ref_logps[:n], ref_logps[n:],
            beta=cfg.beta, loss=cfg.loss, label_smoothing=cfg.label_smoothing,
        )  # fmt: skip
        nll_chosen = -(token_logps[:n] * mask[:n]).sum() / mask[:n].sum()
        loss = losses.mean() + cfg.rpo_alpha * nll_chosen
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite DPO loss {loss.item()} at policy_version {self.policy_version}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        self.policy_version += 1
        self.step_count += 1
        refreshed = self._maybe_refresh_reference()
        with torch.no_grad():
            kl = (token_kl(logits[:n].detach(), ref_logits[:n]) * mask[:n]).sum(dim=1)
        metrics = {
            "learner/dpo_loss": losses.mean().item(),
            "learner/loss": loss.item(),
            "learner/rewards_chosen": r_chosen.mean().item(),
            "learner/rewards_rejected": r_rejected.mean().item(),
            "learner/reward_margin": (r_chosen - r_rejected).mean().item(),
            "learner/preference_accuracy": (r_chosen > r_rejected).float().mean().item(),
            "learner/kl_ref": kl.mean().item(),
            "learner/nll_chosen": nll_chosen.item(),
            "learner/logps_chosen": logps[:n].mean().item(),
            "learner/logps_rejected": logps[n:].mean().item(),
            "learner/grad_norm": grad_norm.item(),
            "learner/pairs": float(n),
            "learner/policy_version": float(self.policy_version),
            "learner/reference_version": float(self.reference_version),
            "learner/step_s": time.perf_counter() - start,
        }
        if refreshed:
            metrics["learner/reference_refreshed"] = 1.0
        self.metrics.log(metrics, step=self.policy_version)
        return metrics

    def _maybe_refresh_reference(self) -> bool:
        """Iterative DPO: every `ref_refresh_interval` steps the reference becomes the policy."""
        every = self.cfg.ref_refresh_interval
        if not every or self.policy_version % every:
            return False
        self.reference.load_state_dict(self.model.state_dict())
        self.reference_version = self.policy_version
        return True

    def save(self, path: str) -> None:
        """Checkpoint the policy (HF dir), optimizer, version and step (the reference is the SFT model)."""
        save_checkpoint(
            path,
            model=self.model,
            tokenizer=self.tokenizer,
            extra_state=prefixed(self.reference.state_dict(), "reference.") if self.reference_version else {},
            optimizer_state=self.optimizer.state_dict(),
            rng_state={},
            meta={
                "policy_version": self.policy_version,
                "step": self.step_count,
                "seed": self.seed,
                "algorithm": type(self).__name__,
                "reference_version": self.reference_version,
            },
        )

    def restore(self, path: str) -> None:
        """Load everything `save` wrote; FileNotFoundError naming the path if it is empty or missing."""
        ckpt = load_checkpoint(path, map_location="cpu")
        ckpt.load_model_into(self.model)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.policy_version, self.step_count = int(ckpt.meta["policy_version"]), int(ckpt.meta["step"])
        self.reference_version = int(ckpt.meta.get("reference_version", 0))
        if self.reference_version:
            self.reference.load_state_dict(ckpt.extra("reference."))


__all__ = ["DPOLearner", "pair_rows", "preference_losses", "sequence_logps", "token_kl"]
