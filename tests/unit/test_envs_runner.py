"""The safe episode runner, the collector and the registry: a misbehaving environment is
reported (task, episode id, reason), its episode dropped and counted, and the run goes on."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.rollout.envs import (
    DroppedEpisode,
    collect,
    make_env,
    make_policy,
    policy_names,
    run_episode,
)
from shoal.rollout.envs.base import RandomPolicy, policy_seed
from shoal.rollout.envs.faults import FaultyEnv
from shoal.types import Episode


class Scripted:
    """Replays a fixed action list."""

    name = "scripted"

    def __init__(self, actions):
        self.actions, self.i = list(actions), 0

    def reset(self, seed=None):
        self.i = 0

    def act(self, observation):
        self.i += 1
        return self.actions[(self.i - 1) % len(self.actions)]


class OneStepEnv:
    """A user environment returning whatever step result it is given."""

    name = "one_step"

    def __init__(self, result=("end", 1.0, True, {}), reset_obs="start"):
        self.result, self.reset_obs = result, reset_obs

    def reset(self, seed=None):
        return self.reset_obs

    def step(self, action):
        return self.result

    def legal_actions(self):
        return ["a", "b"]


def make_one_step_env():
    return OneStepEnv()


def test_run_episode_records_the_pomdp_history():
    env = make_env("cue_recall", corridor_length=2)
    ep = run_episode(env, Scripted(["go", "go", "go", "left"]), "ep-1", max_turns=10, seed=4)
    assert isinstance(ep, Episode) and (ep.episode_id, ep.task, ep.policy_version) == ("ep-1", "cue_recall", -1)
    assert [t.action for t in ep.turns] == ["go", "go", "go", "left"]
    assert ep.turns[0].observation.startswith("cue: ") and ep.turns[-1].observation.startswith("junction")
    assert [t.done for t in ep.turns] == [False] * 3 + [True] and ep.total_return in (1.0, -1.0)


def test_max_turns_truncates_with_done_false():
    ep = run_episode(make_env("maze_po"), Scripted(["up"]), "ep-2", max_turns=5, seed=0)
    assert len(ep.turns) == 5 and not ep.turns[-1].done and ep.total_return == -5.0


@pytest.mark.parametrize(
    "fault, at_turn, needle",
    [
        ("raise", 1, "step() raised RuntimeError: injected fault"),
        ("raise", 0, "reset() raised RuntimeError"),
        ("nonstring", 2, "non-string observation (int 42)"),
        ("nonstring", 0, "reset() returned a non-string observation"),
        ("nan", 1, "non-finite reward (nan)"),
        ("badinfo", 1, "not JSON-safe"),
    ],
)
def test_a_misbehaving_environment_drops_the_episode_with_a_reason(fault, at_turn, needle):
    env = FaultyEnv(fault=fault, every=1, at_turn=at_turn, inner="cue_recall")
    d = run_episode(env, make_policy("random", env), "faulty-7", max_turns=50, seed=3)
    assert isinstance(d, DroppedEpisode) and (d.task, d.episode_id, d.turn) == (
        "faulty_cue_recall",
        "faulty-7",
        max(at_turn - 1, 0),
    )
    assert needle in d.reason and "faulty_cue_recall" in str(d) and "faulty-7" in str(d)


@pytest.mark.parametrize(
    "result, needle",
    [
        (("o", 1.0, True), "must return (observation, reward, done, info)"),
        (("o", "1", True, {}), "non-numeric reward"),
        (("o", True, True, {}), "non-numeric reward"),
        (("o", math.inf, True, {}), "non-finite reward (inf)"),
        (("o", 1.0, "yes", {}), "expected a bool"),
        (("o", 1.0, True, ["x"]), "info of type list"),
        ((b"o", 1.0, True, {}), "non-string observation (bytes"),
    ],
)
def test_malformed_step_results_are_dropped(result, needle):
    d = run_episode(OneStepEnv(result), Scripted(["a"]), "e0", max_turns=3)
    assert isinstance(d, DroppedEpisode) and needle in d.reason and d.task == "one_step"


def test_numpy_rewards_and_none_info_are_accepted():
    np = pytest.importorskip("numpy")
    ep = run_episode(OneStepEnv(("end", np.float32(0.5), np.bool_(True), None)), Scripted(["a"]), "e1", max_turns=3)
    assert ep.turns[0].reward == 0.5 and ep.turns[0].done is True and ep.turns[0].info == {}


def test_policy_errors_propagate():
    with pytest.raises(TypeError, match="expected action text"):
        run_episode(OneStepEnv(), Scripted([3]), "e2", max_turns=3)


def test_collector_counts_dropped_episodes_and_continues():
    env = FaultyEnv(fault="nan", every=2, inner="maze_po")
    told = []
    res = collect(
        env,
        [("optimal", make_policy("optimal", env.env)), ("random", make_policy("random", env))],
        10,
        seed=0,
        max_turns=200,
        on_drop=told.append,
    )
    assert len(res.dropped) == 5 and len(res.episodes) == 5 and told == res.dropped
    assert {d.episode_id for d in res.dropped} == {
        f"faulty_maze_po-{'optimal' if i % 2 == 0 else 'random'}-s0-{i:06d}" for i in range(0, 10, 2)
    }
    assert [name for name, _ in res.episodes] == ["random"] * 5


def test_collect_is_deterministic_and_policies_alternate():
    env = make_env("wordle")
    pols = lambda: [(n, make_policy(n, env)) for n in ("optimal", "random")]
    a, b = collect(env, pols(), 6, seed=1, max_turns=10), collect(env, pols(), 6, seed=1, max_turns=10)
    assert a.episodes == b.episodes and [n for n, _ in a.episodes] == ["optimal", "random"] * 3
    assert all(e.worker_id == f"scripted:{n}" for n, e in a.episodes)


def test_policy_randomness_is_not_the_environments():
    assert policy_seed(5) != 5 and policy_seed(5) == policy_seed(5) and policy_seed(None) is None


def test_registry_builtins_plugins_and_errors():
    for name in ("cue_recall", "maze_fo", "maze_po", "wordle"):
        env = make_env(name)
        assert env.name == name and {"optimal", "mediocre", "random"} <= set(policy_names(env))
    assert make_env("cue_recall", corridor_length=17).corridor_length == 17
    plugged = make_env("tests.unit.test_envs_runner:make_one_step_env")
    assert isinstance(plugged, OneStepEnv) and policy_names(plugged) == ["random"]
    assert isinstance(make_policy("random", plugged), RandomPolicy)
    assert isinstance(make_policy("tests.unit.test_envs_runner:Scripted", ["x"]), Scripted)
    with pytest.raises(ValueError, match="unknown environment 'mazes'.*cue_recall, maze_fo, maze_po, wordle"):
        make_env("mazes")
    with pytest.raises(ValueError, match="no_such_mod"):
        make_env("no_such_mod:factory")
    with pytest.raises(ValueError, match="has no reset"):
        make_env("builtins:object")
    with pytest.raises(ValueError, match="unexpected keyword"):
        make_env("maze_po", nope=1)
    with pytest.raises(ValueError, match="unknown policy 'best'.*optimal"):
        make_policy("best", make_env("maze_po"))


def test_the_envs_package_loads_neither_ray_nor_torch():
    code = "import sys, rollout.envs, rollout.envs.collector, rollout.envs.faults; assert not [m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')]"
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=True)
