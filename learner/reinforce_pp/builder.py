"""REINFORCE++'s builder: the critic-free builder of `learner.grpo.builder` (groups, GroupQueue,
PPO's worker, scorers and evaluation) with the `reinforce_pp` section and `ReinforcePPLearner`;
groups of one are fine (no group baseline)."""

from __future__ import annotations

from shoal.learner.grpo.builder import GRPOBuilder


class ReinforcePPBuilder(GRPOBuilder):
    section = "reinforce_pp"
    learner_spec = "shoal.learner.reinforce_pp.learning:ReinforcePPLearner"
    min_group_size = 1
