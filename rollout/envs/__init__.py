"""Multi-turn text environments (POMDPs), scripted policies, the safe episode runner, episode
JSONL files and the LMRL-Gym normalised score. Plain Python: no Ray, no torch.

Built-in environments (`make_env(name, **kwargs)`): cue_recall, maze_fo, maze_po, wordle;
a user's environment by `module:factory`. Each ships scripted policies of mixed quality
(`make_policy(name, env)`): optimal, mediocre, random, and a few task-specific ones.
"""

from shoal.rollout.envs.base import (
    CollectResult,
    DroppedEpisode,
    Policy,
    RandomPolicy,
    collect,
    episode_seed,
    episode_success,
    iter_collect,
    parse_choice,
    run_episode,
)
from shoal.rollout.envs.jsonl import (
    EpisodeFileError,
    iter_episodes,
    read_episodes,
    write_episode,
    write_episodes,
)
from shoal.rollout.envs.registry import BUILTIN_ENVS, make_env, make_policy, policy_names
from shoal.rollout.envs.scoring import dataset_anchors, normalized_score, normalized_scores

__all__ = [
    "BUILTIN_ENVS",
    "CollectResult",
    "DroppedEpisode",
    "EpisodeFileError",
    "Policy",
    "RandomPolicy",
    "collect",
    "dataset_anchors",
    "episode_seed",
    "episode_success",
    "iter_collect",
    "iter_episodes",
    "make_env",
    "make_policy",
    "normalized_score",
    "normalized_scores",
    "parse_choice",
    "policy_names",
    "read_episodes",
    "run_episode",
    "write_episode",
    "write_episodes",
]
