"""Token-level ILQL (Snell et al., ICLR 2023): offline Q-learning on a causal LM, from episodes.

Model: a Hugging Face causal LM trunk whose own LM head is the behaviour-cloning policy
pi_beta, plus `ILQLHeads` on the trunk's final (normed) hidden state h: two Q heads
Q1, Q2 (MLP hidden -> 2 hidden -> vocab: one Q-value per next token), their Polyak target
copies, and a V head (MLP hidden -> 2 hidden -> 1). As trlx, the target copies are copies of
the heads only; the trunk is shared.

Sequences (`encode_episode`): <s> o_1 a_1 </s> o_2 a_2 </s> ... ; observations are context,
the agent's tokens are each action's tokens plus the </s> that ends it (so the policy
learns when an utterance ends). Each agent token x_j is an action taken in state h_{j-1}
(the hidden state at the previous position). Token reward: the turn's reward on the last
token of its utterance (the </s>), 0 elsewhere. The next state of an agent token is the
state of the next agent token (so the observation tokens in between are part of the
environment's transition); after the last agent token it is the last position (with the
final observation appended when the episode was cut short), and done = episode.done there.

Losses per step (`learner.q_math`), masked means over agent tokens:
  Q_i:  (Q_i(h, a) - [r + gamma (1 - done) V(h').detach()])^2, i = 1, 2  (`ilql_q_target`)
  V:    expectile_tau(min(Q1_t, Q2_t)(h, a) - V(h))                      (`ilql_value_target`)
  CQL:  cql_weight * sum_i [logsumexp_a Q_i(h, .) - Q_i(h, a)]           (`cql_term`)
  BC:   bc_weight * cross-entropy of the LM head on a                    (pi_beta)
then Adam on trunk + heads, and target <- (1 - alpha) target + alpha online (`polyak_update`).
`bc_only=True` trains the BC term alone (the behaviour-cloning baseline on the same trunk).

Decoding (learner/ilql/acting.py): logits = log pi_beta(.|h) + beta (min(Q1_t, Q2_t)(h, .) - V(h)).

Metrics: learner/ilql_{loss, bc_loss, q_loss, v_loss, cql_loss, q_mean, v_mean, target_mean,
advantage_mean, tokens, grad_norm}, learner/policy_version.

Weights: `get_weights()` = the LM's HF state dict plus the heads under "ilql_heads.*"
(`split_weights` separates them; an HFEngine needs only the LM part).

Pure torch + transformers; no Ray. Tests: tests/unit/test_ilql.py and
`pytest -m learning tests/learning/test_ilql_offline.py`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shoal.core import MetricsSink, NullMetrics
from shoal.learner.checkpoint import load_checkpoint, prefixed, save_checkpoint
from shoal.learner.ilql.config import ILQLConfig
from shoal.learner.losses import masked_mean
from shoal.learner.q_math import (
    cql_term,
    expectile_loss,
    ilql_q_target,
    ilql_value_target,
    polyak_update,
)
from shoal.models import load_policy
from shoal.tensors import adam, gather_positions, pad_rows
from shoal.types import Episode, SampledBatch, VersionedWeights

HEAD_PREFIX = "ilql_heads."


def _mlp(hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, out))


class ILQLHeads(nn.Module):
    """Q1, Q2 (vocab-sized), their target copies, and V, on hidden states [..., H]."""

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.q1, self.q2, self.v = _mlp(hidden, vocab), _mlp(hidden, vocab), _mlp(hidden, 1)
        self.target_q1, self.target_q2 = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in list(self.target_q1.parameters()) + list(self.target_q2.parameters()):
            p.requires_grad_(False)

    def online_parameters(self) -> list[nn.Parameter]:
        return [*self.q1.parameters(), *self.q2.parameters(), *self.v.parameters()]

    def target_q(self, h: torch.Tensor) -> torch.Tensor:
        """min(Q1_target, Q2_target)(h, .) [..., vocab]."""
        return torch.minimum(self.target_q1(h), self.target_q2(h))

    def value(self, h: torch.Tensor) -> torch.Tensor:
        return self.v(h).squeeze(-1)

    def polyak(self, alpha: float) -> None:
        polyak_update(self.target_q1.parameters(), self.q1.parameters(), alpha)
        polyak_update(self.target_q2.parameters(), self.q2.parameters(), alpha)


# ---- episodes -> token sequences ---------------------------------------------------------


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def prompt_ids(tokenizer: Any, history: Sequence[tuple[str, str]], observation: str) -> list[int]:
    """<s> o_1 a_1 </s> ... o_t: the prompt an ILQL policy decodes a_t from (same layout as training)."""
    ids = [tokenizer.bos_token_id]
    for obs, act in history:
        ids += _encode(tokenizer, obs) + _encode(tokenizer, act) + [tokenizer.eos_token_id]
    return ids + _encode(tokenizer, observation)


@dataclass
class EncodedEpisode:
    """ids [L]; per agent token k: state position pos[k] (x_{pos+1} is the token), next-state
    position next_pos[k], reward[k], done[k]."""

    ids: list[int]
    pos: list[int]
    next_pos: list[int]
    reward: list[float]
    done: list[float]


def encode_episode(tokenizer: Any, episode: Episode) -> EncodedEpisode:
    """See the module docstring for the layout, rewards and next states."""
    if not episode.turns:
        raise ValueError(f"episode {episode.episode_id}: no turns")
    ids, pos, reward, done = [tokenizer.bos_token_id], [], [], []
    for t, turn in enumerate(episode.turns):
        if not math.isfinite(turn.reward):
            raise ValueError(f"episode {episode.episode_id} turn {t}: non-finite reward {turn.reward}")
        ids += _encode(tokenizer, turn.observation)
        action = _encode(tokenizer, turn.action) + [tokenizer.eos_token_id]
        for j, tok in enumerate(action):
            pos.append(len(ids) - 1)
            ids.append(tok)
            last = j == len(action) - 1
            reward.append(float(turn.reward) if last else 0.0)
            done.append(1.0 if last and t == len(episode.turns) - 1 and turn.done else 0.0)
    if not episode.turns[-1].done:
        ids += _encode(tokenizer, episode.final_observation or "")
    next_pos = pos[1:] + [len(ids) - 1]
    return EncodedEpisode(ids, pos, next_pos, reward, done)


@dataclass
class ILQLBatch:
    """Right-padded: input_ids/attention_mask [B, L]; pos/next_pos/actions/rewards/dones/mask [B, K]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pos: torch.Tensor
    next_pos: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    mask: torch.Tensor


