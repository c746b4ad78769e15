"""DAPO-style dynamic sampling in the RL loop: draw prompts until enough groups have reward variance (with a cap),
keep only those, and say how many were drawn and kept."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from dvc_testkit import copy_project, sh
from rollout_pipeline.stages.dynamic_sampling import count_groups, keep_informative, next_limit
from stage_testkit import groups, write_rollouts
from support import read_jsonl

TIED = [(1.0, "a"), (1.0, "a")]
MIXED = [(1.0, "a"), (0.0, "b")]


def test_groups_with_reward_variance_are_counted_and_only_the_first_wanted_ones_are_kept(tmp_path):
    path = write_rollouts(tmp_path / "rl.jsonl", groups(TIED, MIXED, TIED, MIXED, MIXED))
    assert count_groups(path) == (5, 3)
    assert keep_informative(path, 2) == 2
    assert [(r["prompt_id"], r["reward"]) for r in read_jsonl(path)] == [
        ("p1", 1.0),
        ("p1", 0.0),
        ("p3", 1.0),
        ("p3", 0.0),
    ]


def test_each_round_draws_as_many_more_prompts_as_the_informative_share_so_far_says_and_never_past_the_cap():
    assert next_limit(limit=20, drawn=20, informative=15, wanted=20, cap=100) == 20 + 7  # 5 missing at 3/4
    assert next_limit(limit=20, drawn=20, informative=0, wanted=20, cap=1000) == 20 + 400  # an assumed 5 % share
    assert next_limit(limit=20, drawn=20, informative=15, wanted=20, cap=24) == 24


@pytest.fixture(scope="module")
def dapo_loop(tmp_path_factory):
    """A copy with 60 prompts per set whose iterations keep 40 informative groups, drawing at most 50 prompts."""
    project = copy_project(tmp_path_factory.mktemp("dapo"), prompt_count=60)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["rl"]["collect"]["dynamic_sampling"] = {"groups": 40, "max_prompts": 50}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm dapo", project)
    sh("python scripts/rl.py extend --to 2", project)
    targets = sh("python scripts/rl.py targets --to 2", project).stdout.strip()
    sh(f"dvc repro {targets} && dvc repro report", project, timeout=600)
    return project


@pytest.mark.e2e
def test_each_iteration_trains_on_exactly_the_requested_informative_groups_and_says_what_it_drew(dapo_loop):
    for key in ("001", "002"):
        rollouts = read_jsonl(dapo_loop / f"data/rl/rl_iter_{key}.jsonl")
        by_prompt: dict[str, set[float]] = {}
        for record in rollouts:
            by_prompt.setdefault(record["prompt_id"], set()).add(record["reward"])
        assert len(by_prompt) == 40 and all(len(rewards) > 1 for rewards in by_prompt.values())
        sampling = json.loads((dapo_loop / f"metrics/rl/sampling_{key}.json").read_text())
        assert sampling["groups_kept"] == 40 and sampling["informative_groups"] >= 40
        assert 40 <= sampling["prompts_drawn"] <= 50 and (sampling["rounds"] == 1) == (sampling["prompts_drawn"] == 40)
        metrics = json.loads((dapo_loop / f"metrics/rl/iter_{key}.json").read_text())
        assert metrics["zero_variance_fraction"] == 0.0 and metrics["prompts"] == 40
    with open(dapo_loop / "metrics/rl_progress.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["groups_kept"], int(row["prompts_drawn"]) >= 40) for row in rows] == [("40", True), ("40", True)]
    page = (dapo_loop / "reports/rl-loop.html").read_text()
    assert "prompts drawn / groups kept" in page and " / 40</td>" in page


@pytest.mark.e2e
def test_a_cap_below_what_the_groups_need_keeps_what_it_found_and_a_second_run_does_nothing(dapo_loop):
    assert "Running stage" not in sh("dvc repro rl_progress", dapo_loop).stdout
    params_path = dapo_loop / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["rl"]["collect"]["dynamic_sampling"] = {"groups": 40, "max_prompts": 41}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc repro rl_collect@001", dapo_loop, timeout=600)
    sampling = json.loads((dapo_loop / "metrics/rl/sampling_001.json").read_text())
    assert sampling["prompts_drawn"] <= 41 and sampling["groups_kept"] == min(40, sampling["informative_groups"])
