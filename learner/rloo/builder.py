"""RLOO's builder: the critic-free builder of `learner.grpo.builder` (groups, GroupQueue,
PPO's worker, scorers and evaluation) with the `rloo` section and `RLOOLearner`."""

from __future__ import annotations

from shoal.learner.grpo.builder import GRPOBuilder


class RLOOBuilder(GRPOBuilder):
    section = "rloo"
    learner_spec = "shoal.learner.rloo.learning:RLOOLearner"
    min_group_size = 2
