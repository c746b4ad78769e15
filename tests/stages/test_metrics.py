"""metrics: one objective's rollouts and run stats -> flat metrics JSON and a pass@k curve."""

from __future__ import annotations

import json
import random
import statistics

import jq
import pytest

from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import side_path
from rollout_pipeline.stages.health import CHECKS
from rollout_pipeline.stages.rollout_metrics import compute_metrics, run_metrics
from stage_testkit import (
    group,
    groups,
    health_config,
    make_rollout,
    random_rollouts,
    run_script,
    stage_params,
    write_rollouts,
)
from support import read_jsonl

RUN_STATS = {
    "rollouts": 12,
    "failures": 1,
    "requests": 14,
    "wall_s": 2.0,
    "throughput_rollouts_per_s": 6.0,
    "latency_s": {"p50": 0.1, "p95": 0.2, "p99": 0.3},
    "retries": {"timeout": 2},
    "tokens": {"input": 252, "output": 120},
}


@pytest.fixture
def three_prompts(tmp_path):
    """p0 half right, p1 always right (no variance), p2 never right (one partial credit)."""
    return write_rollouts(
        tmp_path / "rl.jsonl",
        [
            *group("p0", 0, [(1.0, "a"), (0.0, "b"), (1.0, "c"), (0.0, "d")], output_tokens=10),
            *group("p1", 1, [(1.0, "a"), (1.0, "a"), (1.0, "a"), (1.0, "a")], output_tokens=5),
            *group("p2", 2, [(0.0, "x"), (0.5, "y"), (0.0, "x"), (0.0, "z")], output_tokens=15),
        ],
    )


def test_metrics_of_a_small_file_computed_by_hand(three_prompts):
    (three_prompts.parent / "rl.stats.json").write_text(json.dumps(RUN_STATS))
    rewards = [1, 0, 1, 0, 1, 1, 1, 1, 0, 0.5, 0, 0]
    assert compute_metrics(three_prompts, pass_threshold=1.0, health=health_config()).metrics == {
        "prompts": 3,
        "rollouts": 12,
        "failures": 1,
        "skipped": 0,
        "reward_mean": round(6.5 / 12, 6),
        "reward_std": round(statistics.pstdev(rewards), 6),
        "pass@1": round((2 / 4 + 1 + 0) / 3, 6),
        "pass@2": round(((1 - 1 / 6) + 1 + 0) / 3, 6),  # p0: 1 - C(2,2)/C(4,2)
        "pass@4": round((1 + 1 + 0) / 3, 6),
        "zero_variance_fraction": round(1 / 3, 6),
        "output_tokens_mean": 10.0,
        "group_size_min": 4,
        "group_size_max": 4,
        # short, non-empty outputs with usage: every check evaluated, nothing found
        "health": {"healthy": 12, "unhealthy": 0, "unobserved": 0, "checks": dict.fromkeys(CHECKS, 0)},
        # "N of M scored": the run stats' failure is the difference (this stats file names no cause)
        "coverage": {"expected": 13, "scored": 12, "not_scored": {}},
    }


def test_pass_threshold_decides_what_passes(three_prompts):
    metrics = compute_metrics(three_prompts, pass_threshold=0.5, health=health_config()).metrics
    assert metrics["pass@1"] == round((2 / 4 + 1 + 1 / 4) / 3, 6)


def test_reward_mean_agrees_with_the_design_docs_jq_one_liner(tmp_path):
    source = write_rollouts(tmp_path / "rl.jsonl", random_rollouts(50, 8, seed=3))
    jq_mean = jq.compile("map(.reward) | add/length").input_value(read_jsonl(source)).first()
    assert compute_metrics(source, 1.0, health=health_config()).metrics["reward_mean"] == round(jq_mean, 6)


