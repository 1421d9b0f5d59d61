"""Preference pairs: gold-labelled generation, JSONL roundtrip, file:line errors."""

from __future__ import annotations

import json
import math

import pytest

from shoal.reward.preferences import (
    PreferenceFileError,
    bt_probability,
    generate_preference_pairs,
    read_preference_file,
    write_jsonl,
)


def test_generated_pairs_are_well_formed_and_seeded(tiny_task):
    pairs = generate_preference_pairs(tiny_task, 200, seed=3)
    assert len(pairs) == 200
    assert pairs == generate_preference_pairs(tiny_task, 200, seed=3)
    assert pairs != generate_preference_pairs(tiny_task, 200, seed=4)
    for p in pairs:
        assert p["gold_chosen"] != p["gold_rejected"]  # ties skipped
        assert p["gold_chosen"] == tiny_task.gold_reward(p["meta"], p["chosen"])
        assert p["gold_rejected"] == tiny_task.gold_reward(p["meta"], p["rejected"])
        assert p["prompt"] == tiny_task.prompt_text(p["meta"]["topic"])


def test_labels_follow_bradley_terry(tiny_task):
    """The better answer is chosen as often as the BT model predicts, and not always."""
    pairs = generate_preference_pairs(tiny_task, 3000, seed=0, bt_scale=8.0)
    agree = [p["gold_chosen"] > p["gold_rejected"] for p in pairs]
    expected = [
        bt_probability(max(p["gold_chosen"], p["gold_rejected"]), min(p["gold_chosen"], p["gold_rejected"]), 8.0)
        for p in pairs
    ]
    rate, predicted = sum(agree) / len(pairs), sum(expected) / len(pairs)
    assert abs(rate - predicted) < 3 * math.sqrt(predicted * (1 - predicted) / len(pairs))
    assert 0.6 < rate < 0.98
    gaps = {abs(p["gold_chosen"] - p["gold_rejected"]) for p in pairs}
    assert len(gaps) >= 4  # varied on-topic fractions: easy and hard pairs


def test_bt_scale_controls_noise(tiny_task):
    def agreement(scale):
        pairs = generate_preference_pairs(tiny_task, 1000, seed=1, bt_scale=scale)
        return sum(p["gold_chosen"] > p["gold_rejected"] for p in pairs) / len(pairs)

    assert agreement(0.0) == pytest.approx(0.5, abs=0.06)
    assert agreement(100.0) == 1.0


def test_roundtrip(tmp_path, tiny_task):
    # generated pairs may hold the empty answer (it teaches the RM what saying nothing is worth);
    # a file may not (a human label on an empty answer is a data error), so those stay out here
    pairs = [p for p in generate_preference_pairs(tiny_task, 30, seed=0) if p["chosen"] and p["rejected"]]
    path = write_jsonl(pairs, tmp_path / "sub" / "prefs.jsonl")
    assert read_preference_file(path) == pairs


def _write(tmp_path, lines):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"prompt": "write about ko :", "chosen": "kofa", "rejected": "mabi"})


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"prompt": "x", "chosen": "a"', "invalid JSON"),
        (json.dumps({"prompt": "x", "chosen": "a"}), "missing field 'rejected'"),
        (json.dumps({"prompt": "x", "chosen": 3, "rejected": "b"}), "field 'chosen' must be a string, got int"),
        (json.dumps({"prompt": "x", "chosen": "a", "rejected": "b", "meta": [1]}), "field 'meta' must be an object"),
        (
            json.dumps({"prompt": "x", "chosen": "a", "rejected": "b", "gold_chosen": "hi"}),
            "'gold_chosen' must be a number",
        ),
        (json.dumps(["x", "a", "b"]), "expected a JSON object, got list"),
        (json.dumps({"prompt": "x", "chosen": " ", "rejected": "b"}), "field 'chosen' is an empty answer"),
        (json.dumps({"prompt": "x", "chosen": "a b", "rejected": "a b "}), "the same answer"),
        ('{"prompt": "x", "chosen": "a", "rejected": "b", "gold_rejected": NaN}', "'gold_rejected' must be finite"),
        ('{"prompt": "x", "chosen": "a", "rejected": "b", "gold_chosen": Infinity}', "'gold_chosen' must be finite"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, "", GOOD, bad, GOOD])  # blank line 2 is skipped but counted
    with pytest.raises(PreferenceFileError) as err:
        read_preference_file(path)
    assert str(err.value).startswith(f"{path}:4: ")
    assert message in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(PreferenceFileError, match="no such preference file"):
        read_preference_file(tmp_path / "nope.jsonl")
    with pytest.raises(PreferenceFileError, match="no preference pairs"):
        read_preference_file(_write(tmp_path, ["", "  "]))