def collate_episodes(encoded: Sequence[EncodedEpisode], pad_id: int) -> ILQLBatch:
    return ILQLBatch(
        input_ids=pad_rows([e.ids for e in encoded], pad_id, torch.long),
        attention_mask=pad_rows([[1] * len(e.ids) for e in encoded], 0, torch.long),
        pos=pad_rows([e.pos for e in encoded], 0, torch.long),
        next_pos=pad_rows([e.next_pos for e in encoded], 0, torch.long),
        actions=pad_rows([[e.ids[p + 1] for p in e.pos] for e in encoded], pad_id, torch.long),
        rewards=pad_rows([e.reward for e in encoded], 0.0, torch.float32),
        dones=pad_rows([e.done for e in encoded], 1.0, torch.float32),
        mask=pad_rows([[1.0] * len(e.pos) for e in encoded], 0.0, torch.float32),
    )


def split_weights(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """get_weights() tensors -> (LM state dict, ILQLHeads state dict)."""
    lm = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
    heads = {k.removeprefix(HEAD_PREFIX): v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    return lm, heads


# ---- the learner -------------------------------------------------------------------------


class ILQLLearner:
    """Offline token-level ILQL; see the module docstring. step(batch) takes Episodes."""

    def __init__(
        self,
        model_path: str,
        cfg: ILQLConfig | None = None,
        *,
        seed: int = 0,
        device: str = "cpu",
        metrics: MetricsSink | None = None,
    ) -> None:
        self.cfg = cfg if cfg is not None else ILQLConfig()
        if not 0.0 < self.cfg.tau < 1.0 or not 0.0 <= self.cfg.target_alpha <= 1.0:
            raise ValueError(
                f"ilql: tau must be in (0, 1) and target_alpha in [0, 1]; got {self.cfg.tau}, {self.cfg.target_alpha}"
            )
        self.device, self.seed = torch.device(device), seed
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.model, self.tokenizer = load_policy(model_path)
        self.model.to(self.device).eval()  # dropout off; the tiny Llama has none anyway
        torch.manual_seed(seed)
        cfg_text = self.model.config.get_text_config()
        self.heads = ILQLHeads(cfg_text.hidden_size, cfg_text.vocab_size).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad] + self.heads.online_parameters()
        self.optimizer = adam(self.params, self.cfg.learning_rate)
        self.policy_version, self.step_count = 0, 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(BC logits [B, L, V], final hidden states [B, L, H])."""
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            output_hidden_states=True,
        )
        return out.logits.float(), out.hidden_states[-1].float()

    def batch_from_episodes(self, episodes: Sequence[Episode]) -> ILQLBatch:
        for i, ep in enumerate(episodes):
            if not isinstance(ep, Episode):
                raise ValueError(f"batch item {i} is a {type(ep).__name__}, ILQLLearner needs Episode")  # noqa: TRY004 (as PPOLearner)
        return collate_episodes([encode_episode(self.tokenizer, ep) for ep in episodes], self.tokenizer.pad_token_id)

    def losses(self, b: ILQLBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss and its parts (module docstring)."""
        cfg = self.cfg
        logits, hs = self.forward(b.input_ids, b.attention_mask)
        pos, next_pos, actions = b.pos.to(self.device), b.next_pos.to(self.device), b.actions.to(self.device)
        mask, rewards, dones = b.mask.to(self.device), b.rewards.to(self.device), b.dones.to(self.device)
        bc = masked_mean(
            F.cross_entropy(gather_positions(logits, pos).transpose(1, 2), actions, reduction="none"), mask
        )
        stats = {"bc_loss": bc.item(), "tokens": mask.sum().item()}
        if cfg.bc_only:
            stats.update(loss=bc.item())
            return cfg.bc_weight * bc, stats
        h, h_next = gather_positions(hs, pos), gather_positions(hs, next_pos)
        take = actions.unsqueeze(-1)
        q1_all, q2_all = self.heads.q1(h), self.heads.q2(h)
        q1, q2 = q1_all.gather(-1, take).squeeze(-1), q2_all.gather(-1, take).squeeze(-1)
        with torch.no_grad():
            tq1 = self.heads.target_q1(h).gather(-1, take).squeeze(-1)
            tq2 = self.heads.target_q2(h).gather(-1, take).squeeze(-1)
        v, v_next = self.heads.value(h), self.heads.value(h_next)
        target = ilql_q_target(rewards, dones, v_next.detach(), cfg.gamma)
        q_loss = masked_mean((q1 - target) ** 2, mask) + masked_mean((q2 - target) ** 2, mask)
        v_target = ilql_value_target(tq1, tq2)
        v_loss = expectile_loss(v_target - v, cfg.tau, mask)
        cql = cql_term(q1_all, q1, mask) + cql_term(q2_all, q2, mask)
        loss = cfg.bc_weight * bc + q_loss + v_loss + cfg.cql_weight * cql
        stats.update(
            loss=loss.item(),
            q_loss=q_loss.item(),
            v_loss=v_loss.item(),
            cql_loss=cql.item(),
            q_mean=masked_mean(torch.minimum(q1, q2), mask).item(),
            v_mean=masked_mean(v, mask).item(),
            target_mean=masked_mean(target, mask).item(),
            advantage_mean=masked_mean(v_target - v, mask).item(),
        )
        return loss, stats

    def step(self, batch: SampledBatch | Sequence[Episode]) -> dict[str, float]:
        """One gradient step on a batch of episodes, then the Polyak target update."""
        items = batch.items if isinstance(batch, SampledBatch) else list(batch)
        if not items:
            raise ValueError("ILQLLearner.step got an empty batch")
        loss, stats = self.losses(self.batch_from_episodes(items))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        if not self.cfg.bc_only:
            self.heads.polyak(self.cfg.target_alpha)
        self.policy_version += 1
        self.step_count += 1
        metrics = {f"learner/ilql_{k}": v for k, v in stats.items()}
        metrics["learner/ilql_grad_norm"] = float(grad_norm)
        metrics["learner/policy_version"] = float(self.policy_version)
        self.metrics.log(metrics, step=self.policy_version)
        return metrics

    def get_weights(self) -> VersionedWeights:
        """LM state dict (HF names) + heads under "ilql_heads.*"; detached CPU clones."""
        tensors = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        tensors.update({HEAD_PREFIX + k: v.detach().to("cpu", copy=True) for k, v in self.heads.state_dict().items()})
        return VersionedWeights(version=self.policy_version, tensors=tensors)

    def save(self, path: str) -> None:
        """Checkpoint: LM (HF dir), heads (online and target), optimizer, version, step."""
        save_checkpoint(
            path,
            model=self.model,
            tokenizer=self.tokenizer,
            extra_state=prefixed(self.heads.state_dict(), HEAD_PREFIX),
            optimizer_state=self.optimizer.state_dict(),
            rng_state={},
            meta={
                "policy_version": self.policy_version,
                "step": self.step_count,
                "seed": self.seed,
                "algorithm": "ilql",
            },
        )

    def restore(self, path: str) -> None:
        """Load everything `save` wrote."""
        ckpt = load_checkpoint(path, map_location="cpu")
        ckpt.load_model_into(self.model)
        self.heads.load_state_dict(ckpt.extra(HEAD_PREFIX))
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.policy_version, self.step_count = int(ckpt.meta["policy_version"]), int(ckpt.meta["step"])


__all__ = [
    "ILQLBatch",
    "ILQLConfig",
    "ILQLHeads",
    "ILQLLearner",
    "collate_episodes",
    "encode_episode",
    "prompt_ids",
    "split_weights",
]
