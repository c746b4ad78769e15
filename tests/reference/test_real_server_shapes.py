"""The embedded server can answer the way real servers do (its fault kinds), so the whole pipeline is tested
offline on each behaviour: what the collector then scores, skips, retries and reports."""

from __future__ import annotations

import json

import pytest

from rollout_pipeline.reference.embedded import start_embedded_server
from rollout_pipeline.reference.tokens import token_id, tokens
from rollout_pipeline.stages.dpo_pairs import run_pair
from rollout_pipeline.stages.health import check_rollout
from rollout_pipeline.stages.rollout_metrics import run_metrics
from rollout_pipeline.stages.sft_filter import run_filter
from stage_testkit import filter_config, health_config, pair_config
from support import agent, collect, make_prompts, read_jsonl, seed_args, server_stats, write_params

CASES = [
    # (protocol, fault kind, cause in the failures file, skipped, retried)
    ("chat", "abort", "aborted", False, True),
    ("chat", "tool-call", "tool_call", False, False),
    ("chat", "context-length", "context_length", True, False),
    ("chat", "quota", "quota", False, False),
    ("responses", "tool-call", "tool_call", False, False),
    ("responses", "context-length", "context_length", True, False),
    ("agent", "context-length", "context_length", True, False),
    ("agent", "tool-call", "tool_call", False, False),
    ("agent", "ng-transient", "transient", False, True),
    ("agent", "ng-mask", "masked", True, False),
]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return make_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", 3)


