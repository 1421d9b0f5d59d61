"""Episode JSONL: roundtrip of every built-in task's episodes; bad lines named file:line."""

import json

import pytest

from shoal.rollout.envs import (
    EpisodeFileError,
    collect,
    make_env,
    make_policy,
    read_episodes,
    write_episodes,
)
from shoal.types import Episode, Turn


@pytest.mark.parametrize("env_name", ["cue_recall", "maze_fo", "maze_po", "wordle"])
def test_roundtrip(env_name, tmp_path):
    env = make_env(env_name)
    res = collect(env, [(n, make_policy(n, env)) for n in ("optimal", "random")], 4, seed=2, max_turns=30)
    episodes = [e for _, e in res.episodes]
    path = tmp_path / "sub" / "eps.jsonl"
    assert write_episodes(path, episodes) == 4
    assert read_episodes(path) == episodes
    assert len(path.read_text().splitlines()) == 4


GOOD = {
    "episode_id": "e",
    "task": "t",
    "turns": [{"observation": "o", "action": "a", "reward": 1, "done": True, "info": {}}],
}


def bad(**changes):
    obj = json.loads(json.dumps(GOOD))
    turn = changes.pop("turn", None)
    if turn:
        obj["turns"][0].update(turn)
    obj.update(changes)
    return json.dumps(obj)


@pytest.mark.parametrize(
    "line, needle",
    [
        ('{"episode_id": "e",', "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({"task": "t", "turns": []}), "missing field 'episode_id'"),
        (bad(task=3), "field 'task' must be a string"),
        (bad(turns=[]), "'turns' must be a non-empty list"),
        (bad(policy_version="1"), "'policy_version' must be an integer"),
        (bad(turn={"reward": "1.0"}), "turns[0].reward must be a finite number"),
        (bad(turn={"reward": None}), "turns[0].reward must be a finite number"),
        (bad(turn={"done": 1}), "turns[0].done must be true/false"),
        (bad(turn={"info": []}), "turns[0].info must be an object"),
        (bad(turn={"action": 5}), "turns[0].action must be a string"),
        (bad().replace('"reward": 1', '"reward": NaN'), "NaN is not allowed"),
    ],
)
def test_bad_lines_are_named_by_file_and_line(line, needle, tmp_path):
    path = tmp_path / "eps.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n")
    with pytest.raises(EpisodeFileError) as e:
        read_episodes(path)
    assert f"{path}:3:" in str(e.value) and needle in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(EpisodeFileError, match="no such episode file"):
        read_episodes(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EpisodeFileError, match="no episodes"):
        read_episodes(tmp_path / "empty.jsonl")


def test_writer_refuses_non_finite_rewards(tmp_path):
    ep = Episode("e", "t", [Turn("o", "a", float("nan"), True)])
    with pytest.raises(ValueError):
        write_episodes(tmp_path / "x.jsonl", [ep])
