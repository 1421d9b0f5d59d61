"""Reward scorers: each implements `shoal.core.RewardScorer` (`name`, `score(rollouts)`).

- `RewardModelScorer`: a learned reward model (Hugging Face sequence classification with one
  label, trained by `reward.train_rm`); RewardTerms.sequence = {name: r_RM(x, y)}. Given an
  ensemble directory (`reward/ensemble.py`, `reward.rm_ensemble`), the members' calibrated scores reduced to one
  (mean / worst case / uncertainty-weighted), and their spread as the metric
  `reward_model_ensemble_std`.
- `RuleScorer`: a user function `module:function`, f(prompt, response_text) -> float.
- `ReferenceKLScorer`: log pi_ref(a_t | s_t) of every response token under the frozen
  reference (SFT) policy, teacher-forced, logits / temperature (the same tempered
  distribution the rollouts were sampled from). The learner forms the per-token KL penalty
  beta * (log pi - log pi_ref) (Ziegler et al. 2019; InstructGPT).
- `GoldScorer`: the task's gold reward, reported as a metric, never trained on (Gao et al.).

Reward-model input (shared with training): text `prompt + " " + response` with surrounding
whitespace trimmed, tokenized as BOS + tokens, right-padded with pad_token_id. The score is
the scalar head at the last non-pad token: Hugging Face's `*ForSequenceClassification`
picks the rightmost position whose input id != pad_token_id, which under right padding is
the last real token.

All scorers are batched and run under torch.no_grad; non-finite values are rejected later by
`reward.scoring.merge_terms`. Run: `build_scorers(cfg, task)`; tests in
tests/unit/test_scorers.py.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from shoal.reward.ensemble import calibrate, is_ensemble, read_members, reduce_scores
from shoal.tensors import pad_tokens, teacher_forced_logprobs
from shoal.types import RewardTerms, Rollout
from shoal.utils import import_object

GREEDY_TEMPERATURE = 1e-5  # same value as rollout.hf_engine.GREEDY_TEMPERATURE


def rm_text(prompt_text: str, response_text: str) -> str:
    """The reward model's input text: prompt and response joined by one space."""
    return " ".join(part for part in (prompt_text.strip(), response_text.strip()) if part)


def rm_token_ids(tokenizer: Any, text: str, max_length: int) -> list[int]:
    """BOS + tokens; overlong inputs keep BOS and the last tokens (the response end)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    ids = ([bos] if bos is not None else []) + ids
    return ids if len(ids) <= max_length else ids[:1] + ids[len(ids) - max_length + 1 :]


def rm_forward(model: Any, tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """[B] reward-model scores of texts (one forward pass, gradients as the caller allows)."""
    max_len = getattr(model.config, "max_position_embeddings", 4096)
    ids, mask = pad_tokens([rm_token_ids(tokenizer, t, max_len) for t in texts], model.config.pad_token_id)
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0]


@torch.no_grad()
def rm_scores(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 64) -> list[float]:
    """Reward-model scores of many texts, in batches."""
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        out += rm_forward(model, tokenizer, texts[i : i + batch_size]).float().cpu().tolist()
    return out


def load_reward_model(path: str | Path) -> tuple[Any, Any]:
    """A saved reward model directory -> (model in eval mode, tokenizer)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"reward model {str(path)!r} is not a model directory (no config.json); run `shoal train-rm`"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
    if model.config.pad_token_id is None or model.config.num_labels != 1:
        raise ValueError(
            f"reward model {str(path)!r}: need num_labels=1 and pad_token_id set, got "
            f"num_labels={model.config.num_labels} pad_token_id={model.config.pad_token_id}"
        )
    return model.eval(), tokenizer


def ensemble_scores(
    models: Sequence[tuple[Any, Any]],
    members: Sequence[Any],
    texts: Sequence[str],
    how: str,
    uwo_lambda: float,
    batch_size: int = 64,
) -> list[tuple[float, float]]:
    """(reward, members' std) per text: each member's score, calibrated, reduced by `how`."""
    raw = [rm_scores(model, tok, texts, batch_size) for model, tok in models]
    return reduce_scores(calibrate(raw, members), how, uwo_lambda)


