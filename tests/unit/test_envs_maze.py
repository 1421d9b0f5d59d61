"""Text maze: FO vs PO observations, dynamics, illegal actions, layouts, scripted policies."""

import statistics

import pytest

from shoal.rollout.envs import collect, episode_seed, episode_success, make_env, make_policy
from shoal.rollout.envs.maze import DOUBLE_T, MazeEnv, distances, generate_maze


def test_double_t_layout_is_lmrl_gyms():
    env = MazeEnv()
    assert (len(env.layout), len(env.layout[0])) == (10, 13) and env.goal == (8, 6)
    assert len(env.starts) == len(env.goal_distance) - 1 == sum(row.count(".") for row in DOUBLE_T)


def test_fully_observed_shows_position_and_goal_partially_observed_only_walls():
    fo, po = MazeEnv(fully_observed=True), MazeEnv(fully_observed=False)
    assert (fo.name, po.name) == ("maze_fo", "maze_po")
    o_fo, o_po = fo.reset(seed=5), po.reset(seed=5)
    r, c = fo.position
    assert o_fo == f"position {r},{c}. goal 8,6. " + o_po
    assert o_po.startswith("walls: ") and "position" not in o_po and "goal" not in o_po
    # PO aliasing: many cells look alike, so the history is needed
    views = [po.observe(cell) for cell in po.starts]
    assert len(set(views)) < len(views) / 3


def test_moves_walls_goal_and_rewards():
    env = MazeEnv(fully_observed=False)
    env.reset(seed=0)
    env.position = (1, 1)  # left end of the top-left bar
    assert env.walls((1, 1)) == ["up", "down", "left"]
    obs, r, done, info = env.step("up")  # into a wall: stay, pay
    assert (env.position, r, done, info) == ((1, 1), -1.0, False, {"illegal": False, "success": False})
    assert obs == "walls: up, down, left."
    env.step("right")
    assert env.position == (1, 2)
    env.position = (7, 6)
    obs, r, done, info = env.step("Down")
    assert (r, done, info["success"]) == (0.0, True, True) and "goal" in obs


def test_illegal_action_penalty_message_no_move_and_step_limit():
    env = MazeEnv(max_steps=3, illegal_penalty=-2.0)
    env.reset(seed=1)
    here = env.position
    obs, r, done, info = env.step("north")
    assert (env.position, r, done, info["illegal"]) == (here, -2.0, False, True)
    assert "invalid action" in obs and "up, down, left or right" in obs and "position" in obs
    env.step(None)  # not even text: still just illegal
    assert env.step("42")[2] is True  # third action hits max_steps
    with pytest.raises(RuntimeError):
        env.step("up")


def test_seeded_starts_and_generated_layouts():
    env = MazeEnv()
    assert [env.reset(seed=s) for s in range(5)] == [env.reset(seed=s) for s in range(5)]
    assert len({env.reset(seed=s) for s in range(30)}) > 5
    a, b = generate_maze(4, 5, seed=3), generate_maze(4, 5, seed=3)
    assert a == b != generate_maze(4, 5, seed=4)
    g = MazeEnv(layout="generated", rows=4, cols=5, maze_seed=3)
    open_cells = sum(row.count(".") for row in g.layout)
    assert len(g.starts) == open_cells  # every open cell reaches the goal
    assert distances(g.layout, g.goal)[(1, 1)] == max(g.goal_distance.values())
    with pytest.raises(ValueError, match="layout"):
        MazeEnv(layout="spiral")


def run(env, name, n=40):
    res = collect(env, [(name, make_policy(name, env))], n, seed=0, max_turns=200)
    assert not res.dropped
    return res.episodes


@pytest.mark.parametrize("env_name", ["maze_fo", "maze_po"])
def test_optimal_policy_takes_shortest_paths(env_name):
    env = make_env(env_name)
    for _, ep in run(env, "optimal"):
        probe = MazeEnv(fully_observed=True)
        probe.reset(seed=episode_seed(0, int(ep.episode_id.rsplit("-", 1)[1])))
        assert episode_success(ep) and ep.total_return == -(probe.goal_distance[probe.position] - 1)


@pytest.mark.parametrize(
    "env_name, layout", [("maze_fo", "double_t"), ("maze_po", "double_t"), ("maze_po", "generated")]
)
def test_policy_quality_order(env_name, layout):
    env = make_env(env_name, layout=layout)
    stats = {}
    for name in ("optimal", "belief", "mediocre", "random"):
        eps = [e for _, e in run(env, name)]
        stats[name] = (statistics.fmean(e.total_return for e in eps), statistics.fmean(episode_success(e) for e in eps))
    assert stats["optimal"][1] == stats["belief"][1] == 1.0
    assert stats["belief"][0] >= stats["optimal"][0] - (0 if env_name == "maze_fo" else 4)
    assert stats["optimal"][0] > stats["mediocre"][0] > stats["random"][0] + 30
    assert stats["random"][1] < 0.5
