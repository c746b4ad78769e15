"""profile: any rollout file -> per-prompt statistics, and its prompts counted by pass-rate band."""

from __future__ import annotations

import json

import pytest

from rollout_pipeline.stages.prompt_profile import band_of, run_profile
from stage_testkit import group, profile_config, random_rollouts, run_script, stage_params, write_rollouts
from support import read_jsonl


def truncated(records: list[dict], *indexes: int) -> list[dict]:
    for index in indexes:
        records[index]["response"].update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    return records


@pytest.fixture
def three_prompts(tmp_path):
    """p0 half right (one cut off), p1 always right, p2 never right with one partial credit; tokens 10, 5, 15."""
    return write_rollouts(
        tmp_path / "rl.jsonl",
        [
            *truncated(
                group("p0", 0, [(1.0, "a"), (0.0, "b"), (1.0, "c"), (0.0, "d")], output_tokens=10, difficulty="easy"),
                3,
            ),
            *group("p1", 1, [(1.0, "a")] * 4, output_tokens=5, difficulty="easy"),
            *group("p2", 2, [(0.0, "x"), (0.5, "y"), (0.0, "x"), (0.0, "")], output_tokens=15, difficulty="hard"),
        ],
    )


def test_per_prompt_statistics_of_a_small_file_computed_by_hand(three_prompts, tmp_path):
    run_profile(three_prompts, tmp_path / "profile.jsonl", tmp_path / "bands.json", profile_config())
    lines = read_jsonl(tmp_path / "profile.jsonl")
    assert lines == [
        {
            "prompt_id": "p0",
            "task_index": 0,
            "n": 4,
            "correct": 2,
            "pass_rate": 0.5,
            "reward_mean": 0.5,
            "reward_std": 0.5,
            "all_tied": False,
            "output_tokens_median": 10,
            "truncation_rate": 0.25,
            "unhealthy": 0,
            "consistently_unhealthy": False,
            "difficulty": "easy",
        },
        {
            "prompt_id": "p1",
            "task_index": 1,
            "n": 4,
            "correct": 4,
            "pass_rate": 1.0,
            "reward_mean": 1.0,
            "reward_std": 0.0,
            "all_tied": True,
            "output_tokens_median": 5,
            "truncation_rate": 0.0,
            "unhealthy": 0,
            "consistently_unhealthy": False,
            "difficulty": "easy",
        },
        {
            "prompt_id": "p2",
            "task_index": 2,
            "n": 4,
            "correct": 0,
            "pass_rate": 0.0,
            "reward_mean": 0.125,
            "reward_std": round((3 * 0.125**2 + 0.375**2) ** 0.5 / 2, 6),
            "all_tied": False,
            "output_tokens_median": 15,
            "truncation_rate": 0.0,
            "unhealthy": 1,  # the empty answer
            "consistently_unhealthy": False,
            "difficulty": "hard",
        },
    ]
    assert json.loads((tmp_path / "bands.json").read_text()) == {
        "prompts": 3,
        "band": [0.1, 0.9],
        "all_tied": 1,
        "bands": {"unsolved": 1, "hard": 0, "learnable": 1, "easy": 0, "solved": 1},
        "by": {
            "difficulty": {
                "easy": {"unsolved": 0, "hard": 0, "learnable": 1, "easy": 0, "solved": 1},
                "hard": {"unsolved": 1, "hard": 0, "learnable": 0, "easy": 0, "solved": 0},
            }
        },
    }


@pytest.mark.parametrize(
    ("pass_rate", "band"),
    [(0.0, "unsolved"), (0.05, "hard"), (0.1, "learnable"), (0.5, "learnable"), (0.9, "learnable"), (0.95, "easy")]
    + [(1.0, "solved")],
)
def test_the_band_edges_belong_to_the_learnable_band(pass_rate, band):
    assert band_of(pass_rate, (0.1, 0.9)) == band


def test_a_group_by_field_with_too_many_values_gives_no_split_and_a_missing_one_none(tmp_path):
    records = [r for i in range(25) for r in group(f"p{i}", i, [(1.0, "a"), (0.0, "b")], topic=f"t{i}")]
    source = write_rollouts(tmp_path / "rl.jsonl", records)
    for group_by in ("topic", "difficulty", None):
        summary = run_profile(source, tmp_path / "p.jsonl", tmp_path / "b.json", profile_config(group_by=group_by))
        assert "by" not in summary.as_dict() and summary.as_dict()["bands"]["learnable"] == 25


def test_the_stage_script_profiles_any_rollout_file_with_the_params_band(tmp_path):
    source = write_rollouts(tmp_path / "any.jsonl", random_rollouts(30, 8, seed=4))
    params = stage_params(tmp_path, profile={"band": [0.25, 0.75], "group_by": None})
    out, summary = tmp_path / "profile.jsonl", tmp_path / "bands.json"
    result = run_script("profile_prompts", "--in", source, "--out", out, "--summary", summary, "--params", params)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 30
    bands = json.loads(summary.read_text())
    assert bands["band"] == [0.25, 0.75] and sum(bands["bands"].values()) == 30
    assert "30 prompts" in result.stdout and "learnable" in result.stdout
    learnable = sum(0.25 <= line["pass_rate"] <= 0.75 for line in read_jsonl(out))
    assert bands["bands"]["learnable"] == learnable


def test_the_stage_script_needs_an_objective_or_every_path_and_a_band_that_is_a_band(tmp_path):
    source = write_rollouts(tmp_path / "any.jsonl", random_rollouts(3, 2))
    result = run_script("profile_prompts", "--in", source, "--params", stage_params(tmp_path))
    assert result.returncode != 0 and "give --objective, or all of --in, --out and --summary" in result.stderr
    params = stage_params(tmp_path, profile={"band": [0.9, 0.1]})
    result = run_script(
        "profile_prompts", "--in", source, "--out", tmp_path / "o", "--summary", tmp_path / "s", "--params", params
    )
    assert result.returncode != 0 and "profile.band" in result.stderr and "low < high" in result.stderr