@pytest.mark.parametrize("protocol,kind,cause,skipped,retried", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_reply_that_did_not_finish_is_never_scored(protocol, kind, cause, skipped, retried, prompts, tmp_path):
    with start_embedded_server([f"--fail-{kind}", "1.0"]) as server:
        params = write_params(tmp_path, {"math_agent": agent(server.url, protocol=protocol, max_retries=2)})
        out = tmp_path / "out.jsonl"
        result = collect(seed_args(prompts, out, num_repeats=2), tmp_path, params)
        requests = sum(
            n
            for path, n in server_stats(server.url)["requests"].items()
            if path in ("/v1/chat/completions", "/v1/responses", "/run")
        )
    failures = read_jsonl(tmp_path / "out.failures.ndjson")
    assert len(failures) == 6 and {f["cause"] for f in failures} == {cause}
    assert all(f.get("skipped", False) is skipped for f in failures)
    assert requests == 6 * (3 if retried else 1)
    stats = json.loads((tmp_path / "out.stats.json").read_text())
    if skipped:
        assert result.returncode == 0, result.stderr
        assert read_jsonl(out) == [] and stats["skip_causes"] == {cause: 6} and stats["failures"] == 0
        assert (
            "6 rollouts skipped (context_length 6)" if cause == "context_length" else "6 rollouts not scored: masked"
        ) in result.stderr
    else:
        assert result.returncode == 1 and not out.exists()
        assert stats["failure_causes"] == {cause: 6}


def test_a_skipped_prompt_does_not_count_against_max_failure_rate_and_the_rest_are_scored(prompts, tmp_path):
    with start_embedded_server(["--fail-context-length", "0.5", "--fault-seed", "3"]) as server:
        params = write_params(tmp_path, {"math_agent": agent(server.url)})
        result = collect(seed_args(prompts, tmp_path / "out.jsonl", num_repeats=4), tmp_path, params)
    assert result.returncode == 0, result.stderr
    records, failures = read_jsonl(tmp_path / "out.jsonl"), read_jsonl(tmp_path / "out.failures.ndjson")
    assert records and failures and len(records) + len(failures) == 12
    assert {(r["task_index"], r["rollout_index"]) for r in records}.isdisjoint(
        {(f["task_index"], f["rollout_index"]) for f in failures}
    )


def test_metrics_count_the_skips_by_cause_and_sft_and_dpo_see_only_scored_rollouts(prompts, tmp_path):
    with start_embedded_server(["--fail-context-length", "0.5", "--fault-seed", "3"]) as server:
        params = write_params(tmp_path, {"math_agent": agent(server.url)})
        out = tmp_path / "out.jsonl"
        assert collect(seed_args(prompts, out, num_repeats=4), tmp_path, params).returncode == 0
    skipped = len(read_jsonl(tmp_path / "out.failures.ndjson"))
    run_metrics(out, tmp_path / "m.json", 1.0, curve_path=tmp_path / "curve.json", health=health_config())
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["skipped"] == skipped and metrics["not_scored"] == {"context_length": skipped}
    assert metrics["rollouts"] == 12 - skipped and metrics["failures"] == 0
    scored = {(r["task_index"], r["rollout_index"]) for r in read_jsonl(out)}
    run_filter(out, tmp_path / "sft.jsonl", filter_config(min_reward=-1.0))
    assert len(read_jsonl(tmp_path / "sft.jsonl")) <= len(scored)
    run_pair(out, tmp_path / "dpo.jsonl", pair_config())
    assert all(p["prompt_id"] in {r["prompt_id"] for r in read_jsonl(out)} for p in read_jsonl(tmp_path / "dpo.jsonl"))


def _collect_with(server_args: list[str], agent_overrides: dict, prompts, tmp_path, **extra) -> list[dict]:
    with start_embedded_server(server_args) as server:
        params = write_params(tmp_path, {"math_agent": agent(server.url, **agent_overrides)})
        result = collect(seed_args(prompts, tmp_path / "out.jsonl", **extra), tmp_path, params)
    assert result.returncode == 0, result.stderr
    return read_jsonl(tmp_path / "out.jsonl")


@pytest.mark.parametrize("repeat_mode", ["separate", "n"])
def test_token_ids_and_logprobs_are_kept_under_nemo_gyms_names_with_exact_usage(repeat_mode, prompts, tmp_path):
    records = _collect_with([], {"token_data": "ids", "repeat_mode": repeat_mode}, prompts, tmp_path, num_repeats=3)
    for record in records:
        last = record["response"]["output"][-1]
        generated = tokens(record["output"])
        assert last["generation_token_ids"] == [token_id(t) for t in generated]
        assert len(last["generation_log_probs"]) == len(generated) == record["response"]["usage"]["output_tokens"]
        assert all(lp <= 0.0 for lp in last["generation_log_probs"])
        assert last["prompt_token_ids"] == [token_id(t) for m in record["input"] for t in tokens(m["content"])]
        assert "output_tokens_estimated" not in record["response"]["usage"]  # exact per choice, even with n
        assert check_rollout(record, health_config()).verdict == "healthy"  # the token data agrees with usage


def test_reasoning_is_kept_as_a_reasoning_item_and_becomes_sfts_reasoning_content(prompts, tmp_path):
    records = _collect_with(["--reasoning"], {}, prompts, tmp_path)
    items = [r["response"]["output"][0] for r in records]
    assert all(i["type"] == "reasoning" and "compute" in i["content"][0]["text"] for i in items)
    run_filter(tmp_path / "out.jsonl", tmp_path / "sft.jsonl", filter_config(min_reward=-1.0))
    assert all(
        line["messages"][-1]["reasoning_content"].startswith("I need to compute")
        for line in read_jsonl(tmp_path / "sft.jsonl")
    )


def test_a_refusal_is_a_finished_answer_kept_as_a_refusal_part(prompts, tmp_path):
    records = _collect_with(["--fail-refusal", "1.0"], {}, prompts, tmp_path)
    for record in records:
        assert record["output"] == "" and record["reward"] == 0.0
        assert record["response"]["output"][-1]["content"] == [
            {"type": "refusal", "refusal": "I'm sorry, I can't help with that."}
        ]
        assert check_rollout(record, health_config()).verdict == "healthy", "a refusal is an answer, not a hollow turn"


@pytest.mark.parametrize("protocol", ["chat", "responses"])
@pytest.mark.parametrize(
    ("kind", "findings"),
    [
        ("empty", {"agent_turn_hollow", "model_call_zero_completion_tokens"}),
        ("repetition", {"output_repetition", "output_runaway_repetition"}),
    ],
)
def test_a_degenerate_generation_is_scored_and_the_health_checks_name_it(protocol, kind, findings, prompts, tmp_path):
    records = _collect_with(
        [f"--fail-{kind}", "1.0"],
        {"protocol": protocol},
        prompts,
        tmp_path,
        responses_create_params__max_output_tokens=64,
    )
    assert len(records) == 3
    for record in records:
        assert record["reward"] == 0.0
        usage = record["response"]["usage"]["output_tokens"]
        if kind == "repetition":
            assert record["response"]["status"] == "incomplete" and usage == 64 == len(record["output"].split())
        else:
            assert record["output"] == "" and usage == 0
        health = check_rollout(record, health_config())
        assert health.verdict == "unhealthy" and set(health.findings) == findings
