"""What the multi-turn algorithms share (`r2d2`, `ilql`): a text environment, episodes as the
unit of work, the episode replay, and greedy evaluation on held-out reset seeds.

`EpisodeBuilder` is the base of `learner/r2d2/builder.py` and `learner/ilql/builder.py`:
- requests are `env.episodes_per_request` episodes; an `EpisodeWorker` (env + the
  algorithm's acting agent) plays them with the current weights;
- the replay is `EpisodeReplay` over `PrioritizedSequenceReplay` (the subclass says how an
  episode is cut into items: R2D2 sequence items, or whole episodes for ILQL), with room
  counted in whole episodes and what the rate limiter refuses queued, never lost;
- evaluation: greedy episodes on held-out seeds, split across workers; with a data set the
  LMRL-Gym normalised score (0 = data-set min, 50 = its average, 100 = its max).
No Ray here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from shoal.builders import ActorLearnerBuilder
from shoal.core import MetricsSink
from shoal.utils import ConfigError


class EpisodeBuilder(ActorLearnerBuilder):
    unit = "episodes"
    partial_requests = True  # the replay queues what its rate limiter refuses: never stall the learner

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.dataset: list[Any] = []

    # -- to be given by the algorithm ------------------------------------------------------
    def make_agent(self, index: int, model_dirs: dict[str, str]) -> Any:
        raise NotImplementedError

    def cut(self) -> Callable[[Any, Any], list[Any]] | None:
        """How an (episode, recurrent states) pair becomes replay items; None: the whole episode."""
        return None

    def offline(self) -> bool:
        """True when the replay starts with a data set (its rate limiter is then off)."""
        return False

    # -- environment ---------------------------------------------------------------------
    def make_env(self) -> Any:
        from shoal.rollout.envs.registry import make_env

        try:
            return make_env(self.cfg.env.name, **self.cfg.env.kwargs)
        except ValueError as e:
            raise ConfigError(f"env.name: {e}") from None

    def env_texts(self, dataset: Sequence[Any] = ()) -> list[str]:
        """The environment's texts (and a data set's), for building a tiny tokenizer + LM."""
        from shoal.rollout.envs.base import env_corpus

        cfg = self.cfg
        texts = set(
            env_corpus(self.make_env(), num_episodes=60, seed=cfg.run.seed, max_turns=min(cfg.env.max_turns, 50))
        )
        for ep in dataset:
            for t in ep.turns:
                texts.update((t.observation, t.action))
        return sorted(x for x in texts if x)

    # -- components ----------------------------------------------------------------------
    def make_worker(self, index: int, model_dirs: dict[str, str], metrics: MetricsSink | None = None) -> Any:
        from shoal.rollout.episode_worker import EpisodeWorker

        cfg = self.cfg
        agent = self.make_agent(index, model_dirs)
        return EpisodeWorker(
            self.make_env(), agent, f"rollout-{index}", index, cfg.env.max_turns, cfg.run.seed, metrics
        )

    def make_replay(self) -> Any:
        from shoal.buffer.episode_replay import EpisodeReplay
        from shoal.buffer.prioritized import PrioritizedSequenceReplay

        rp = self.cfg.replay
        replay = PrioritizedSequenceReplay(
            capacity=rp.capacity,
            priority_exponent=rp.priority_exponent,
            importance_sampling_exponent=rp.importance_sampling_exponent,
            use_importance_weights=rp.use_importance_weights,
            samples_per_insert=None if self.offline() else rp.samples_per_insert,
            min_size_to_sample=rp.min_size_to_sample,
            max_policy_lag=rp.max_policy_lag,
            seed=self.cfg.run.seed,
        )
        cut = self.cut()
        return EpisodeReplay(replay, cut=cut, recent=rp.recent_episodes if cut is not None else 0)

    # -- requests ------------------------------------------------------------------------
    def request_size(self) -> int:
        return self.cfg.env.episodes_per_request

    def new_request(self) -> int:
        return self.cfg.env.episodes_per_request

    def request_units(self, payload: Any) -> int:
        return int(payload)

    # -- evaluation and summary ----------------------------------------------------------
    def eval_requests(self, num_workers: int) -> list[Any]:
        n = self.cfg.env.eval_episodes
        return [list(range(i, n, num_workers)) for i in range(num_workers)] if n else []

    def summarize_eval(self, outputs: Sequence[Any]) -> dict[str, float]:
        from shoal.rollout.episode_worker import summarize_eval

        return with_lmrl_score(summarize_eval(list(outputs)), dataset_anchors_of(self.dataset))

    def counters(self, buffer_stats: dict[str, float], rejected: int, dropped: int) -> dict[str, Any]:
        return {
            "dropped_episodes": dropped,
            "replay_inserts": buffer_stats.get("buffer/inserts", 0.0),
            "replay_evicted": buffer_stats.get("buffer/evicted", 0.0),
            "dropped_stale": buffer_stats.get("buffer/dropped_stale", 0.0),
        }

    def progress_fields(self, m: dict[str, float]) -> dict[str, str]:
        loss = m.get("learner/q_loss", m.get("learner/ilql_loss", float("nan")))
        return {"loss": f"{loss:.3f}"}


def learner_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dataset_anchors_of(episodes: Sequence[Any]) -> tuple[float, float, float] | None:
    """LMRL-Gym anchors (min, average, max return) of a data set, if it has a spread."""
    from shoal.rollout.envs.scoring import dataset_anchors

    if not episodes:
        return None
    lo, avg, hi = dataset_anchors(ep.total_return for ep in episodes)
    return (lo, avg, hi) if lo < avg < hi else None


def with_lmrl_score(result: dict[str, float], anchors: tuple[float, float, float] | None) -> dict[str, float]:
    """Add eval lmrl_score (0 = data-set min, 50 = its average, 100 = its max) when anchors exist."""
    if anchors is None or "return_mean" not in result:
        return result
    from shoal.rollout.envs.scoring import normalized_score

    return {**result, "lmrl_score": normalized_score(result["return_mean"], *anchors)}


class _Corpus:
    """A task-like object for `shoal.models.build_model_dir`: just the texts."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def corpus(self) -> list[str]:
        return self.texts
