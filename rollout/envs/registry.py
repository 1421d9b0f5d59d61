"""Environments and scripted policies by name, or a user's by import path.

make_env("maze_po")                         built-in (see BUILTIN_ENVS)
make_env("cue_recall", corridor_length=15)  keyword arguments go to the constructor
make_env("my_pkg.envs:make_game", level=2)  a user environment: `module:factory(**kwargs)`
make_policy("optimal", env)                 the env's scripted policy of that name
make_policy("random", env)                  uniform over env.legal_actions() (any env that lists them)
make_policy("my_pkg.bots:make_bot", env)    a user policy: `module:factory(env)`
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from shoal.rollout.envs import cue_recall, maze, random_walks, wordle
from shoal.rollout.envs.base import Policy, RandomPolicy, legal_actions_of, task_name

BUILTIN_ENVS: dict[str, Callable[..., Any]] = {
    "cue_recall": cue_recall.CueRecallEnv,
    "maze_fo": partial(maze.MazeEnv, fully_observed=True),
    "maze_po": partial(maze.MazeEnv, fully_observed=False),
    "wordle": wordle.WordleEnv,
    "random_walks": random_walks.RandomWalksEnv,
}

# scripted policies by environment class; every built-in ships optimal, mediocre and random
_POLICIES: dict[type, dict[str, Callable[[Any], Policy]]] = {
    cue_recall.CueRecallEnv: cue_recall.POLICIES,
    maze.MazeEnv: maze.POLICIES,
    wordle.WordleEnv: wordle.POLICIES,
    random_walks.RandomWalksEnv: random_walks.POLICIES,
}


def make_env(name: str, **kwargs: Any) -> Any:
    """A built-in environment by name, or `module:factory` called with `kwargs`.
    ValueError names the problem (unknown name, bad keyword, missing methods)."""
    if name in BUILTIN_ENVS:
        try:
            return BUILTIN_ENVS[name](**kwargs)
        except TypeError as e:
            raise ValueError(f"environment {name!r}: {e}") from None
    if ":" not in name:
        raise ValueError(f"unknown environment {name!r} (built-in: {', '.join(BUILTIN_ENVS)}; or module:factory)")
    from shoal.utils import import_object

    factory = import_object(name)
    try:
        env = factory(**kwargs)
    except Exception as e:  # the user's factory: report it as one line
        raise ValueError(f"environment {name!r}: the factory raised {type(e).__name__}: {e}") from None
    missing = [m for m in ("reset", "step") if not callable(getattr(env, m, None))]
    if missing:
        raise ValueError(f"environment {name!r} has no {' or '.join(m + '()' for m in missing)}")
    return env


def policy_names(env: Any) -> list[str]:
    """The scripted policies `make_policy` knows for `env`."""
    names = list(_POLICIES.get(type(env), {}))
    if "random" not in names and legal_actions_of(env):
        names.append("random")
    return names


def make_policy(name: str, env: Any) -> Policy:
    """The scripted policy `name` of `env`, "random" for any env with legal_actions(), or
    `module:factory` called with the env. ValueError lists the known names."""
    table = _POLICIES.get(type(env), {})
    if name in table:
        return table[name](env)
    if name == "random" and legal_actions_of(env):
        return RandomPolicy(legal_actions_of(env))
    if ":" in name:
        from shoal.utils import import_object

        policy = import_object(name)(env)
        if not (callable(getattr(policy, "act", None)) and callable(getattr(policy, "reset", None))):
            raise ValueError(f"policy {name!r} has no act() and reset()")
        return policy
    known = ", ".join(policy_names(env)) or "none"
    raise ValueError(
        f"unknown policy {name!r} for environment {task_name(env)!r} (scripted: {known}; or module:factory)"
    )


__all__ = ["BUILTIN_ENVS", "make_env", "make_policy", "policy_names"]
