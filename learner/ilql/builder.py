"""ILQL's builder: token-level implicit language Q-learning (Snell et al. 2023) on the generic
runners (`shoal.builders`), offline from a data set of episodes (`shoal collect`) and/or
online (workers decode with log pi_beta + beta (Q - V) in the environment).

- models: the policy LM (`ilql.model_path`, or a tiny Llama + BPE built from the
  environment's and the data set's texts into the run directory);
- workers: `EpisodeWorker` with an `ILQLAgent` (its Q/V heads arrive with the first sync);
- replay: whole episodes, uniform (ILQL sends no priorities); an offline data set goes in
  before the loop, exempt from the staleness bound, with the rate limiter off.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from shoal.core import MetricsSink
from shoal.learner.episodes import EpisodeBuilder, _Corpus, learner_device
from shoal.utils import ConfigError


class ILQLBuilder(EpisodeBuilder):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if not (cfg.ilql.dataset or cfg.ilql.online):
            raise ValueError(
                "ilql.dataset: algorithm ilql needs a data set (ilql.dataset) or online collection (ilql.online: true)"
            )

    def preflight(self) -> None:
        q, rp = self.cfg.ilql, self.cfg.replay
        if q.model_path is not None and not (Path(q.model_path) / "config.json").is_file():
            raise ConfigError(
                f"ilql.model_path: {q.model_path!r} is not a Hugging Face model directory (no config.json); set it to null to build a tiny one"
            )
        if q.dataset and not Path(q.dataset).is_file():
            raise ConfigError(f"ilql.dataset: {q.dataset!r} does not exist; write one with `shoal collect`")
        self.make_env()
        self.dataset = self.load_dataset()
        n = len(self.dataset)
        if n > rp.capacity:
            raise ConfigError(
                f"replay.capacity: {rp.capacity} cannot hold the data set ({n} episodes in {q.dataset}); raise it"
            )
        if n and n < max(rp.min_size_to_sample, q.batch_size) and not q.online:
            raise ConfigError(
                f"ilql.dataset: {n} episodes are fewer than replay.min_size_to_sample / ilql.batch_size; collect more or lower them"
            )

    def load_dataset(self) -> list[Any]:
        from shoal.rollout.envs.jsonl import read_episodes

        return read_episodes(self.cfg.ilql.dataset) if self.cfg.ilql.dataset else []

    def offline(self) -> bool:
        return bool(self.cfg.ilql.dataset)

    def collecting(self) -> bool:
        return self.cfg.ilql.online

    def initial_items(self) -> list[Any]:
        if not self.dataset:
            self.dataset = self.load_dataset()
        return [(ep, None) for ep in self.dataset]

    # -- models and components -----------------------------------------------------------
    def prepare_models(self, run_dir: str) -> dict[str, str]:
        """ "policy": ilql.model_path, or a tiny LM built from the env's and the data set's texts."""
        if self.cfg.ilql.model_path:
            return {"policy": self.cfg.ilql.model_path}
        from shoal.models import build_model_dir

        shape = types.SimpleNamespace(
            vocab_size=300, hidden_size=self.cfg.ilql.model_hidden_size, num_layers=2, num_heads=2
        )
        corpus = _Corpus(self.env_texts(self.dataset or self.load_dataset()))
        return {"policy": str(build_model_dir(corpus, shape, Path(run_dir) / "policy", seed=self.cfg.run.seed))}

    def make_agent(self, index: int, model_dirs: dict[str, str]) -> Any:
        from shoal.learner.ilql.acting import ILQLPolicy
        from shoal.learner.ilql.learning import ILQLHeads
        from shoal.models import load_policy
        from shoal.rollout.episode_worker import ILQLAgent

        model, tokenizer = load_policy(model_dirs["policy"])
        text = model.config.get_text_config()
        heads = ILQLHeads(text.hidden_size, text.vocab_size)  # replaced by the learner's at the first sync
        q = self.cfg.ilql
        policy = ILQLPolicy(
            model,
            tokenizer,
            heads,
            beta=q.beta,
            temperature=q.temperature,
            max_new_tokens=q.max_new_tokens,
            seed=self.cfg.run.seed * 1009 + index,
        )
        return ILQLAgent(policy, q.temperature)

    def make_learner(self, model_dirs: dict[str, str], metrics: MetricsSink | None = None) -> Any:
        from shoal.learner.ilql.learning import ILQLLearner

        learner = ILQLLearner(model_dirs["policy"], self.cfg.ilql, seed=self.cfg.run.seed, device=learner_device())
        if self.cfg.run.resume_from:
            learner.restore(self.cfg.run.resume_from)
        return learner

    def batch_size(self) -> int:
        return self.cfg.ilql.batch_size

    def final_metrics(self, last: dict[str, float]) -> dict[str, Any]:
        names = {"learner/ilql_loss": "ilql_loss", "learner/steps_per_s": "learner_steps_per_s"}
        return {name: last[k] for k, name in names.items() if k in last}


__all__ = ["ILQLBuilder"]
