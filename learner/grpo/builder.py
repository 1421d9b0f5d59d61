"""GRPO's builder, and the base of the other critic-free builders (RLOO, REINFORCE++): PPO's
RLHF data path (`learner.ppo.builder.PPOBuilder`: same rollout worker, scorers, evaluation
and summary) with groups.

Group formation: a request is `rollout.prompts_per_request` prompts, each repeated
`group_size` times (the same Prompt object, so the same prompt_id), so a group's samples come
from one worker, one request and one policy_version. The replay is `buffer.groups.GroupQueue`:
whole groups only, released when their request's items have arrived, groups left short by
rejected rollouts kept at >= 2 members, staleness counted from the oldest member.

Units: `request_size`, the replay's `room()` and `buffer.capacity` count rollouts (a request
is prompts_per_request * group_size of them); `<algo>.batch_size` and `minibatch_size` count
groups. The reference (KL) scorer runs when `<algo>.kl_coef` > 0 (`reward.kl_coef` is PPO's).
"""

from __future__ import annotations

from typing import Any, ClassVar

from shoal.core import MetricsSink
from shoal.learner.ppo.builder import PPOBuilder, learner_device
from shoal.utils import import_object


class GRPOBuilder(PPOBuilder):
    unit = "samples"
    section: ClassVar[str] = "grpo"  # the run config's section of the algorithm
    learner_spec: ClassVar[str] = "shoal.learner.grpo.learning:GRPOLearner"
    min_group_size: ClassVar[int] = 2  # smaller groups are dropped by the replay

    def algo(self) -> Any:
        return getattr(self.cfg, self.section)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        a = getattr(cfg, cls.section)
        if cfg.rollout.top_k > 0:
            raise ValueError(
                f"rollout.top_k: {cls.section} needs log-probs of the distribution it samples from, and the learner and "
                f"the KL reference use the full softmax; top-k sampling ({cfg.rollout.top_k}) is not supported (set 0)"
            )
        if a.group_size < cls.min_group_size:
            raise ValueError(f"{cls.section}.group_size: needs at least {cls.min_group_size} (got {a.group_size})")
        request = cfg.rollout.prompts_per_request * a.group_size
        batch = a.batch_size * a.group_size
        if cfg.buffer.capacity < max(request, batch):
            raise ValueError(
                f"buffer.capacity: {cfg.buffer.capacity} rollouts cannot hold a request (rollout.prompts_per_request "
                f"{cfg.rollout.prompts_per_request} x {cls.section}.group_size {a.group_size} = {request}) and a batch "
                f"({cls.section}.batch_size {a.batch_size} groups = {batch} rollouts); raise it to >= {max(request, batch)}"
            )

    # -- components ----------------------------------------------------------------------
    def make_scorers(self) -> list[Any]:
        from shoal.reward.scorers import build_scorers

        reward = self.cfg.reward.model_copy(update={"kl_coef": self.algo().kl_coef, "adaptive_kl": False})
        return build_scorers(self.cfg.model_copy(update={"reward": reward}), self.task())

    def make_replay(self) -> Any:
        from shoal.buffer.groups import GroupQueue

        return GroupQueue(
            self.cfg.buffer.capacity, self.cfg.rollout.max_policy_lag, min(self.min_group_size, self.algo().group_size)
        )

    def make_learner(self, model_dirs: dict[str, str], metrics: MetricsSink | None = None) -> Any:
        cfg = self.cfg
        learner = import_object(self.learner_spec)(
            cfg.model.path,
            self.algo(),
            max_new_tokens=cfg.rollout.max_new_tokens,
            temperature=cfg.rollout.temperature,
            seed=cfg.run.seed,
            device=learner_device(),
            metrics=metrics,
            total_steps=cfg.run.total_steps,
        )
        if cfg.run.resume_from:
            learner.restore(cfg.run.resume_from)
        return learner

    def batch_size(self) -> int:
        """Groups per learner step (what GroupQueue.sample counts)."""
        return self.algo().batch_size

    # -- requests ------------------------------------------------------------------------
    def request_size(self) -> int:
        """Rollouts per request: prompts_per_request * group_size (the replay's room unit)."""
        return self.cfg.rollout.prompts_per_request * self.algo().group_size

    def new_request(self) -> list[Any]:
        """prompts_per_request prompts, each repeated group_size times (same object, same prompt_id)."""
        if self._prompts is None:
            self._prompts = self.prompt_source("train")
        prompts = self._prompts.next_batch(self.cfg.rollout.prompts_per_request)
        return [p for p in prompts for _ in range(self.algo().group_size)]

    def counters(self, buffer_stats: dict[str, float], rejected: int, dropped: int) -> dict[str, Any]:
        return {
            **super().counters(buffer_stats, rejected, dropped),
            "dropped_small_groups": buffer_stats.get("buffer/dropped_small_groups", 0.0),
        }
