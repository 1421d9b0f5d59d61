"""HFEngine: a RolloutEngine on plain transformers (CPU, or one GPU without vLLM).

What: batched sampling from any local Hugging Face causal LM with a hand-written decode loop
(left padding, KV cache via `model(..., past_key_values, use_cache=True)`), per-token
log-probs of the sampled tokens under the *sampling* distribution (softmax of logits /
temperature, top-k filtered: the pi_behaviour of PPO's importance ratio), in-place weight
loads (`load_state_dict(strict=True)` with HF checkpoint names) and teacher-forced scoring.

Why a hand-written loop and not `model.generate`: we need the tempered/top-k log-prob of each
sampled token, the seeded `torch.Generator` and exact EOS cutting; on tiny models the loop is
also cheaper than `generate`'s per-step processor machinery.

Conventions (shared with `rollout.vllm_engine`):
- temperature <= GREEDY_TEMPERATURE means greedy (argmax); the log-probs reported are then
  those of the raw (temperature 1, unfiltered) distribution, as vLLM reports for greedy
  requests in `processed_logprobs` mode.
- top-k keeps every token whose tempered logit is >= the k-th largest (ties kept).
- A response is cut after its first EOS (EOS kept, finish_reason "stop"); otherwise it has
  `max_new_tokens` tokens and finish_reason "length".

Run: `HFEngine("models/tiny/policy").generate(prompts)`; tests in tests/unit/test_hf_engine.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from shoal.models import load_policy
from shoal.rollout.stats import generation_stats
from shoal.tensors import GREEDY_TEMPERATURE, pad_tokens, sampling_logprobs, teacher_forced_logprobs
from shoal.types import Prompt, Rollout, VersionedWeights


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a response: the generation config's EOS id(s) and the tokenizer's."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("model has no EOS token id (generation_config and tokenizer both lack one)")
    return sorted(set(ids))


def cut_at_eos(ids: list[int], lps: list[float], eos: Sequence[int]) -> tuple[list[int], list[float], str]:
    """Keep tokens up to and including the first EOS; ("stop" if one was found else "length")."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1], lps[: i + 1], "stop"
    return ids, lps, "length"


class HFEngine:
    """RolloutEngine on transformers; see the module docstring."""

    name = "transformers"

    def __init__(
        self,
        model_path: str,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 8,
        seed: int = 0,
        worker_id: str = "w0",
        device: str = "cpu",
    ) -> None:
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {max_new_tokens}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        self.model, self.tokenizer = load_policy(model_path)
        self.model.to(device)
        self.device, self.worker_id = device, worker_id
        self.temperature, self.top_k, self.max_new_tokens = temperature, top_k, max_new_tokens
        self.eos = eos_ids(self.model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.policy_version = 0
        self.last_stats: dict[str, float] = {}

    def rng_state(self) -> list[int]:
        """The sampling generator's state as JSON-safe ints (a resumed run samples on from here)."""
        return self.generator.get_state().tolist()

    def set_rng_state(self, state: list[int]) -> None:
        self.generator.set_state(torch.tensor(state, dtype=torch.uint8))

    # ---- generation -------------------------------------------------------------------------

    def _pick(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, V] next-token logits -> (sampled ids [B], their sampling log-probs [B])."""
        lp = sampling_logprobs(logits, self.temperature, self.top_k)
        if self.temperature <= GREEDY_TEMPERATURE:
            tok = lp.argmax(dim=-1)
        else:
            tok = torch.multinomial(lp.exp(), 1, generator=self.generator).squeeze(-1)
        return tok, lp.gather(-1, tok[:, None]).squeeze(-1)

    @torch.no_grad()
    def _decode(self, prompt_ids: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample up to max_new_tokens per prompt -> (tokens [B, T], log-probs [B, T])."""
        ids, mask = (t.to(self.device) for t in pad_tokens(prompt_ids, self.pad_id, left=True))
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        done = torch.zeros(len(prompt_ids), dtype=torch.bool, device=self.device)
        eos = torch.tensor(self.eos, device=self.device)
        cache, toks, lps = None, [], []
        for _ in range(self.max_new_tokens):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache = out.past_key_values
            tok, lp = self._pick(out.logits[:, -1, :])
            tok = torch.where(done, torch.full_like(tok, self.pad_id), tok)
            toks.append(tok)
            lps.append(lp)
            done |= torch.isin(tok, eos)
            if bool(done.all()):
                break
            ids, pos = tok[:, None], pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        return torch.stack(toks, 1).cpu(), torch.stack(lps, 1).cpu()

    def generate(self, prompts: Sequence[Prompt]) -> list[Rollout]:
        """One Rollout per prompt, same order (see module doc for EOS and log-prob rules)."""
        if not prompts:
            return []
        start = time.perf_counter()
        toks, lps = self._decode([p.token_ids for p in prompts])
        rollouts = [self._rollout(p, toks[i].tolist(), lps[i].tolist()) for i, p in enumerate(prompts)]
        self._record_generate(rollouts, time.perf_counter() - start)
        return rollouts

    def _rollout(self, prompt: Prompt, ids: list[int], lps: list[float]) -> Rollout:
        ids, lps, reason = cut_at_eos(ids, lps, self.eos)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Rollout(prompt, ids, text, lps, self.policy_version, self.worker_id, reason)

    def _record_generate(self, rollouts: list[Rollout], seconds: float) -> None:
        self.last_stats.update(generation_stats(rollouts, seconds))

    # ---- weights and scoring ----------------------------------------------------------------

    def load_weights(self, weights: VersionedWeights) -> None:
        """Copy `weights.tensors` (HF names, every parameter) into the model in place."""
        start = time.perf_counter()
        with torch.no_grad():
            self.model.load_state_dict(weights.tensors, strict=True)
        self.policy_version = weights.version
        self.last_stats["rollout/weight_sync_s"] = time.perf_counter() - start

    def logprobs(
        self,
        prompt_ids: Sequence[list[int]],
        response_ids: Sequence[list[int]],
        temperature: float = 1.0,
        top_k: int = 0,
    ) -> list[list[float]]:
        """Teacher-forced log pi(a_t | s_t) of each response token under the current weights,
        with the sampling distribution of (temperature, top_k)."""
        return teacher_forced_logprobs(self.model, prompt_ids, response_ids, self.pad_id, temperature, top_k)