def test_task_without_sampler_is_refused():
    class Bare:
        name = "bare"

    with pytest.raises(TypeError, match="'bare'.*preference_file"):
        generate_preference_pairs(Bare(), 3, seed=0)


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        (GOOD + "\n" + GOOD + "\n").encode()
        + '{"prompt": "caf\u00e9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1")
    )
    with pytest.raises(PreferenceFileError, match=rf"^{path}:3: not UTF-8 text"):
        read_preference_file(path)


# ---- ranked lists -------------------------------------------------------------------------
def test_ranked_lists_are_seeded_permutations_that_follow_gold(tiny_task):
    from shoal.reward.preferences import generate_ranked_lists, ranked, ranked_pairs

    lists = generate_ranked_lists(tiny_task, 400, 4, seed=1)
    assert lists == generate_ranked_lists(tiny_task, 400, 4, seed=1) and len(lists) == 400
    top_is_best = 0
    for rec in lists:
        assert sorted(rec["ranking"]) == [0, 1, 2, 3] and len(set(rec["responses"])) == 4
        assert rec["gold"] == [tiny_task.gold_reward(rec["meta"], r) for r in rec["responses"]]
        top_is_best += rec["gold"][rec["ranking"][0]] == max(rec["gold"])
        prompt, answers, gold, _ = ranked(rec)
        assert answers == [rec["responses"][i] for i in rec["ranking"]] and gold == [
            rec["gold"][i] for i in rec["ranking"]
        ]
        pairs = ranked_pairs(rec)
        assert len(pairs) == 6 and all(p["prompt"] == prompt for p in pairs)
        assert [(p["chosen"], p["rejected"]) for p in pairs] == [
            (answers[i], answers[j]) for i in range(4) for j in range(i + 1, 4)
        ]
    assert 0.6 < top_is_best / 400 < 1.0  # Plackett-Luce labels: mostly, not always, the gold-best first


def test_a_ranked_list_of_two_is_a_bradley_terry_pair(tiny_task):
    """K = 2 Plackett-Luce is Bradley-Terry: the better answer ranks first at the BT rate."""
    from shoal.reward.preferences import generate_ranked_lists

    lists = generate_ranked_lists(tiny_task, 3000, 2, seed=0)
    first_better = [rec["gold"][rec["ranking"][0]] > rec["gold"][rec["ranking"][1]] for rec in lists]
    expected = [bt_probability(max(rec["gold"]), min(rec["gold"]), 8.0) for rec in lists]
    rate, predicted = sum(first_better) / len(lists), sum(expected) / len(lists)
    assert abs(rate - predicted) < 3 * math.sqrt(predicted * (1 - predicted) / len(lists))


LIST = {"prompt": "write about ko :", "responses": ["kofa", "mabi", "tuko"], "ranking": [0, 2, 1]}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({**LIST, "ranking": [0, 0, 1]}, "'ranking' must be a permutation of 0..2"),
        ({**LIST, "ranking": [0, 1]}, "'ranking' must be a permutation of 0..2"),
        ({**LIST, "ranking": [0, 1, "2"]}, "'ranking' must be a permutation"),
        ({k: v for k, v in LIST.items() if k != "ranking"}, "missing field 'ranking'"),
        ({"prompt": "x", "responses": ["a"], "ranking": [0]}, "a ranked list of 1 answer(s) compares nothing"),
        ({**LIST, "responses": ["kofa", "", "tuko"]}, "response 1 is an empty answer"),
        ({**LIST, "responses": ["kofa", "kofa", "tuko"]}, "two responses are the same answer"),
        ({**LIST, "gold": [0.1, float("nan"), 0.2]}, "'gold' must hold finite numbers"),
        ({**LIST, "gold": [0.1]}, "'gold' must be a list of one number per response"),
        ({**LIST, "responses": "kofa mabi"}, "'responses' must be a list of strings"),
    ],
)
def test_malformed_ranked_list_names_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path, [json.dumps(LIST), json.dumps(bad)])
    with pytest.raises(PreferenceFileError) as err:
        read_preference_file(path)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value), str(err.value)
