"""Rollout health checks: a verdict per rollout, per prompt and per run; filter may drop unhealthy rollouts and the
pair stage never chooses one."""

from __future__ import annotations

import json

import pytest

from rollout_pipeline.stages.dpo_pairs import run_pair
from rollout_pipeline.stages.health import (
    CHECKS,
    HealthConfig,
    HealthTally,
    check_rollout,
    checked_group,
    foreign_script_share,
    repetition_ratio,
)
from rollout_pipeline.stages.rollout_metrics import compute_metrics
from stage_testkit import (
    group,
    health_config,
    make_rollout,
    pair_config,
    run_script,
    stage_params,
    with_reasoning,
    write_rollouts,
)
from support import read_jsonl

DEFAULT_HEALTH = health_config()  # params.yaml's health section with nothing set: the `Health` model's defaults
RUNAWAY = " ".join(["so", "the", "answer", "is", "the", "answer", "is"] * 60)


def verdict_and_findings(record: dict, config: HealthConfig = DEFAULT_HEALTH) -> tuple[str, set[str], set[str]]:
    health = check_rollout(record, config)
    return health.verdict, set(health.findings), set(health.unobserved)


def truncated(record: dict) -> dict:
    record["response"].update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    return record


def test_a_short_boxed_answer_with_usage_is_healthy():
    assert verdict_and_findings(make_rollout("p", 0, 0, 1.0, "The answer is \\boxed{3}")) == ("healthy", set(), set())


@pytest.mark.parametrize("output", ["", "  \n\t"])
def test_an_empty_or_blank_answer_with_no_reasoning_or_tool_call_is_a_hollow_turn(output):
    verdict, findings, _ = verdict_and_findings(make_rollout("p", 0, 0, 0.0, output, output_tokens=3))
    assert verdict == "unhealthy" and findings == {"agent_turn_hollow"}


def test_reasoning_followed_by_no_answer_is_reasoning_without_answer_and_not_hollow():
    record = with_reasoning(make_rollout("p", 0, 0, 0.0, "", output_tokens=40), "Let me add 3 and 4 ...")
    assert verdict_and_findings(record)[1] == {"reasoning_without_answer"}


def test_a_turn_that_ends_in_a_tool_call_with_no_text_is_not_hollow():
    record = make_rollout("p", 0, 0, 0.0, "", output_tokens=12)
    record["response"]["output"].append({"type": "function_call", "name": "calculator", "arguments": "{}"})
    assert verdict_and_findings(record) == ("healthy", set(), set())


def test_an_empty_text_with_a_refusal_part_is_an_answer_not_a_hollow_turn():
    record = make_rollout("p", 0, 0, 0.0, "", output_tokens=9)
    record["response"]["output"][-1]["content"] = [{"type": "refusal", "refusal": "I can't help with that."}]
    assert verdict_and_findings(record) == ("healthy", set(), set())


def test_zero_completion_tokens_is_unhealthy_and_a_record_without_usage_is_unobserved():
    zero = make_rollout("p", 0, 0, 1.0, "\\boxed{3}", output_tokens=0)
    assert verdict_and_findings(zero)[:2] == ("unhealthy", {"model_call_zero_completion_tokens"})
    no_usage = make_rollout("p", 0, 0, 1.0, "\\boxed{3}")
    del no_usage["response"]["usage"]
    assert verdict_and_findings(no_usage) == ("unobserved", set(), {"model_call_zero_completion_tokens"})


def with_token_data(record: dict, generated: int, prompt: int | None = None, logprobs: int | None = None) -> dict:
    item = record["response"]["output"][-1]
    item["generation_token_ids"] = list(range(generated))
    item["generation_log_probs"] = [-0.1] * (generated if logprobs is None else logprobs)
    if prompt is not None:
        item["prompt_token_ids"] = list(range(prompt))
    return record


@pytest.mark.parametrize(
    ("generated", "prompt", "logprobs", "verdict"),
    [
        (5, 21, None, "healthy"),  # usage: 21 input, 5 output
        (6, 21, None, "unhealthy"),  # one generated token more than usage counts
        (5, 20, None, "unhealthy"),  # the prompt's ids disagree with input_tokens
        (5, None, 4, "unhealthy"),  # a log-prob missing
    ],
)
def test_token_data_whose_lengths_disagree_with_usage_is_a_token_count_mismatch(generated, prompt, logprobs, verdict):
    record = with_token_data(make_rollout("p", 0, 0, 1.0, "x", output_tokens=5), generated, prompt, logprobs)
    got, findings, _ = verdict_and_findings(record)
    assert got == verdict
    assert findings == ({"rollout_token_count_mismatch"} if verdict == "unhealthy" else set())


def test_token_data_with_no_usage_to_compare_with_is_unobserved():
    record = with_token_data(make_rollout("p", 0, 0, 1.0, "x"), 5)
    del record["response"]["usage"]
    assert "rollout_token_count_mismatch" in verdict_and_findings(record)[2]


