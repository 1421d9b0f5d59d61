"""PPO learner for RLHF: a Hugging Face causal LM policy with a value head on its trunk.

Algorithm (Schulman et al. 2017 PPO; Ziegler et al. 2019 and Ouyang et al. 2022 for the RLHF
reward): for each batch of scored rollouts,
  1. recompute, with the current parameters and no gradient, the log-probs of the sampled
     response tokens (logits / temperature) and the values (the "old" policy of PPO);
  2. token rewards = -kl_coef * (logp - ref_logp) on every response token + the sequence
     reward at the last token (`learner.kl.kl_penalised_rewards`), the sequence reward first
     normalised if `ppo.reward_normalization` says so (`learner.reward_norm`);
  3. GAE(gamma, gae_lambda) over response tokens, optional advantage whitening;
  4. ppo_epochs passes over shuffled minibatches of minibatch_size rollouts of
     clipped surrogate + vf_coef * value loss - ent_coef * entropy (+ ptx_coef * the LM loss
     on pretraining/demonstration text: PPO-ptx, InstructGPT), grad-norm clip, Adam at the step's
     learning rate (`ppo.lr_schedule`, `learner/schedule.py`);
     `ppo.objective: kl_penalty` replaces the clipped surrogate by PPO's KL-penalty form
     -ratio * A + beta * KL(pi_old || pi_theta) with beta halved/doubled outside
     [target/1.5, target*1.5] after each batch (Schulman et al. 2017, sec. 4);
  5. policy_version += 1; the (adaptive) KL controller sees the batch's mean KL to the ref.

Asynchronous training (`ppo.correction`, default `decoupled`): samples up to
rollout.max_policy_lag versions old are trained on. Three policies meet: the behaviour policy
mu (the log-probs the sampler recorded), the proximal policy pi_prox (step 1's recomputed
log-probs) and pi_theta. Decoupled PPO (Hilton et al. 2021; AReaL, Fu et al. 2025) clips the
ratio pi_theta / pi_prox and weights each token by min(pi_prox / mu, is_cap) (token-level
truncated IS); `tis_sequence` / `mask_sequence` use one weight per sequence; `behavior` clips
against mu without weights; `none` ignores staleness. The weights are fixed for the batch
(computed once, before the update) and reported as learner/is_weight_mean, _max and
is_truncated_frac (raw, before truncation).

Deviations / choices:
- On samples of the learner's own version mu and pi_prox agree up to engine numerics; their
  gap is reported as `learner/logprob_mismatch` (the rollout/trainer mismatch diagnostic), and
  the decoupled weight absorbs it.
- Every log-prob in the loss and the KL is of the tempered full softmax, the distribution the
  engines sample from: top-k sampling is rejected for PPO at config time (`rollout.top_k`).
- Items without `terms.ref_logprobs` get no KL penalty; `learner/kl_ref` (and the adaptive
  KL update) use only items that have them.
- The model stays in eval mode (dropout off) so the first minibatch has ratio exactly 1.
- The value head is `Linear(hidden, 1)`, zero-initialised, on the final (normed) hidden state;
  the only randomness is the minibatch shuffle, drawn from the learner's own generator.
- Sequences are prompt + response, right-padded; each response token t is predicted at
  position len(prompt) - 1 + t. Full logits are computed (fine for small models).

Run: built by the services layer from the config; tests: `pytest tests/unit/test_ppo_learner.py`
and `pytest -m learning tests/learning/test_ppo_learns.py`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shoal.core import MetricsSink, NullMetrics
from shoal.learner.checkpoint import load_checkpoint, prefixed, save_checkpoint
from shoal.learner.kl import kl_penalised_rewards, make_kl_controller
from shoal.learner.losses import (
    adapt_kl_penalty_coef,
    behaviour_weights,
    entropy_from_logits,
    gae,
    kl_early_stop,
    kl_penalty_policy_loss,
    masked_whiten,
    ppo_policy_loss,
    token_logprobs,
    value_loss,
)
from shoal.learner.policy import (  # noqa: F401
    PolicyLearner,
    TokenBatch,
    batch_metrics,
    collate,
    mean_stats,
    validate_items,
)
from shoal.learner.ppo.ptx import ptx_loss
from shoal.learner.reward_norm import RewardNormalizer
from shoal.models import load_policy
from shoal.tensors import adam, gather_positions
from shoal.types import SampledBatch


class PPOLearner(PolicyLearner):
    """The Learner role for PPO-RLHF; see the module docstring."""

    def __init__(
        self,
        model_path: str,
        ppo_cfg: Any,
        reward_cfg: Any,
        *,
        temperature: float = 1.0,
        seed: int = 0,
        device: str = "cpu",
        metrics: MetricsSink | None = None,
        ptx: Any = None,
        total_steps: int | None = None,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.ppo, self.temperature, self.device = ppo_cfg, float(temperature), torch.device(device)
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.model, self.tokenizer = load_policy(model_path)
        self.model.to(self.device).eval()
        hidden = self.model.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1).to(self.device)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.params = [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = adam(self.params, ppo_cfg.learning_rate)
        self.kl_ctl = make_kl_controller(reward_cfg)
        self.shuffle_gen = torch.Generator().manual_seed(seed)
        self.policy_version, self.step_count, self.seed = 0, 0, seed
        self.total_steps = total_steps
        self.ptx = ptx  # PtxBatches (learner/ppo/ptx.py) when ppo.ptx_coef > 0
        self.kl_penalty_coef = float(getattr(ppo_cfg, "kl_penalty_coef", 1.0))
        self.reward_norm = RewardNormalizer(getattr(ppo_cfg, "reward_normalization", "none"))

    # ---- model evaluation -------------------------------------------------------------
    def forward(self, tb: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Tempered logits [B, T, V] and values [B, T] at the response tokens."""
        out = self.model(
            input_ids=tb.input_ids.to(self.device),
            attention_mask=tb.attention_mask.to(self.device),
            output_hidden_states=True,
        )
        pos = tb.response_pos.to(self.device)
        logits = gather_positions(out.logits, pos).float() / self.temperature
        values = self.value_head(gather_positions(out.hidden_states[-1], pos).float()).squeeze(-1)
        return logits, values

    @torch.no_grad()
    def _evaluate(self, tb: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """No-grad log-probs and values [B, T] of every row, in chunks of minibatch_size."""
        logps, values = torch.zeros(tb.response_mask.shape), torch.zeros(tb.response_mask.shape)
        for idx in torch.arange(len(tb.input_ids)).split(self.ppo.minibatch_size):
            sub = tb.select(idx)
            logits, v = self.forward(sub)
            width = sub.response_mask.shape[1]
            logps[idx, :width] = token_logprobs(logits, sub.response_ids.to(self.device)).cpu()
            values[idx, :width] = v.cpu()
        return logps * tb.response_mask, values * tb.response_mask

    # ---- the PPO step -----------------------------------------------------------------
    def step(self, batch: SampledBatch) -> dict[str, float]:
        """One PPO update on a batch of ScoredRollout; returns learner/ and reward/ metrics."""
        start = time.perf_counter()
        items = list(batch.items)
        validate_items(items)
        tb = collate(
            [it.rollout.prompt.token_ids for it in items], [it.rollout.response_ids for it in items], self._pad_id()
        )
        old_logprobs, old_values = self._evaluate(tb)
        ref_logprobs, has_ref = self._ref_logprobs(items, old_logprobs)
        behaviour = self._behaviour_logprobs(items, old_logprobs)
        correction = self.ppo.correction
        ratio_logprobs = behaviour if correction == "behavior" else old_logprobs
        is_weights, is_stats = behaviour_weights(old_logprobs, behaviour, tb.response_mask, correction, self.ppo.is_cap)
        kl_coef = self.kl_ctl.value
        seq_rewards = self.reward_norm(torch.tensor([float(it.reward) for it in items]))
        rewards = kl_penalised_rewards(old_logprobs, ref_logprobs, seq_rewards, tb.response_mask, kl_coef)
        advantages, returns = gae(rewards, old_values, tb.response_mask, self.ppo.gamma, self.ppo.gae_lambda)
        if self.ppo.whiten_advantages:
            advantages = masked_whiten(advantages, tb.response_mask)
        lr = self.scheduled_lr(self.ppo)
        train = self._train(tb, ratio_logprobs, is_weights, old_values, advantages, returns)
        metrics = {
            **train,
            **is_stats,
            **batch_metrics(items, tb, old_logprobs, ref_logprobs, has_ref, self.policy_version),
            **self.reward_norm.metrics(),
        }
        if self.ppo.objective == "kl_penalty":
            metrics["learner/kl_penalty_coef"] = self.kl_penalty_coef
            self.kl_penalty_coef = adapt_kl_penalty_coef(
                self.kl_penalty_coef, train["learner/approx_kl"], self.ppo.kl_penalty_target
            )
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

    def _train(self, tb: TokenBatch, old_logprobs, is_weights, old_values, advantages, returns) -> dict[str, float]:
        """ppo_epochs passes over shuffled minibatches, stopped early past ppo.target_kl; the
        mean of each minibatch statistic, and how many updates were applied."""
        stats: list[dict[str, float]] = []
        for _ in range(self.ppo.ppo_epochs):
            perm = torch.randperm(len(tb.input_ids), generator=self.shuffle_gen)
            for idx in perm.split(self.ppo.minibatch_size):
                rows = (x[idx] for x in (old_logprobs, is_weights, old_values, advantages, returns))
                stats.append(self._update(tb.select(idx), *rows))
                if stats[-1]["learner/early_stopped"]:
                    return mean_stats(stats)
        return mean_stats(stats)

    def _update(self, sub: TokenBatch, old_logprobs, is_weights, old_values, advantages, returns) -> dict[str, float]:
        """One gradient step on a minibatch (tensors already row-selected, trimmed here)."""
        width = sub.response_mask.shape[1]
        old_logprobs, is_weights, old_values, advantages, returns = (
            x[:, :width].to(self.device) for x in (old_logprobs, is_weights, old_values, advantages, returns)
        )
        mask = sub.response_mask.to(self.device)
        logits, values = self.forward(sub)
        logprobs = token_logprobs(logits, sub.response_ids.to(self.device))
        if self.ppo.objective == "kl_penalty":
            pg_loss, approx_kl = kl_penalty_policy_loss(
                logprobs, old_logprobs, advantages, mask, self.kl_penalty_coef, is_weights
            )
            clip_fraction = torch.zeros(())
        else:
            pg_loss, clip_fraction, approx_kl = ppo_policy_loss(
                logprobs, old_logprobs, advantages, mask, self.ppo.clip_coef, is_weights
            )
        v_loss = value_loss(values, old_values, returns, mask, self.ppo.vf_clip)
        entropy = entropy_from_logits(logits if self.ppo.ent_coef > 0 else logits.detach(), mask)
        loss = pg_loss + self.ppo.vf_coef * v_loss - self.ppo.ent_coef * entropy
        ptx = (
            ptx_loss(self.model, self.ptx.next(), self.device)
            if self.ptx is not None and self.ppo.ptx_coef > 0
            else None
        )
        if ptx is not None:
            loss = loss + self.ppo.ptx_coef * ptx
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite PPO loss {loss.item()} (policy {pg_loss.item()}, value {v_loss.item()}) at policy_version {self.policy_version}"
            )
        stats = {
            "learner/policy_loss": pg_loss.item(),
            "learner/value_loss": v_loss.item(),
            "learner/entropy": entropy.item(),
            **({"learner/ptx_loss": ptx.item()} if ptx is not None else {}),
            "learner/clip_fraction": clip_fraction.item(),
            "learner/approx_kl": approx_kl.item(),
        }
        if kl_early_stop(stats["learner/approx_kl"], self.ppo.target_kl):
            return {**stats, "learner/early_stopped": 1.0, "learner/updates": 0.0}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.ppo.max_grad_norm)
        self.optimizer.step()
        return {**stats, "learner/grad_norm": grad_norm.item(), "learner/early_stopped": 0.0, "learner/updates": 1.0}

    # ---- weights, checks, checkpoints -------------------------------------------------
    def logprobs(self, prompt_ids: Sequence[list[int]], response_ids: Sequence[list[int]]) -> list[list[float]]:
        """Teacher-forced log pi(a_t | s_t) (logits / temperature) with the current weights."""
        tb = collate(prompt_ids, response_ids, self._pad_id())
        logps, _ = self._evaluate(tb)
        return [logps[i, : len(r)].tolist() for i, r in enumerate(response_ids)]

    def save(self, path: str) -> None:
        """Checkpoint model (HF dir), value head, optimizer, KL controller, version, step, rng."""
        save_checkpoint(
            path,
            model=self.model,
            tokenizer=self.tokenizer,
            extra_state=prefixed(self.value_head.state_dict(), "value_head."),
            optimizer_state=self.optimizer.state_dict(),
            rng_state={"shuffle": self.shuffle_gen.get_state()},
            meta={
                "policy_version": self.policy_version,
                "step": self.step_count,
                "kl_controller": self.kl_ctl.state_dict(),
                "temperature": self.temperature,
                "seed": self.seed,
                "kl_penalty_coef": self.kl_penalty_coef,
                "reward_moments": self.reward_norm.moments.state_dict(),
                **({"ptx_rng": _rng_state_json(self.ptx.rng)} if self.ptx is not None else {}),
            },
        )

    def restore(self, path: str) -> None:
        """Load everything `save` wrote; FileNotFoundError naming the path if it is empty or missing."""
        ckpt = load_checkpoint(path, map_location="cpu")
        ckpt.load_model_into(self.model)
        self.value_head.load_state_dict(ckpt.extra("value_head."))
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.kl_ctl.load_state_dict(ckpt.meta["kl_controller"])
        self.shuffle_gen.set_state(ckpt.rng_state["shuffle"])
        self.policy_version, self.step_count = int(ckpt.meta["policy_version"]), int(ckpt.meta["step"])
        self.kl_penalty_coef = float(ckpt.meta.get("kl_penalty_coef", self.kl_penalty_coef))
        if "reward_moments" in ckpt.meta:
            self.reward_norm.moments.load_state_dict(ckpt.meta["reward_moments"])
        if self.ptx is not None and "ptx_rng" in ckpt.meta:
            version, state, gauss = ckpt.meta["ptx_rng"]
            self.ptx.rng.setstate((version, tuple(state), gauss))


def _rng_state_json(rng: Any) -> list:
    version, state, gauss = rng.getstate()
    return [version, list(state), gauss]
