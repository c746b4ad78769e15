"""Reading rollouts for the stages: grouping by prompt, and bad input as one clear line naming file:line.

Every stage (filter, pair, metrics) reads through the same code, so each bad input is checked
against all three.
"""

from __future__ import annotations

import json

import pytest

from rollout_pipeline.errors import UserError
from rollout_pipeline.stages.dpo_pairs import run_pair
from rollout_pipeline.stages.groups import iter_groups
from rollout_pipeline.stages.rollout_metrics import run_metrics
from rollout_pipeline.stages.sft_filter import run_filter
from stage_testkit import filter_config, group, groups, health_config, make_rollout, pair_config, write_rollouts

STAGES = {
    "filter": lambda src, out: run_filter(src, out, filter_config()),
    "pair": lambda src, out: run_pair(src, out, pair_config()),
    "metrics": lambda src, out: run_metrics(src, out, 1.0, health=health_config()),
}


def test_groups_are_runs_of_adjacent_records_in_file_order(tmp_path):
    path = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "a"), (0.0, "b")], [(0.5, "c")]))
    seen = [
        (prompt_id, [(r.line, r.reward, r.output()) for r in rollouts]) for prompt_id, rollouts in iter_groups(path)
    ]
    assert seen == [("p0", [(1, 1.0, "a"), (2, 0.0, "b")]), ("p1", [(3, 0.5, "c")])]


def test_integer_rewards_are_read_as_floats(tmp_path):
    path = write_rollouts(tmp_path / "r.jsonl", [make_rollout("p", 0, 0, 1, "x")])
    rewards = [r.reward for _, rollouts in iter_groups(path) for r in rollouts]
    assert rewards == [1.0] and isinstance(rewards[0], float)


def bad_inputs():
    good = group("p0", 0, [(1.0, "fine"), (0.0, "also fine")])
    no_reward = make_rollout("p1", 1, 0, 1.0, "x")
    del no_reward["reward"]
    no_output = make_rollout("p1", 1, 0, 1.0, "x")
    del no_output["output"]
    return {
        "empty file": ([], "r.jsonl: no rollouts; did collect run?"),
        "blank lines only": (["", "  "], "no rollouts; did collect run?"),
        "no reward": ([*good, no_reward], "r.jsonl:3: record has no 'reward'"),
        "string reward": (
            [*good, make_rollout("p1", 1, 0, "1.0", "x")],
            "r.jsonl:3: 'reward' must be a number, got '1.0'",
        ),
        "null reward": ([*good, make_rollout("p1", 1, 0, None, "x")], "r.jsonl:3: 'reward' must be a number, got None"),
        "boolean reward": (
            [*good, make_rollout("p1", 1, 0, True, "x")],
            "r.jsonl:3: 'reward' must be a number, got True",
        ),
        # Python's json.dumps writes NaN / Infinity; they are not JSON, so the line itself is rejected.
        "NaN reward": ([*good, '{"prompt_id": "p1", "reward": NaN, "output": "x"}'], "r.jsonl:3: not valid JSON"),
        "infinite reward": (
            [*good, '{"prompt_id": "p1", "reward": 1e999, "output": "x"}'],
            "r.jsonl:3: not valid JSON",
        ),
        "not JSON": ([*good, "{'prompt_id': 'p1'}"], "r.jsonl:3: not valid JSON"),
        "not an object": ([*good, "[1, 2]"], "r.jsonl:3: expected a JSON object"),
        "no prompt_id": ([*good, {"reward": 1.0, "output": "x"}], "r.jsonl:3: record has no 'prompt_id'"),
        "task_index goes back": (
            [*good, *group("p1", 1, [(1.0, "y")]), make_rollout("p0", 0, 2, 1.0, "z")],
            "r.jsonl:4: task_index 0 comes after 1; "
            "the file must be sorted by (task_index, rollout_index) as the collector writes it",
        ),
    }


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("case", bad_inputs())
def test_bad_input_is_one_line_naming_file_and_line(tmp_path, stage, case):
    records, message = bad_inputs()[case]
    source = write_rollouts(tmp_path / "r.jsonl", records)
    with pytest.raises(UserError) as error:
        STAGES[stage](source, tmp_path / "out.json")
    assert message in str(error.value)
    assert str(source) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("stage", ["filter", "pair"])
def test_stages_that_copy_text_need_output_on_every_record(tmp_path, stage):
    no_output = make_rollout("p0", 0, 1, 0.0, "x")
    del no_output["output"]
    source = write_rollouts(tmp_path / "r.jsonl", [make_rollout("p0", 0, 0, 1.0, "x"), no_output])
    with pytest.raises(UserError, match=r"r\.jsonl:2: record has no 'output'"):
        STAGES[stage](source, tmp_path / "out.jsonl")


@pytest.mark.parametrize("stage", STAGES)
def test_a_failed_run_leaves_the_previous_output_untouched(tmp_path, stage):
    out = tmp_path / "out.json"
    out.write_text("previous\n")
    source = write_rollouts(tmp_path / "r.jsonl", [*groups([(1.0, "a"), (0.0, "b")]), "not json"])
    with pytest.raises(UserError):
        STAGES[stage](source, out)
    assert out.read_text() == "previous\n"
    assert {p.name for p in tmp_path.iterdir()} == {"out.json", "r.jsonl"}  # no temp file left behind


def test_the_same_prompt_asked_twice_in_the_input_is_two_tasks_not_an_error(tmp_path):
    # An input file may repeat a question; the collector gives both copies the same prompt_id
    # but different task_index values. Stages group adjacent records, as the seed snippet's groupby does.
    records = [
        *group("p0", 0, [(1.0, "a"), (0.0, "b")]),
        *group("p1", 1, [(1.0, "c")]),
        *group("p0", 2, [(0.0, "d"), (1.0, "e")]),
    ]
    source = write_rollouts(tmp_path / "r.jsonl", records)
    pairs = tmp_path / "pairs.jsonl"
    STAGES["pair"](source, pairs)
    chosen = [json.loads(line)["chosen"][0]["content"] for line in pairs.read_text().splitlines()]
    assert chosen == ["a", "e"]
