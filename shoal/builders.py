"""The ActorLearnerBuilder contract and the one registry of algorithms (Acme's builder shape).

An algorithm is a folder `learner/<name>/` with its ONE config model (`config.py`, which is
also the run config's section `<name>`), its networks, acting policy and learning, and a
`builder.py` whose `ActorLearnerBuilder` says how to make every component from the run
config. Two runners consume any builder and know no algorithm by name:

    services/local.py    one process: workers, scorers, replay and learner stepped in order
    services/program.py  the Ray program: the same components as actors, overlapped

Both run the same data path:

    payload = builder.new_request()              prompts, or a number of episodes (driver)
    items   = worker.act(payload)                RolloutWorker / EpisodeWorker (in an actor)
    items   = scoring(items)                     only when builder.make_scorers() is not empty
    room    = replay.add(items)                  back-pressure, in units of a request
    batch   = replay.sample(batch_size, version) -> learner.step(batch) -> weights -> workers

Add an algorithm: a folder `learner/<name>/` (config.py, learning.py, builder.py, and
networks.py / acting.py where it has them), one `Algorithm(...)` line in `ALGORITHMS` below,
and a config file under deploy/configs/. Nothing under services/ changes.

No Ray and no torch here; builders are imported lazily by their `module:Class` strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from shoal.core import MetricsSink
from shoal.utils import ConfigError, import_object


@dataclass(frozen=True)
class Algorithm:
    """One registry entry: the run config's section `name` is the model at `config`."""

    name: str
    config: str
    builder: str
    description: str

    def config_model(self) -> type:
        return import_object(self.config)

    def builder_class(self) -> type[ActorLearnerBuilder]:
        return import_object(self.builder)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "ppo",
            "shoal.learner.ppo.config:PPOConfig",
            "shoal.learner.ppo.builder:PPOBuilder",
            "RLHF on prompts with PPO (sections task, reward, ppo, buffer).",
        ),
        Algorithm(
            "r2d2",
            "shoal.learner.r2d2.config:R2D2Config",
            "shoal.learner.r2d2.builder:R2D2Builder",
            "Recurrent per-utterance Q-learning in a multi-turn env (sections env, r2d2, replay).",
        ),
        Algorithm(
            "ilql",
            "shoal.learner.ilql.config:ILQLConfig",
            "shoal.learner.ilql.builder:ILQLBuilder",
            "Token-level ILQL on episodes, offline and/or online (sections env, ilql, replay).",
        ),
        Algorithm(
            "grpo",
            "shoal.learner.grpo.config:GRPOConfig",
            "shoal.learner.grpo.builder:GRPOBuilder",
            "RLHF on prompts with GRPO / Dr.GRPO: group-relative advantages, no critic (sections task, reward, grpo, buffer).",
        ),
        Algorithm(
            "rloo",
            "shoal.learner.rloo.config:RLOOConfig",
            "shoal.learner.rloo.builder:RLOOBuilder",
            "RLHF on prompts with RLOO: leave-one-out group baseline, no critic (sections task, reward, rloo, buffer).",
        ),
        Algorithm(
            "reinforce_pp",
            "shoal.learner.reinforce_pp.config:ReinforcePPConfig",
            "shoal.learner.reinforce_pp.builder:ReinforcePPBuilder",
            "RLHF on prompts with REINFORCE++: KL in the reward, batch-normalised advantages, no critic (sections task, reward, reinforce_pp, buffer).",
        ),
        Algorithm(
            "dpo",
            "shoal.learner.dpo.config:DPOConfig",
            "shoal.learner.dpo.builder:DPOBuilder",
            "Preference learning: DPO, IPO, cDPO, RPO, offline from pairs or online through the actors (sections task, reward, dpo, buffer).",
        ),
    )
}


def algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ConfigError(f"run.algorithm: unknown algorithm {name!r} (have: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]


def make_builder(cfg: Any) -> ActorLearnerBuilder:
    """The builder of the run config's algorithm (`run.algorithm`)."""
    return algorithm(cfg.run.algorithm).builder_class()(cfg)


class ActorLearnerBuilder:
    """How one algorithm's components are made from the run config `cfg`.

    Driver side (no heavy work before Ray starts):
      check_config(cfg)      classmethod: whole-config rules; ValueError naming the field
      preflight()            paths, environments, data sets; ConfigError naming the field
      prepare_models(dir)    model directories by role that every actor loads ({} if none)
      new_request()          the payload of one worker request; `request_size` units each
      initial_items()        items put in the replay before the loop (an offline data set)
      eval_requests(n)       one evaluation payload per worker (n workers; [] = no eval)
      summarize_eval(outs)   worker evaluation outputs (scored when there are scorers) -> dict
    Component side (runs where the component lives: an actor, or the local process):
      make_worker(i, dirs, metrics)   .act(payload) -> items, .evaluate(payload), .load_weights(w)
      make_scorers()                  reward scorers ([]: items go straight to the replay)
      make_replay()                   the ReplayBuffer; .room() counts request units
      make_learner(dirs, metrics)     the Learner
    Summary: counters(stats, rejected, dropped), final_metrics(last learner metrics).
    """

    unit: ClassVar[str] = "samples"  # what a request yields, as the summary counts it
    partial_requests: ClassVar[bool] = False  # launch into any room when nothing is in flight

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # -- config --------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        return None

    def preflight(self) -> None:
        return None

    # -- components ----------------------------------------------------------------------
    def prepare_models(self, run_dir: str) -> dict[str, str]:
        return {}

    def make_worker(self, index: int, model_dirs: dict[str, str], metrics: MetricsSink | None = None) -> Any:
        raise NotImplementedError

    def make_scorers(self) -> list[Any]:
        return []

    def num_scorers(self) -> int:
        return 0

    def make_replay(self) -> Any:
        raise NotImplementedError

    def make_learner(self, model_dirs: dict[str, str], metrics: MetricsSink | None = None) -> Any:
        raise NotImplementedError

    def batch_size(self) -> int:
        raise NotImplementedError

    # -- the driver's requests -----------------------------------------------------------
    def request_size(self) -> int:
        raise NotImplementedError

    def collecting(self) -> bool:
        """False when the learner trains from `initial_items` only (no worker requests)."""
        return True

    def new_request(self) -> Any:
        raise NotImplementedError

    def request_units(self, payload: Any) -> int:
        return self.request_size()

    def initial_items(self) -> list[Any]:
        return []

    # -- evaluation and summary ----------------------------------------------------------
    def eval_requests(self, num_workers: int) -> list[Any]:
        return []

    def summarize_eval(self, outputs: Sequence[Any]) -> dict[str, float]:
        return {}

    def counters(self, buffer_stats: dict[str, float], rejected: int, dropped: int) -> dict[str, Any]:
        return {"dropped_stale": buffer_stats.get("buffer/dropped_stale", 0.0)}

    def final_metrics(self, last: dict[str, float]) -> dict[str, Any]:
        return {}

    def progress_fields(self, m: dict[str, float]) -> dict[str, str]:
        return {}

    # -- resume --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The driver-side data position (JSON), saved with each checkpoint ({}: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


__all__ = ["ALGORITHMS", "ActorLearnerBuilder", "Algorithm", "algorithm", "make_builder"]
