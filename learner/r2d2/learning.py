"""R2D2Learner: recurrent per-utterance double-Q learning from prioritized sequence replay.

Kapturowski et al. 2019 (R2D2), per utterance (ALGORITHMS.md "For a language agent"): a
`SampledBatch` of `SequenceItem`s (burn_in + trace + 1 turns, one stored start state each;
`buffer.sequences.cut_episode`) ->
1. encode every observation / action / candidate with the frozen `TurnEncoder` (cached);
2. unroll the online and the target `RecurrentQNetwork` from the item's start state
   (`start_state="stored"`; `"zero"` ignores it, the paper's worst case) over all L positions;
   the first `burn_in_length` positions carry no loss and, unless `burn_in_gradients`, no
   gradient;
3. n-step double-Q targets with value rescaling (`learner.q_math.n_step_double_q_targets`; the
   max is over the candidate set: the fixed `action_set`, or `candidate_fn(observation)`);
4. loss = masked mean of IS-weight * 0.5 * td^2 with mask valid * trace_positions; Adam step
   (grad-norm clipped); priorities eta max|td| + (1 - eta) mean|td| over the same mask;
5. the target network is copied every `target_update_period` steps.
`step` returns metrics (the Learner protocol); the new priorities (one per item, in batch
order) are kept in `self.last_priorities`, and `step_with_priorities` returns (metrics,
priorities) - the caller feeds them to `PrioritizedSequenceReplay.update_priorities(batch.keys, ...)`.
`core_lr_scale` trains the LSTM core at a fraction of the head's learning rate (1.0 = same);
the cue-recall proof uses 0.1: at full rate the core's training overwrites what the untrained
core wrote into the state at turns no loss ever reaches (see tests/learning/test_r2d2_cue_recall.py).

`dq_diagnostic(episodes)` is R2D2's staleness measure: for (episode, stored actor states)
pairs it cuts items, computes "true" states by running the CURRENT network over each whole
episode from its initial state, and compares Q at the first and last trace step when the
unroll starts from: zero state, zero state + burn-in, the stored state at the trace start
(no burn-in), and the stored state + burn-in:
    dQ = sum ||q(h_hat) - q(h)||_2 / sum |max_a q(h_hat)|   (sums over items and the two positions).
Deviation: the paper's per-sample ratio is aggregated as a ratio of sums here, because a
per-sample ratio explodes wherever max_a q(h_hat) is near 0 (common with rewards of +-1).
The paper's ordering: zero > burn-in only > stored > stored + burn-in.

Weights: `get_weights()` is the online Q network's state_dict (the encoder LM is frozen and
shared, so actors build it from the same model dir). Checkpoints use `learner.checkpoint`
(model/ = the encoder LM; extra_state = online and target Q networks).

No Ray. Tests: `pytest tests/unit/test_recurrent_q.py`, `pytest -m learning tests/learning/test_r2d2_cue_recall.py`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from shoal.buffer.sequences import cut_episode, item_length, trace_positions
from shoal.learner.checkpoint import load_checkpoint, prefixed, save_checkpoint
from shoal.learner.losses import masked_mean
from shoal.learner.q_math import n_step_double_q_targets, sequence_priorities
from shoal.learner.r2d2.config import R2D2Config
from shoal.learner.r2d2.networks import RecurrentQNetwork, TurnEncoder
from shoal.tensors import adam
from shoal.types import Episode, SampledBatch, SequenceItem, VersionedWeights


class R2D2Learner:
    """See the module docstring."""

    def __init__(
        self,
        network: RecurrentQNetwork,
        encoder: TurnEncoder,
        config: R2D2Config | None = None,
        action_set: Sequence[str] | None = None,
        candidate_fn: Callable[[str], list[str]] | None = None,
    ) -> None:
        if not action_set and candidate_fn is None:
            raise ValueError("R2D2Learner needs an action_set or a candidate_fn (the max over actions)")
        self.cfg = config or R2D2Config()
        self.network, self.encoder = network, encoder
        self.target = copy.deepcopy(network).eval()
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.action_set = list(action_set) if action_set else None
        self.candidate_fn = candidate_fn
        core = [p for p in network.core.parameters()]
        core_ids = {id(p) for p in core}
        rest = [p for p in network.parameters() if id(p) not in core_ids]
        self.optimizer = adam(
            [
                {"params": rest, "lr": self.cfg.learning_rate},
                {"params": core, "lr": self.cfg.learning_rate * self.cfg.core_lr_scale},
            ],
            self.cfg.learning_rate,
        )
        self.policy_version = 0
        self.step_count = 0
        self.last_priorities: list[float] = []

    # ---- batching ------------------------------------------------------------------------
    def _tensors(self, items: Sequence[SequenceItem]) -> dict[str, torch.Tensor]:
        L = item_length(self.cfg.burn_in_length, self.cfg.trace_length)
        for it in items:
            if len(it.observations) != L:
                raise ValueError(
                    f"item {it.episode_id}@{it.start} has {len(it.observations)} positions, learner expects burn_in + trace + 1 = {L}"
                )
        B, E = len(items), self.encoder.dim
        obs = self.encoder.encode([o for it in items for o in it.observations]).view(B, L, E)
        act = self.encoder.encode([a for it in items for a in it.actions]).view(B, L, E)
        if self.candidate_fn is None:
            cands = self.encoder.encode(self.action_set)
        else:
            rows = [self.candidate_fn(o) for it in items for o in it.observations]
            k = len(rows[0])
            if any(len(r) != k for r in rows):
                raise ValueError("candidate_fn must return the same number of candidates for every observation")
            cands = self.encoder.encode([c for r in rows for c in r]).view(B, L, k, E)
        return {
            "obs": obs,
            "act": act,
            "cands": cands,
            "rewards": torch.tensor([it.rewards for it in items], dtype=torch.float32),
            "dones": torch.tensor([it.dones for it in items], dtype=torch.float32),
            "mask": torch.tensor([it.mask for it in items], dtype=torch.float32),
            "start": torch.from_numpy(np.stack([np.asarray(it.start_state, dtype=np.float32) for it in items])),
        }

    def _unroll(
        self, net: RecurrentQNetwork, t: dict[str, torch.Tensor], grad_burn_in: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start = t["start"] if self.cfg.start_state == "stored" else torch.zeros_like(t["start"])
        q_all, q_taken, _ = net.unroll(
            start, t["obs"], t["act"], t["rewards"], t["mask"], t["cands"], self.cfg.burn_in_length, grad_burn_in
        )
        return q_all, q_taken

    # ---- the update ----------------------------------------------------------------------
    def step(self, batch: SampledBatch) -> dict[str, float]:
        metrics, _ = self.step_with_priorities(batch)
        return metrics

    def step_with_priorities(self, batch: SampledBatch) -> tuple[dict[str, float], list[float]]:
        if not batch.items:
            raise ValueError("R2D2Learner.step got an empty batch")
        t0 = time.perf_counter()
        self.network.train()
        t = self._tensors(batch.items)
        q_all, q_taken = self._unroll(self.network, t, self.cfg.burn_in_gradients)
        with torch.no_grad():
            q_target_all, _ = self._unroll(self.target, t, False)
        targets, valid = n_step_double_q_targets(
            t["rewards"],
            t["dones"],
            t["mask"],
            q_all.detach(),
            q_target_all,
            self.cfg.gamma,
            self.cfg.n_step,
            rescale=self.cfg.value_rescaling,
        )
        trace = torch.tensor(trace_positions(self.cfg.burn_in_length, self.cfg.trace_length)).unsqueeze(0)
        loss_mask = valid * trace
        weights = torch.tensor(
            batch.weights if batch.weights else [1.0] * len(batch.items), dtype=torch.float32
        ).unsqueeze(1)
        td = targets - q_taken
        if loss_mask.sum() > 0:
            loss = masked_mean(0.5 * weights * td**2, loss_mask)
        else:  # nothing to learn from (e.g. all trace turns padding): keep the step count honest
            loss = (q_taken * 0.0).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.step_count += 1
        self.policy_version += 1
        if self.step_count % self.cfg.target_update_period == 0:
            self.update_target()
        priorities = sequence_priorities(td.detach(), loss_mask, self.cfg.priority_eta).tolist()
        self.last_priorities = priorities
        n = float(loss_mask.sum().clamp(min=1.0))
        metrics = {
            "learner/q_loss": float(loss.detach()),
            "learner/q_mean": float((q_taken.detach() * loss_mask).sum() / n),
            "learner/target_mean": float((targets * loss_mask).sum() / n),
            "learner/td_abs_mean": float((td.detach().abs() * loss_mask).sum() / n),
            "learner/priority_mean": float(np.mean(priorities)),
            "learner/grad_norm": float(grad_norm),
            "learner/trace_turns": float(loss_mask.sum()),
            "learner/is_weight_mean": float(weights.mean()),
            "learner/policy_lag_mean": float(
                np.mean([self.policy_version - 1 - it.policy_version for it in batch.items])
            ),
            "learner/step_time_s": time.perf_counter() - t0,
            "learner/policy_version": float(self.policy_version),
        }
        return metrics, priorities

    def update_target(self) -> None:
        self.target.load_state_dict(self.network.state_dict())

    # ---- staleness diagnostic ------------------------------------------------------------
    @torch.no_grad()
    def diagnostic_due(self) -> int:
        """Recent episodes wanted for the dQ diagnostic after this step (every r2d2.dq_interval
        learner steps; 0 when off or not due)."""
        every = self.cfg.dq_interval
        return self.cfg.dq_episodes if every and self.policy_version % every == 0 else 0

    def diagnose(self, episodes: Sequence[tuple[Episode, Any]]) -> dict[str, float]:
        """dQ on recent episodes, cut with the replay's sequence_period; back in train mode after."""
        m = self.dq_diagnostic(episodes, sequence_period=self.cfg.sequence_period)
        self.network.train()
        return m

    def dq_diagnostic(
        self, episodes: Sequence[tuple[Episode, Any]], sequence_period: int | None = None
    ) -> dict[str, float]:
        """R2D2's dQ for modes zero / zero_burn_in / stored / stored_burn_in (see module doc).

        episodes: (Episode, states) pairs as `QActor.run_episode` returns them (states from the
        network that acted, possibly older than the learner's). Returns {"dq/<mode>": mean dQ,
        "dq/items": count}; modes that need burn-in are left out when burn_in_length is 0.
        """
        net, bi, tr = self.network.eval(), self.cfg.burn_in_length, self.cfg.trace_length
        period = sequence_period or tr
        scores: dict[str, list[tuple[float, float]]] = {
            "zero": [],
            "zero_burn_in": [],
            "stored": [],
            "stored_burn_in": [],
        }
        cands_all = None if self.candidate_fn else self.encoder.encode(self.action_set)
        for episode, states in episodes:
            T = len(episode.turns)
            obs = self.encoder.encode([x.observation for x in episode.turns]).unsqueeze(0)
            act = self.encoder.encode([x.action for x in episode.turns]).unsqueeze(0)
            rew = torch.tensor([[x.reward for x in episode.turns]], dtype=torch.float32)
            ones = torch.ones(1, T)
            cands = (
                cands_all
                if cands_all is not None
                else self.encoder.encode([c for x in episode.turns for c in self.candidate_fn(x.observation)]).view(
                    1, T, -1, self.encoder.dim
                )
            )
            _, _, true_states = net.unroll(net.initial_state(1), obs, act, rew, ones, cands)
            items = cut_episode(episode, states, bi, tr, period)
            for it in items:
                s = it.start
                positions = sorted({p for p in (s + bi, min(s + bi + tr, T) - 1) if s + bi <= p < T})
                if not positions:
                    continue
                first = s + bi
                starts = {
                    "zero": (torch.zeros(1, 2, net.hidden_size), first),
                    "stored": (torch.from_numpy(np.asarray(states[first], dtype=np.float32)).unsqueeze(0), first),
                }
                if bi > 0:
                    starts["zero_burn_in"] = (torch.zeros(1, 2, net.hidden_size), s)
                    starts["stored_burn_in"] = (
                        torch.from_numpy(np.asarray(states[s], dtype=np.float32)).unsqueeze(0),
                        s,
                    )
                for mode, (h0, begin) in starts.items():
                    end = max(positions) + 1
                    c = cands if cands.dim() == 2 else cands[:, begin:end]
                    q_hat, _, _ = net.unroll(
                        h0, obs[:, begin:end], act[:, begin:end], rew[:, begin:end], ones[:, begin:end], c
                    )
                    for p in positions:
                        qh = q_hat[0, p - begin]
                        cq = cands if cands.dim() == 2 else cands[0, p]
                        q_true = net.q_values(true_states[0, p], obs[0, p], cq)
                        scores[mode].append((float((qh - q_true).norm()), float(qh.max().abs())))
        out = {f"dq/{m}": sum(a for a, _ in v) / max(sum(b for _, b in v), 1e-6) for m, v in scores.items() if v}
        out["dq/items"] = float(len(scores["zero"]))
        return out

    # ---- weights and checkpoints ---------------------------------------------------------
    def get_weights(self) -> VersionedWeights:
        """The online Q network's state_dict, detached CPU clones (the encoder LM is not included)."""
        tensors = {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}
        return VersionedWeights(version=self.policy_version, tensors=tensors)

    def save(self, path: str) -> None:
        """Checkpoint: model/ = the frozen encoder LM; extra_state = online and target Q networks."""
        extra = {**prefixed(self.network.state_dict(), "online."), **prefixed(self.target.state_dict(), "target.")}
        save_checkpoint(
            path,
            model=self.encoder.model,
            tokenizer=self.encoder.tokenizer,
            extra_state=extra,
            optimizer_state=self.optimizer.state_dict(),
            rng_state={"torch": torch.get_rng_state()},
            meta={"policy_version": self.policy_version, "step": self.step_count, "r2d2_config": self.cfg.model_dump()},
        )

    def restore(self, path: str) -> None:
        """Load what `save` wrote (Q networks, optimizer, counters); the encoder is not reloaded."""
        ckpt = load_checkpoint(path)
        self.network.load_state_dict(ckpt.extra("online."))
        self.target.load_state_dict(ckpt.extra("target."))
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        torch.set_rng_state(ckpt.rng_state["torch"])
        self.policy_version, self.step_count = int(ckpt.meta["policy_version"]), int(ckpt.meta["step"])


__all__ = ["R2D2Config", "R2D2Learner"]
