"""Supervised fine-tuning (SFT) warm-up: the starting policy of RLHF (InstructGPT step 1).

What: teacher forcing on the task's demonstrations. One training sequence is
`encode_prompt(prompt) + tokens(" " + response) + [EOS]`; the loss is the mean token
cross-entropy over the response tokens and the EOS only (prompt and padding are masked
with -100). The response is tokenized with a leading space because a rollout's response
starts right after the prompt's last token, so its first token is e.g. `Ġkofa`, exactly what
the engine samples and decodes.

`init_model(cfg)` is `shoal init-model`: build the tokenizer + random tiny Llama
(`shoal.models.build_model_dir`), run the SFT warm-up, save model and tokenizer back
to `cfg.model.path`, and report how the SFT policy answers: the fraction of well-formed
answers (exactly `response_words` vocabulary words, then EOS) and their mean gold reward.
On the built-in `keywords` task the demonstrations are uniform over the whole vocabulary,
so the SFT policy is fluent but mostly off-topic (gold ~ 1/num_topics): RL has room to
improve.

Deviations from InstructGPT: constant learning rate (AdamW), no epochs over a fixed set -
each step draws a fresh batch of demonstrations from a seeded stream.

Run: `shoal init-model CONFIG` or `python -c "from shoal.learner.sft.learning import init_model; ..."`;
tests: `pytest tests/learning/test_sft.py -m learning`.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from shoal.rollout.tasks import encode_prompt, task_from_config
from shoal.tensors import pad_rows, pad_tokens

IGNORE_INDEX = -100


def encode_demonstration(tokenizer: Any, prompt_text: str, response_text: str) -> tuple[list[int], list[int]]:
    """(input ids, labels): labels are -100 on the prompt, the response tokens and EOS after."""
    prompt_ids = encode_prompt(tokenizer, prompt_text)
    response_ids = tokenizer(" " + response_text, add_special_tokens=False)["input_ids"]
    response_ids = list(response_ids) + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids


def collate_right(seqs: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids / attention_mask / labels (-100 on padding)."""
    ids, mask = pad_tokens(seqs, pad_id)
    lab = pad_rows(labels, IGNORE_INDEX, torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def demonstration_batch(task: Any, tokenizer: Any, rng: random.Random, batch_size: int) -> dict[str, torch.Tensor]:
    """`batch_size` fresh demonstrations from `task.demonstration(rng)`, encoded and padded."""
    pairs = [encode_demonstration(tokenizer, *task.demonstration(rng)[:2]) for _ in range(batch_size)]
    return collate_right([p[0] for p in pairs], [p[1] for p in pairs], tokenizer.pad_token_id)


def sft_warmup(
    model: Any,
    tokenizer: Any,
    task: Any,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> dict[str, float]:
    """Train `model` in place by teacher forcing; returns losses (first/last) and seconds."""
    torch.manual_seed(seed)
    rng, losses, start = random.Random(seed), [], time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    bar = tqdm(range(steps), desc="sft", disable=not progress)
    for _ in bar:
        loss = model(**demonstration_batch(task, tokenizer, rng, batch_size)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    first, last = (losses[0], _tail_mean(losses)) if losses else (math.nan, math.nan)
    return {
        "sft_steps": steps,
        "sft_loss_first": first,
        "sft_loss_last": last,
        "sft_seconds": time.perf_counter() - start,
    }


def _tail_mean(xs: list[float], n: int = 10) -> float:
    tail = xs[-n:]
    return sum(tail) / len(tail)


@torch.no_grad()
def sample_answers(
    model: Any, tokenizer: Any, task: Any, n: int, seed: int, max_new_tokens: int
) -> list[dict[str, Any]]:
    """Sample (temperature 1, full distribution) one answer for each of n seeded prompts.

    Returns dicts {meta, text, stopped}: `text` is the decoded response without specials,
    `stopped` whether the policy emitted EOS within `max_new_tokens`.
    """
    rng = random.Random(seed)
    prompts = [task.sample_prompt(rng) for _ in range(n)]
    torch.manual_seed(seed)
    out = []
    for length, group in _group_by_length(tokenizer, prompts).items():
        ids = torch.tensor([encode_prompt(tokenizer, text) for text, _ in group])
        gen = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        out += [_answer(tokenizer, meta, row[length:].tolist()) for (_, meta), row in zip(group, gen)]
    return out


def _group_by_length(tokenizer: Any, prompts: list[tuple[str, dict]]) -> dict[int, list[tuple[str, dict]]]:
    """Prompts grouped by token length, so each group generates without padding."""
    groups: dict[int, list[tuple[str, dict]]] = {}
    for text, meta in prompts:
        groups.setdefault(len(encode_prompt(tokenizer, text)), []).append((text, meta))
    return groups


def _answer(tokenizer: Any, meta: dict, new_ids: list[int]) -> dict[str, Any]:
    eos = tokenizer.eos_token_id
    stopped = eos in new_ids
    ids = new_ids[: new_ids.index(eos)] if stopped else new_ids
    return {"meta": meta, "text": tokenizer.decode(ids, skip_special_tokens=True), "stopped": stopped}


def is_well_formed(task: Any, text: str, stopped: bool) -> bool:
    """Exactly `task.response_words` words, all from `task.vocabulary`, then EOS."""
    words = text.split()
    vocab = set(task.vocabulary)
    return stopped and len(words) == task.response_words and all(w in vocab for w in words)


def answer_quality(task: Any, answers: list[dict[str, Any]]) -> dict[str, float]:
    """Mean gold reward of the answers, and (for vocabulary tasks) the well-formed fraction."""
    gold = [task.gold_reward(a["meta"], a["text"]) for a in answers]
    out = {"gold_mean": sum(gold) / len(gold)}
    if hasattr(task, "vocabulary") and hasattr(task, "response_words"):
        out["well_formed"] = sum(is_well_formed(task, a["text"], a["stopped"]) for a in answers) / len(answers)
    return out


def init_model(cfg: Any, progress: bool = True) -> dict[str, Any]:
    """`shoal init-model`: build tokenizer + tiny Llama, SFT warm-up, save to cfg.model.path."""
    from shoal.models import build_model_dir, load_policy

    start, task = time.perf_counter(), task_from_config(cfg.task)
    path = build_model_dir(task, cfg.model, cfg.model.path, cfg.run.seed)
    model, tokenizer = load_policy(path)
    sft = cfg.sft
    summary: dict[str, Any] = {"path": str(path), "params": sum(p.numel() for p in model.parameters())}
    summary |= sft_warmup(
        model,
        tokenizer,
        task,
        steps=sft.steps,
        learning_rate=sft.learning_rate,
        batch_size=sft.batch_size,
        seed=cfg.run.seed,
        progress=progress,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    answers = sample_answers(model, tokenizer, task, 256, cfg.run.seed + 1, cfg.rollout.max_new_tokens)
    summary |= {f"sft_{k}": v for k, v in answer_quality(task, answers).items()}
    summary["seconds"] = time.perf_counter() - start
    print(format_summary(summary), flush=True)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()]
    return "init-model: " + " ".join(parts)