def test_the_repetition_ratio_is_the_share_of_word_ngrams_seen_before():
    assert repetition_ratio("a b c d e f g h", 2, 1) == 0.0
    assert repetition_ratio("a b a b a b", 2, 1) == pytest.approx(1 - 2 / 5)
    assert repetition_ratio("a b a b a b", 2, 6) == 0.0  # fewer n-grams than the minimum: never called repetitive


def test_an_output_that_repeats_over_the_threshold_is_output_repetition_and_the_threshold_is_a_param():
    record = make_rollout("p", 0, 0, 0.0, RUNAWAY, output_tokens=420)
    assert verdict_and_findings(record)[1] == {"output_repetition"}
    assert verdict_and_findings(record, health_config(repetition_ratio=0.99))[0] == "healthy"
    varied = " ".join(f"step {i}: add {i} and {i + 1} to get {2 * i + 1}." for i in range(40))
    assert verdict_and_findings(make_rollout("p", 0, 0, 1.0, varied, output_tokens=400))[0] == "healthy"


def test_a_generation_cut_off_at_max_output_tokens_while_repeating_is_runaway_and_one_that_finished_is_not():
    # a third of the 4-grams repeat: under repetition_ratio, over runaway_repetition_ratio
    text = " ".join(f"w{i}" for i in range(40)) + " " + " ".join(f"w{i}" for i in range(20))
    assert 0.2 < repetition_ratio(text, 4, 16) < 0.5
    cut = truncated(make_rollout("p", 0, 0, 0.0, text, output_tokens=512))
    assert verdict_and_findings(cut)[1] == {"output_runaway_repetition"}
    assert verdict_and_findings(make_rollout("p", 0, 0, 0.0, text, output_tokens=60))[0] == "healthy"


def test_an_answer_in_a_writing_system_the_prompt_never_uses_is_a_script_mismatch():
    russian = "Сначала сложим числа, потом умножим результат на шесть и получим ответ \\boxed{413}"
    record = make_rollout("p", 0, 0, 0.0, russian, output_tokens=30)
    assert verdict_and_findings(record)[1] == {"output_script_mismatch"}
    assert foreign_script_share(russian, "What is 37 + 48?", 20) > 0.9
    # the same answer to a Russian prompt, an English answer with one foreign word, and a short foreign answer: fine
    asked_in_russian = make_rollout("p", 0, 0, 0.0, russian, question="Сколько будет 37 + 48?", output_tokens=30)
    assert verdict_and_findings(asked_in_russian)[0] == "healthy"
    mostly_english = "First add the two numbers, then multiply by six (шесть) to get \\boxed{413}"
    assert verdict_and_findings(make_rollout("p", 0, 0, 1.0, mostly_english, output_tokens=20))[0] == "healthy"
    assert verdict_and_findings(make_rollout("p", 0, 0, 1.0, "Ответ: 85", output_tokens=4))[0] == "healthy"
    assert verdict_and_findings(record, health_config(script_mismatch_ratio=1.0))[0] == "healthy"


def _consistently_unhealthy(tally: HealthTally, records: list[dict]) -> bool:
    for _ in tally.add_group(records, lambda record: record):
        pass
    return tally.consistently_unhealthy


def test_a_prompt_is_consistently_unhealthy_when_two_or_more_rollouts_have_a_verdict_and_every_one_is_unhealthy():
    tally = HealthTally(DEFAULT_HEALTH)
    hollow = make_rollout("p", 0, 0, 0.0, "")
    fine = make_rollout("p", 0, 1, 1.0, "\\boxed{3}")
    unobserved = make_rollout("p", 0, 2, 1.0, "\\boxed{3}")
    del unobserved["response"]["usage"]
    assert _consistently_unhealthy(tally, [hollow, dict(hollow, rollout_index=1)]) is True
    assert _consistently_unhealthy(tally, [hollow, fine]) is False
    assert _consistently_unhealthy(tally, [hollow, unobserved]) is False  # one computable verdict only
    assert _consistently_unhealthy(tally, [hollow]) is False
    assert tally.table()["checks"]["task_consistently_unhealthy"] == 1


def _checked(records: list[dict]) -> list[tuple[str, set[str], set[str]]]:
    return [
        (health.verdict, set(health.findings), set(health.unobserved))
        for _, health in checked_group(records, lambda record: record, DEFAULT_HEALTH)
    ]


def test_every_copy_of_a_duplicated_task_and_rollout_index_is_unhealthy_as_nemo_gyms_rollout_duplicate_identity():
    # NeMo Gym flags each physical record that claims an identity another one claims (nemo_gym/rollout_health.py
    # _mark_duplicate_identities, NVIDIA-NeMo/Gym@9a974a9dc7b4d1c5abbc62bfcbe03e36a71560cf).
    first, second, third = (make_rollout("p", 4, i, 1.0, "\\boxed{3}") for i in range(3))
    checked = _checked([first, second, dict(second), third])
    assert [verdict for verdict, _, _ in checked] == ["healthy", "unhealthy", "unhealthy", "healthy"]
    assert checked[1][1] == checked[2][1] == {"rollout_duplicate_identity"}