def test_reward_std_is_stable_on_large_offsets(tmp_path):
    # Sum-of-squares would cancel catastrophically here; the streaming (Welford) update does not.
    rng = random.Random(0)
    rewards = [1e9 + rng.random() for _ in range(400)]
    source = write_rollouts(
        tmp_path / "rl.jsonl", [make_rollout(f"p{i // 4}", i // 4, i % 4, r, "x") for i, r in enumerate(rewards)]
    )
    assert compute_metrics(source, 1.0, health=health_config()).metrics["reward_std"] == pytest.approx(
        statistics.pstdev(rewards), abs=1e-6
    )


def test_unequal_group_sizes_use_each_prompts_own_n(tmp_path):
    source = write_rollouts(
        tmp_path / "rl.jsonl", groups([(1.0, "a"), (0.0, "b"), (0.0, "c"), (0.0, "d")], [(0.0, "e"), (1.0, "f")])
    )
    result = compute_metrics(source, 1.0, health=health_config())
    assert (result.metrics["group_size_min"], result.metrics["group_size_max"]) == (2, 4)
    assert result.metrics["pass@1"] == round((1 / 4 + 1 / 2) / 2, 6)
    assert result.metrics["pass@2"] == round((1 / 2 + 1) / 2, 6)
    assert result.metrics["pass@4"] == 1.0  # only the 4-rollout prompt has a pass@4
    assert result.curve == [{"k": 1, "pass_at_k": 0.375}, {"k": 2, "pass_at_k": 0.75}, {"k": 4, "pass_at_k": 1.0}]


def test_a_single_rollout_prompt_counts_as_zero_variance(tmp_path):
    source = write_rollouts(tmp_path / "sft.jsonl", groups([(1.0, "a")], [(0.0, "b")], [(0.0, "c"), (1.0, "d")]))
    assert compute_metrics(source, 1.0, health=health_config()).metrics["zero_variance_fraction"] == round(2 / 3, 6)


def test_without_a_failures_file_or_run_stats_failures_are_null_not_invented(three_prompts):
    result = compute_metrics(three_prompts, 1.0, health=health_config())
    assert result.metrics["failures"] is None and "throughput_rollouts_per_s" not in result.metrics
    assert result.notes == [f"note: no failures file or run stats beside {three_prompts}; failures are null"]


def test_failures_and_skips_are_counted_from_the_failures_file_and_timing_stays_out(three_prompts):
    (three_prompts.parent / "rl.stats.json").write_text(json.dumps(RUN_STATS))
    side_path(three_prompts, ".failures.ndjson").write_text(
        "".join(
            json.dumps(e) + "\n"
            for e in [
                {"task_index": 3, "rollout_index": 0, "cause": "http_500", "error": "x"},
                {"task_index": 4, "rollout_index": 0, "cause": "context_length", "error": "y", "skipped": True},
                {"task_index": 4, "rollout_index": 1, "cause": "context_length", "error": "y", "skipped": True},
            ]
        )
    )
    metrics = compute_metrics(three_prompts, 1.0, health=health_config()).metrics
    assert (metrics["failures"], metrics["skipped"]) == (1, 2)
    assert metrics["not_scored"] == {"context_length": 2, "http_500": 1}
    assert not any("throughput" in key or key.endswith("_s") for key in metrics)


def test_stats_that_count_other_rollouts_are_flagged_as_stale(three_prompts):
    stats = three_prompts.parent / "rl.stats.json"
    stats.write_text(json.dumps({**RUN_STATS, "rollouts": 99}))
    assert "may be from another run" in compute_metrics(three_prompts, 1.0, health=health_config()).notes[0]
    stats.write_text("{not json")
    with pytest.raises(UserError, match=r"rl\.stats\.json: not valid JSON"):
        compute_metrics(three_prompts, 1.0, health=health_config())


def test_rollouts_without_usage_are_left_out_of_the_token_mean(tmp_path):
    no_usage = make_rollout("p0", 0, 1, 0.0, "b")
    del no_usage["response"]
    source = write_rollouts(tmp_path / "rl.jsonl", [make_rollout("p0", 0, 0, 1.0, "a", output_tokens=7), no_usage])
    result = compute_metrics(source, 1.0, health=health_config())
    assert result.metrics["output_tokens_mean"] == 7.0
    assert "note: 1 rollouts have no response.usage.output_tokens; output_tokens_mean covers the rest" in result.notes


def test_writes_metrics_and_curve_as_json(three_prompts, tmp_path):
    run_metrics(
        three_prompts,
        tmp_path / "m" / "rl.json",
        1.0,
        curve_path=tmp_path / "m" / "pass_at_k" / "rl.json",
        health=health_config(),
    )
    assert json.loads((tmp_path / "m" / "rl.json").read_text())["pass@4"] == round(2 / 3, 6)
    assert [point["k"] for point in json.loads((tmp_path / "m" / "pass_at_k" / "rl.json").read_text())] == [1, 2, 4]


def test_the_script_finds_the_stats_beside_the_input_and_prints_a_summary(three_prompts, tmp_path):
    (tmp_path / "rl.stats.json").write_text(json.dumps(RUN_STATS))
    out, curve = tmp_path / "metrics" / "rl.json", tmp_path / "metrics" / "pass_at_k" / "rl.json"
    result = run_script(
        "metrics",
        "--objective",
        "rl",
        "--in",
        three_prompts,
        "--out",
        out,
        "--curve",
        curve,
        "--params",
        stage_params(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"3 prompts, 12 rollouts, reward mean 0.541667 std {round(statistics.pstdev([1, 0, 1, 0, 1, 1, 1, 1, 0, 0.5, 0, 0]), 6)}, "
        f"pass@1=0.5, pass@2=0.611111, pass@4=0.666667, zero-variance prompts 0.333333 -> {out}",
        "12 of 13 rollouts scored",
    ]
    assert result.stderr == ""
    metrics = json.loads(out.read_text())
    assert metrics["failures"] == 1 and "throughput_rollouts_per_s" not in metrics
    assert json.loads(curve.read_text()) == [
        {"k": 1, "pass_at_k": 0.5},
        {"k": 2, "pass_at_k": 0.611111},
        {"k": 4, "pass_at_k": 0.666667},
    ]


def test_the_script_names_an_unknown_objective_with_a_suggestion(three_prompts, tmp_path):
    result = run_script(
        "metrics",
        "--objective",
        "rll",
        "--in",
        three_prompts,
        "--out",
        tmp_path / "m.json",
        "--params",
        stage_params(tmp_path),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"metrics: error: {tmp_path / 'params.yaml'}: unknown objective 'rll' "
        "(did you mean 'rl'?); known objectives: rl"
    ]


def test_the_script_exits_2_on_an_empty_rollout_file(tmp_path):
    source = write_rollouts(tmp_path / "rl.jsonl", [])
    result = run_script(
        "metrics",
        "--objective",
        "rl",
        "--in",
        source,
        "--out",
        tmp_path / "m.json",
        "--curve",
        tmp_path / "c.json",
        "--params",
        stage_params(tmp_path),
    )
    assert result.returncode == 2
    assert result.stderr == f"metrics: error: {source}: no rollouts; did collect run?\n"
    assert not (tmp_path / "m.json").exists()


def test_the_stats_file_is_named_like_the_collectors_side_files():
    assert str(side_path("data/rollouts/rl.jsonl")) == "data/rollouts/rl.stats.json"
    assert str(side_path("runs/rl.iter3.jsonl")) == "runs/rl.iter3.stats.json"
