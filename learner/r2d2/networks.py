"""Recurrent per-utterance Q-network ("R2D2 for language"): LM turn encoder, LSTM core, dueling
double-Q head over candidate utterances.

Pieces (see /work/shared/reference/ALGORITHMS.md, R2D2 and CHAI sections):
- `TurnEncoder`: a Hugging Face causal LM (e.g. the tiny Llama `shoal.models` builds)
  turns a text into the mean of its last hidden states over real tokens, standardised per
  vector (zero mean, unit variance over features). The LM is FROZEN here and every distinct
  text is encoded once and cached (`encode` batches the cache misses), so a turn costs a dict
  lookup after the first time; "" (padding, no previous action) encodes to zeros.
  Deviation: the LM is not fine-tuned by the Q loss in this version.
- `RecurrentQNetwork` (nn.Module over embeddings, not texts):
    state entering turn t:  (h_t, c_t), stored as numpy float32 [2, H] (`STATE_ROWS` = 2)
    read-out at turn t:     u_t = tanh(W_r [h_t, c_t, e(o_t)])      (c_t left out with read_cell=False)
    dueling head:           Q(u_t, a) = V(u_t) + A(u_t, e(a)) - mean_{a' in candidates} A(u_t, e(a'))
    core update after t:    (h_{t+1}, c_{t+1}) = LSTMCell([e(o_t), e(a_t), r_t], (h_t, c_t))
  so the state entering turn t summarises the complete turns 0..t-1 (observation, action and
  reward - R2D2 feeds the previous action and reward), and a replay item holds everything its
  unroll needs (`buffer.sequences.cut_episode`: states[t] is the state ENTERING turn t). Every
  candidate utterance is encoded by the same encoder, so the head scores a small fixed action
  set (cue recall: go/left/right) and k candidates sampled from a policy LM (CHAI) alike.
  The LSTM forget-gate bias starts at `forget_bias` (default 3.0: sigmoid = 0.95), so the
  untrained core already keeps information for many turns (Gers et al. 2000; Jozefowicz 2015).
  `memory=False` is the memoryless baseline (a feed-forward Q(o_t, a) with the same layers and,
  for the same seed, the same initial weights): `core_step` returns zeros whatever it is given
  and `q_values` reads zeros in place of the state, so Q depends only on the current
  observation and the candidates - not on earlier turns, the previous action or reward. The
  interface (initial_state, q_values, core_step, unroll, [2, H] states) is unchanged, so
  `R2D2Learner` and `QActor` run it as they are (the unused core gets no gradient). The PO-maze
  proof compares the two (tests/learning/test_r2d2_maze_po.py).
- `unroll(...)`: runs the core over [B, L] positions from a start state; positions with mask 0
  keep the state unchanged (needed for front padding, `pad_start=True`); the first `burn_in`
  positions run under no_grad unless `burn_in_gradients`.

No Ray. Tests: `pytest tests/unit/test_recurrent_q.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STATE_ROWS = 2  # (h, c)


class TurnEncoder:
    """Frozen LM text encoder with a per-text cache: text -> [dim] float32 embedding."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 64, batch_size: int = 32) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        for p in self.model.parameters():
            p.requires_grad_(False)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_length, self.batch_size = max_length, batch_size
        self.dim = int(model.config.hidden_size)
        self._cache: dict[str, torch.Tensor] = {"": torch.zeros(self.dim)}

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> TurnEncoder:
        from shoal.models import load_policy

        model, tokenizer = load_policy(path)
        return cls(model, tokenizer, **kwargs)

    def __len__(self) -> int:
        return len(self._cache)

    @torch.no_grad()
    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
        out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
        hidden = out.hidden_states[-1]  # [N, T, D]
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        pooled = pooled - pooled.mean(-1, keepdim=True)
        return pooled / pooled.std(-1, keepdim=True).clamp(min=1e-6)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, dim] embeddings of `texts` (cached; misses encoded in batches)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            for text, vec in zip(chunk, self._encode_batch(chunk)):
                self._cache[text] = vec.float().clone()
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[t] for t in texts])


def build_tiny_encoder(
    corpus: Sequence[str],
    hidden_size: int = 64,
    num_layers: int = 1,
    num_heads: int = 2,
    vocab_size: int = 300,
    seed: int = 0,
) -> TurnEncoder:
    """A random-init tiny Llama + byte-level BPE trained on `corpus` (no hub), as a TurnEncoder."""
    from transformers import LlamaForCausalLM

    from shoal.models import llama_config, train_tokenizer

    tokenizer = train_tokenizer(list(corpus), vocab_size)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(tokenizer, hidden_size, num_layers, num_heads))
    return TurnEncoder(model, tokenizer)


