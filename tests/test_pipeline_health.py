"""The profile stage and the rollout health checks in the DVC pipeline, for real: `dvc repro` in a copied project
whose embedded server answers some requests with degenerate generations (empty ones, runaway repetitions)."""

from __future__ import annotations

import json

import pytest
import yaml

from dvc_testkit import copy_project, sh, stages_run
from support import read_jsonl

pytestmark = pytest.mark.e2e

PROMPTS = 24


@pytest.fixture(scope="module")
def degenerate_project(tmp_path_factory):
    """A copy with 24 prompts per set, where the embedded server answers 15 % of generations with an empty answer
    and 15 % with a repetition cut off at the length limit, and the SFT filter drops unhealthy rollouts."""
    project = copy_project(tmp_path_factory.mktemp("health"), prompt_count=PROMPTS)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["agents"]["math_agent"]["embedded_args"] = [
        "--fail-empty",
        "0.15",
        "--fail-repetition",
        "0.15",
        "--fault-seed",
        "7",
    ]
    params["filter"]["drop_unhealthy"] = True
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc repro", project, timeout=600)
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm repro", project)
    return project


def test_metrics_count_the_degenerate_rollouts_by_nemo_gyms_check_names(degenerate_project):
    for objective in ("rl", "sft", "dpo"):
        metrics = json.loads((degenerate_project / f"metrics/{objective}.json").read_text())
        health = metrics["health"]
        assert health["healthy"] + health["unhealthy"] + health["unobserved"] == metrics["rollouts"]
        checks = health["checks"]
        # an empty answer is hollow and has zero completion tokens; a repetition cut off at the limit is runaway
        assert checks["agent_turn_hollow"] > 0 and checks["model_call_zero_completion_tokens"] > 0, objective
        assert checks["output_repetition"] > 0 and checks["output_runaway_repetition"] > 0, objective
        assert health["unhealthy"] >= checks["agent_turn_hollow"] + checks["output_repetition"] > 0
    assert "health" in sh("dvc metrics show", degenerate_project).stdout


def test_filter_drops_unhealthy_rollouts_and_pair_never_chooses_one(degenerate_project):
    sft = read_jsonl(degenerate_project / "data/sft/train.jsonl")
    answers = [record["messages"][-1]["content"] for record in sft]
    assert answers and all(answer.strip() and "the answer is the answer is" not in answer for answer in answers)
    summary = json.loads((degenerate_project / "metrics/sft_filter.json").read_text())
    # the repetitions carry no boxed answer (reward 0): they go under below_min_reward, the first reason that applies
    assert summary["kept"] + sum(summary["dropped"].values()) == summary["rollouts"]
    pairs = read_jsonl(degenerate_project / "data/dpo/pairs.jsonl")
    assert pairs
    chosen = [pair["chosen"][0]["content"] for pair in pairs]
    assert all(text.strip() and "the answer is the answer is" not in text for text in chosen)
    rejected = [pair["rejected"][0]["content"] for pair in pairs]
    assert any(not text.strip() or "the answer is the answer is" in text for text in rejected)  # rejected they may be


def test_the_profile_stage_writes_a_line_per_prompt_and_bands_by_difficulty(degenerate_project):
    profile = read_jsonl(degenerate_project / "data/profile/rl.jsonl")
    rollouts = read_jsonl(degenerate_project / "data/rollouts/rl.jsonl")
    assert len(profile) == len({r["task_index"] for r in rollouts}) == PROMPTS
    first = profile[0]
    group = [r for r in rollouts if r["task_index"] == first["task_index"]]
    assert first["n"] == len(group) == 8
    assert first["correct"] == sum(r["reward"] >= 1.0 for r in group)
    assert first["pass_rate"] == round(first["correct"] / 8, 6)
    assert first["difficulty"] in ("easy", "hard")
    bands = json.loads((degenerate_project / "metrics/profile/rl.json").read_text())
    assert sum(bands["bands"].values()) == PROMPTS and bands["band"] == [0.1, 0.9]
    assert set(bands["by"]["difficulty"]) == {"easy", "hard"}
    assert sum(sum(b.values()) for b in bands["by"]["difficulty"].values()) == PROMPTS
    assert bands["all_tied"] == sum(line["all_tied"] for line in profile)


def test_the_report_shows_health_with_examples_and_the_pass_rate_bands(degenerate_project):
    page = (degenerate_project / "reports/rl.html").read_text()
    assert "<h2>Rollout health</h2>" in page and "Health findings by check" in page
    assert "output_runaway_repetition" in page and "so the answer is the answer is" in page
    assert "Prompts by pass rate (profile)" in page and "difficulty = hard" in page


def test_a_health_threshold_reruns_the_stages_that_judge_health_and_never_collects(degenerate_project):
    params_path = degenerate_project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["health"]["repetition_ratio"] = 0.99
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    diff = sh("dvc params diff", degenerate_project).stdout
    assert "health.repetition_ratio" in diff
    ran = stages_run(sh("dvc repro", degenerate_project, timeout=600).stdout)
    assert not {s for s in ran if s.startswith(("collect", "score", "prompts"))}
    assert {"filter", "pair", "report", "metrics@rl", "profile@rl", "metrics@sft"} <= ran
    metrics = json.loads((degenerate_project / "metrics/rl.json").read_text())
    assert metrics["health"]["checks"]["output_repetition"] == 0  # 7 distinct 4-grams in ~280: a ratio of 0.97
    sh("git checkout -q params.yaml && dvc repro", degenerate_project, timeout=600)