class RewardModelScorer:
    """Learned reward model or ensemble of them: RewardTerms(sequence={name: score}); an
    ensemble also reports metrics_only={name + "_ensemble_std": spread of its members}."""

    def __init__(
        self,
        path: str | Path,
        batch_size: int = 64,
        name: str = "reward_model",
        ensemble_reduce: str = "mean",
        uwo_lambda: float = 1.0,
    ) -> None:
        self.name, self.batch_size = name, batch_size
        self.reduce, self.uwo_lambda = ensemble_reduce, uwo_lambda
        self.members = read_members(path) if is_ensemble(path) else None
        self.models = [load_reward_model(m.path) for m in self.members] if self.members else [load_reward_model(path)]
        self.model, self.tokenizer = self.models[0]

    def score(self, rollouts: Sequence[Rollout]) -> list[RewardTerms]:
        texts = [rm_text(r.prompt.text, r.response_text) for r in rollouts]
        if self.members is None:
            return [RewardTerms(sequence={self.name: s}) for s, _ in self.scores(texts)]
        return [
            RewardTerms(sequence={self.name: r}, metrics_only={f"{self.name}_ensemble_std": sd})
            for r, sd in self.scores(texts)
        ]

    def scores(self, texts: Sequence[str]) -> list[tuple[float, float]]:
        """(reward, members' std; 0 for one model) per `rm_text` - what `score` gives, for
        callers with texts (benchmarks/peer_trl.py: TRL's reward function)."""
        if self.members is None:
            return [(s, 0.0) for s in rm_scores(self.model, self.tokenizer, texts, self.batch_size)]
        return ensemble_scores(self.models, self.members, texts, self.reduce, self.uwo_lambda, self.batch_size)


class RuleScorer:
    """A rule reward `module:function`, called f(prompt, response_text) -> float."""

    def __init__(self, spec: str) -> None:
        self.name, self.fn = spec, import_object(spec)
        if not callable(self.fn):
            raise TypeError(f"rule function {spec!r} is not callable ({type(self.fn).__name__})")

    def score(self, rollouts: Sequence[Rollout]) -> list[RewardTerms]:
        return [RewardTerms(sequence={self.name: self._call(r)}) for r in rollouts]

    def _call(self, r: Rollout) -> float:
        value = self.fn(r.prompt, r.response_text)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"rule function {self.name!r} returned {value!r} for {r.prompt.prompt_id}; expected a float"
            )
        return float(value)


class ReferenceKLScorer:
    """Frozen reference policy: RewardTerms(ref_logprobs=[log pi_ref(a_t|s_t), ...])."""

    def __init__(
        self, path: str | Path, temperature: float = 1.0, batch_size: int = 64, name: str = "kl_reference"
    ) -> None:
        from shoal.models import load_policy

        if temperature <= 0:
            raise ValueError(f"ReferenceKLScorer temperature must be > 0, got {temperature}")
        self.name, self.temperature, self.batch_size = name, temperature, batch_size
        self.model, self.tokenizer = load_policy(path)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def score(self, rollouts: Sequence[Rollout]) -> list[RewardTerms]:
        out: list[RewardTerms] = []
        for i in range(0, len(rollouts), self.batch_size):
            chunk = rollouts[i : i + self.batch_size]
            lps = teacher_forced_logprobs(
                self.model,
                [r.prompt.token_ids for r in chunk],
                [r.response_ids for r in chunk],
                self.tokenizer.pad_token_id,
                self.temperature,
            )
            out += [RewardTerms(ref_logprobs=lp) for lp in lps]
        return out


class GoldScorer:
    """The task's gold reward as a metric only: RewardTerms(metrics_only={name: gold})."""

    def __init__(self, task: Any, name: str = "gold") -> None:
        self.task, self.name = task, name

    def score(self, rollouts: Sequence[Rollout]) -> list[RewardTerms]:
        return [
            RewardTerms(metrics_only={self.name: float(self.task.gold_reward(r.prompt.meta, r.response_text))})
            for r in rollouts
        ]


def reference_temperature(sampling_temperature: float) -> float:
    """The rollout engines' convention: temperature <= 1e-5 is greedy, scored at temperature 1."""
    return 1.0 if sampling_temperature <= GREEDY_TEMPERATURE else sampling_temperature


def build_scorers(cfg: Any, task: Any) -> list[Any]:
    """The run's scorers: reward model, rule functions, KL reference, gold (in that order)."""
    r = cfg.reward
    scorers: list[Any] = []
    if r.reward_model_path:
        scorers.append(
            RewardModelScorer(
                r.reward_model_path, ensemble_reduce=r.rm_ensemble_reduce, uwo_lambda=r.rm_ensemble_uwo_lambda
            )
        )
    scorers += [RuleScorer(spec) for spec in r.rule_functions]
    if r.kl_coef > 0 or r.adaptive_kl:
        scorers.append(ReferenceKLScorer(cfg.model.path, temperature=reference_temperature(cfg.rollout.temperature)))
    scorers.append(GoldScorer(task))
    return scorers