def test_a_copy_further_on_in_a_group_sorted_otherwise_is_flagged_from_there():
    first, second = (make_rollout("p", 4, i, 1.0, "\\boxed{3}") for i in range(2))
    checked = _checked([first, second, dict(first)])
    assert [verdict for verdict, _, _ in checked] == ["healthy", "healthy", "unhealthy"]


def test_a_record_without_task_or_rollout_index_is_unobserved_for_duplicate_identity():
    record = make_rollout("p", 0, 0, 1.0, "\\boxed{3}")
    del record["rollout_index"]
    assert _checked([record, dict(record)]) == [("unobserved", set(), {"rollout_duplicate_identity"})] * 2


def test_metrics_count_each_copy_of_a_duplicated_identity(tmp_path):
    records = group("p0", 0, [(1.0, "\\boxed{3}"), (0.0, "\\boxed{4}")])
    path = write_rollouts(tmp_path / "rl.jsonl", [records[0], records[0], records[1]])
    health = compute_metrics(path, 1.0, health=DEFAULT_HEALTH).metrics["health"]
    assert (health["healthy"], health["unhealthy"]) == (1, 2)
    assert health["checks"]["rollout_duplicate_identity"] == 2


def test_metrics_count_rollouts_by_verdict_and_findings_by_check(tmp_path):
    records = [
        *group("p0", 0, [(1.0, "\\boxed{3}"), (0.0, ""), (0.0, RUNAWAY)]),
        *group("p1", 1, [(0.0, ""), (0.0, "")]),
    ]
    path = write_rollouts(tmp_path / "rl.jsonl", records)
    health = compute_metrics(path, 1.0, health=DEFAULT_HEALTH).metrics["health"]
    assert health == {
        "healthy": 1,
        "unhealthy": 4,
        "unobserved": 0,
        "checks": {
            **dict.fromkeys(CHECKS, 0),
            "agent_turn_hollow": 3,
            "output_repetition": 1,
            "task_consistently_unhealthy": 1,
        },
    }


def sft_rollouts(tmp_path):
    """Four passing rollouts of one prompt: a good one, a repeating one, an empty one (reward 1 by a lenient
    verifier) and another good one."""
    return write_rollouts(
        tmp_path / "sft.jsonl",
        group("p0", 0, [(1.0, "\\boxed{3}"), (1.0, RUNAWAY + " \\boxed{3}"), (1.0, ""), (1.0, "So \\boxed{3}")]),
    )


def test_filter_keeps_unhealthy_rollouts_by_default_and_drops_them_with_drop_unhealthy(tmp_path):
    source = sft_rollouts(tmp_path)
    params = stage_params(tmp_path)
    kept = run_script("filter", "--in", source, "--out", tmp_path / "all.jsonl", "--params", params)
    assert kept.returncode == 0, kept.stderr
    assert len(read_jsonl(tmp_path / "all.jsonl")) == 4
    params = stage_params(tmp_path, filter={"drop_unhealthy": True})
    summary = tmp_path / "summary.json"
    args = ("--in", source, "--out", tmp_path / "healthy.jsonl", "--params", params, "--summary", summary)
    dropped = run_script("filter", *args)
    assert dropped.returncode == 0, dropped.stderr
    answers = [record["messages"][-1]["content"] for record in read_jsonl(tmp_path / "healthy.jsonl")]
    assert answers == ["\\boxed{3}", "So \\boxed{3}"]
    assert json.loads(summary.read_text())["dropped"]["unhealthy"] == 2
    assert "2 unhealthy" in dropped.stdout


def test_pair_never_chooses_an_unhealthy_rollout_even_when_its_reward_is_the_highest(tmp_path):
    source = write_rollouts(
        tmp_path / "dpo.jsonl",
        [
            *group("p0", 0, [(1.0, RUNAWAY + " \\boxed{7}"), (0.5, "\\boxed{7.0}"), (0.0, "\\boxed{6}")]),
            # only the unhealthy rollout is above the worst: no pair at all
            *group("p1", 1, [(1.0, ""), (0.0, "\\boxed{1}"), (0.0, "\\boxed{2}")]),
            # an unhealthy rollout may be the rejected one
            *group("p2", 2, [(1.0, "\\boxed{5}"), (0.0, "")]),
        ],
    )
    summary = run_pair(source, tmp_path / "pairs.jsonl", pair_config())
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert [(p["prompt_id"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("p0", "\\boxed{7.0}", "\\boxed{6}"),
        ("p2", "\\boxed{5}", ""),
    ]
    assert summary.skipped["unhealthy_best"] == 1
    assert "1 only unhealthy rollouts to choose" in summary.lines(pair_config(), "pairs.jsonl")[1]


def test_a_health_threshold_out_of_range_is_a_one_line_error_naming_the_key(tmp_path):
    params = stage_params(tmp_path, health={"repetition_ratio": 1.5})
    result = run_script("filter", "--in", sft_rollouts(tmp_path), "--out", tmp_path / "x.jsonl", "--params", params)
    assert result.returncode != 0
    assert "health.repetition_ratio" in result.stderr and len(result.stderr.strip().splitlines()) == 1
