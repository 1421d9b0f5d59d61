"""Tensor helpers shared by the engines, scorers and learners - one home each:

- `pad_rows`: ragged rows -> one padded tensor (right or left);
- `pad_tokens`: token lists -> (input_ids, attention_mask);
- `gather_positions`: pick per-row positions out of [B, L, D] activations;
- `sampling_logprobs`: the log-probs of the distribution a sampler draws from (temperature,
  top-k; greedy reports the raw distribution, as vLLM does for greedy requests);
- `teacher_forced_logprobs`: log pi(a_t | s_t) of given responses under a causal LM;
- `adam`: the learners' optimizer, torch's Adam on its fused kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

GREEDY_TEMPERATURE = 1e-5


def pad_rows(rows: Sequence[Sequence[float]], value: float, dtype: torch.dtype, left: bool = False) -> torch.Tensor:
    """Ragged rows -> [B, max_len] tensor padded with `value` (on the left when `left`)."""
    width = max(len(r) for r in rows)
    pad = [[value] * (width - len(r)) for r in rows]
    return torch.tensor([p + list(r) if left else list(r) + p for r, p in zip(rows, pad)], dtype=dtype)


def pad_tokens(seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (input_ids [B, L], attention_mask [B, L]) padded with `pad_id`."""
    for i, s in enumerate(seqs):
        if len(s) == 0:
            raise ValueError(f"sequence {i} has no tokens")
    ids = pad_rows(seqs, pad_id, torch.long, left)
    mask = pad_rows([[1] * len(s) for s in seqs], 0, torch.long, left)
    return ids, mask


def gather_positions(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x [B, L, D], pos [B, T] -> [B, T, D] with out[b, t] = x[b, pos[b, t]]."""
    return torch.gather(x, 1, pos.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def sampling_logprobs(logits: torch.Tensor, temperature: float, top_k: int = 0) -> torch.Tensor:
    """[..., V] logits -> [..., V] log-probs of the sampling distribution: softmax(logits / T)
    restricted to the top-k tempered logits (ties kept); temperature <= GREEDY_TEMPERATURE
    means greedy, whose reported log-probs are those of the raw distribution."""
    logits = logits.float()
    if temperature <= GREEDY_TEMPERATURE:
        return torch.log_softmax(logits, dim=-1)
    scaled = logits / temperature
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.log_softmax(scaled, dim=-1)


@torch.no_grad()
def teacher_forced_logprobs(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
) -> list[list[float]]:
    """log pi(a_t | s_t) of each response token given everything before it, under the sampling
    distribution of (temperature, top_k); one list per response (empty for an empty response)."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if not prompt_ids:
        return []
    seqs = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    ids, mask = pad_tokens(seqs, pad_id)
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    lp = sampling_logprobs(logits[:, :-1], temperature, top_k)
    picked = lp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu()
    return [
        picked[i, len(p) - 1 : len(p) - 1 + len(r)].tolist() for i, (p, r) in enumerate(zip(prompt_ids, response_ids))
    ]


def adam(params: Any, lr: float) -> torch.optim.Adam:
    """torch's Adam (default betas and eps) with `fused=True`: one kernel updates every
    parameter, where torch's CPU default loops over them with a few ops each - the same update
    up to float rounding. The demo's PPO step on one CPU core: 173 ms against 186 ms
    (`python benchmarks/learner_throughput.py --learners ppo --ppo-configs 64/32/4 --ppo-adam
    fused,loop --repeats 5`, 2026-12-06). `params`: tensors or param groups."""
    return torch.optim.Adam(params, lr=lr, fused=True)