class RecurrentQNetwork(nn.Module):
    """See the module docstring. Inputs are encoder embeddings of dimension `embed_dim`."""

    def __init__(
        self,
        embed_dim: int,
        hidden_size: int = 64,
        forget_bias: float = 3.0,
        read_cell: bool = True,
        seed: int | None = None,
        memory: bool = True,
    ) -> None:
        super().__init__()
        self.memory = memory  # False: memoryless baseline (state ignored, core_step returns zeros)
        if seed is not None:
            torch.manual_seed(seed)
        self.embed_dim, self.hidden_size = embed_dim, hidden_size
        self.core = nn.LSTMCell(2 * embed_dim + 1, hidden_size)
        with torch.no_grad():  # gate order i, f, g, o: bias the forget gate open
            for b in (self.core.bias_ih, self.core.bias_hh):
                b[hidden_size : 2 * hidden_size].fill_(forget_bias / 2.0)
        self.read_cell = read_cell
        self.read = nn.Linear((2 if read_cell else 1) * hidden_size + embed_dim, hidden_size)
        self.value = nn.Linear(hidden_size, 1)
        self.cand = nn.Linear(embed_dim, hidden_size)
        self.adv = nn.Sequential(nn.Linear(2 * hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 1))

    def initial_state(self, batch: int = 1) -> torch.Tensor:
        """[B, 2, H] zeros (h, c)."""
        return torch.zeros(batch, STATE_ROWS, self.hidden_size)

    def q_values(
        self, state: torch.Tensor, obs: torch.Tensor, cands: torch.Tensor, taken: torch.Tensor | None = None
    ) -> Any:
        """Dueling Q over candidates. state [..., 2, H], obs [..., E], cands [..., A, E] -> [..., A];
        with `taken` [..., E] also returns Q of that action [...] (centred by the same candidate mean)."""
        mem = state.flatten(-2) if self.read_cell else state[..., 0, :]
        if not self.memory:
            mem = torch.zeros_like(mem)
        u = torch.tanh(self.read(torch.cat([mem, obs], dim=-1)))
        value = self.value(u)

        def advantage(emb: torch.Tensor) -> torch.Tensor:
            c = torch.tanh(self.cand(emb))
            u_rep = u.unsqueeze(-2).expand(*c.shape[:-1], u.shape[-1])
            return self.adv(torch.cat([u_rep, c], dim=-1)).squeeze(-1)

        adv = advantage(cands)
        mean = adv.mean(dim=-1, keepdim=True)
        q_all = value + adv - mean
        if taken is None:
            return q_all
        q_taken = (value + advantage(taken.unsqueeze(-2)) - mean).squeeze(-1)
        return q_all, q_taken

    def core_step(
        self,
        state: torch.Tensor,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """State after a complete turn: [B, 2, H] -> [B, 2, H]; rows with mask 0 keep their state.
        Memoryless (memory=False): zeros of the same shape, whatever the inputs."""
        if not self.memory:
            return torch.zeros_like(state)
        x = torch.cat([obs, action, reward.unsqueeze(-1)], dim=-1)
        h, c = self.core(x, (state[:, 0], state[:, 1]))
        new = torch.stack([h, c], dim=1)
        if mask is None:
            return new
        keep = (mask > 0).view(-1, 1, 1)
        return torch.where(keep, new, state)

    def unroll(
        self,
        start_state: torch.Tensor,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        mask: torch.Tensor,
        cands: torch.Tensor,
        burn_in: int = 0,
        burn_in_gradients: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unroll over an item.

        start_state [B, 2, H]; obs, actions [B, L, E]; rewards, mask [B, L]; cands [B, L, A, E]
        or [A, E] (one set for all). Returns (q_all [B, L, A], q_taken [B, L], states [B, L, 2, H]
        entering each position). Positions < burn_in are unrolled under no_grad (and the state
        detached after them) unless burn_in_gradients.
        """
        B, L, _ = obs.shape
        if cands.dim() == 2:
            cands = cands.view(1, 1, *cands.shape).expand(B, L, *cands.shape)
        states, state = [], start_state
        for t in range(L):
            if t < burn_in and not burn_in_gradients:
                with torch.no_grad():
                    states.append(state)
                    state = self.core_step(state, obs[:, t], actions[:, t], rewards[:, t], mask[:, t])
                if t == burn_in - 1:
                    state = state.detach()
                continue
            states.append(state)
            state = self.core_step(state, obs[:, t], actions[:, t], rewards[:, t], mask[:, t])
        all_states = torch.stack(states, dim=1)  # [B, L, 2, H]
        q_all, q_taken = self.q_values(all_states, obs, cands, taken=actions)
        return q_all, q_taken, all_states


def state_to_numpy(state: torch.Tensor) -> np.ndarray:
    """[2, H] (or [B, 2, H]) tensor -> float32 numpy copy (what SequenceItem.start_state holds)."""
    return state.detach().cpu().numpy().astype(np.float32, copy=True)


__all__ = ["STATE_ROWS", "RecurrentQNetwork", "TurnEncoder", "build_tiny_encoder", "state_to_numpy"]
