"""Against a real language model (SmolLM2-135M under llama-cpp-python's server): the pipeline's records are valid,
its token data is true, and what the model cannot finish is never scored.

A 135M model is bad at arithmetic (its mean reward is near 0), which is fine: these tests check the data, not the
model. The server runs one request at a time, so every run here is small and asks one request at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from dvc_testkit import copy_project, sh
from support import FETCH_KEYS, agent, collect, make_prompts, read_jsonl, seed_args, write_params

MAX_OUTPUT_TOKENS = 48


def real_agent(url: str, **overrides) -> dict:
    return agent(url, model="smollm2", timeout_s=120, max_retries=2, retry_backoff_s=0.2, **overrides)


def _run(
    tmp_path: Path, url: str, prompts: Path, out_name: str = "out.jsonl", agent_overrides: dict | None = None, **extra
):
    params = write_params(tmp_path, {"math_agent": real_agent(url, **(agent_overrides or {}))})
    extra.setdefault("num_samples_in_parallel", 1)
    extra.setdefault("responses_create_params__max_output_tokens", MAX_OUTPUT_TOKENS)
    return collect(seed_args(prompts, tmp_path / out_name, **extra), tmp_path, params, timeout=600)


def test_dvc_repro_of_a_real_objective_writes_valid_rollouts_trl_sft_and_dpo_data_and_metrics(real_server, tmp_path):
    project = copy_project(tmp_path / "project", prompt_count=3)
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    settings = real_agent(real_server, token_data="logprobs")
    params["agents"]["math_agent"] = {k: v for k, v in settings.items() if k not in FETCH_KEYS}
    params["fetch"].update({k: v for k, v in settings.items() if k in FETCH_KEYS}, num_samples_in_parallel=1)
    for name, objective in params["objectives"].items():
        objective.update(seed=5, num_repeats={"rl": 2, "sft": 1, "dpo": 2}.get(name, 1))
        objective["responses_create_params"]["max_output_tokens"] = MAX_OUTPUT_TOKENS
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc repro", project, timeout=900)

    rollouts = read_jsonl(project / "data/rollouts/rl.jsonl")
    assert len(rollouts) == 6 and all(isinstance(r["reward"], float) for r in rollouts)
    for record in rollouts:
        last = record["response"]["output"][-1]
        # One logprob per generated token, as the server counted them; no ids (this server reports none, and
        # re-tokenizing the text could differ from what was sampled).
        assert len(last["generation_log_probs"]) == record["response"]["usage"]["output_tokens"]
        assert "generation_token_ids" not in last
    for line in read_jsonl(project / "data/sft/train.jsonl"):
        assert [m["role"] for m in line["messages"]][-1] == "assistant" and line["reward"] >= 0.8
    for pair in read_jsonl(project / "data/dpo/pairs.jsonl"):
        assert pair["prompt"] and pair["chosen"][0]["role"] == pair["rejected"][0]["role"] == "assistant"
        assert pair["chosen_reward"] > pair["rejected_reward"]
    metrics = json.loads((project / "metrics/rl.json").read_text())
    assert metrics["rollouts"] == 6 and metrics["failures"] == 0 and metrics["skipped"] == 0


def test_two_seeded_runs_are_byte_identical(real_server, tmp_path):
    prompts = make_prompts(tmp_path / "prompts.jsonl", 2)
    for name in ("a.jsonl", "b.jsonl"):
        result = _run(
            tmp_path, real_server, prompts, name, num_repeats=2, seed=11, responses_create_params__temperature=0.8
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_an_over_long_prompt_is_skipped_and_the_stage_succeeds(real_server, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "What is 2 + 2? " + "Think very carefully. " * 400, "expected_answer": "4"})
        + "\n"
        + json.dumps({"prompt": "What is 2 + 2?", "expected_answer": "4"})
        + "\n"
    )
    result = _run(tmp_path, real_server, prompts)
    assert result.returncode == 0, result.stderr
    assert [r["task_index"] for r in read_jsonl(tmp_path / "out.jsonl")] == [1]
    (skip,) = read_jsonl(tmp_path / "out.failures.ndjson")
    assert skip["cause"] == "context_length" and skip["skipped"] is True and skip["task_index"] == 0
    assert skip["reply"]["error"]["code"] == "context_length_exceeded"


def test_a_cut_off_answer_is_incomplete_and_follows_the_truncation_rule(real_server, tmp_path):
    prompts = make_prompts(tmp_path / "prompts.jsonl", 2)
    result = _run(tmp_path, real_server, prompts, responses_create_params__max_output_tokens=4)
    assert result.returncode == 0, result.stderr
    for record in read_jsonl(tmp_path / "out.jsonl"):
        assert record["response"]["status"] == "incomplete"
        assert record["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
        assert record["response"]["usage"]["output_tokens"] == 4


def test_repeat_mode_n_falls_back_to_one_request_per_rollout_when_the_server_ignores_n(real_server, tmp_path):
    prompts = make_prompts(tmp_path / "prompts.jsonl", 2)
    result = _run(tmp_path, real_server, prompts, agent_overrides={"repeat_mode": "n"}, num_repeats=3, seed=3)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ignores `n`") == 1
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [(r["task_index"], r["rollout_index"]) for r in records] == [(t, i) for t in range(2) for i in range(3)]


def test_logprobs_asked_the_responses_way_come_back_from_llama_cpp_python_one_per_token(real_server, tmp_path):
    """`include: [message.output_text.logprobs]` on a chat server becomes `logprobs: true` with `top_logprobs: 0`:
    without top_logprobs, llama-cpp-python's server returns no logprobs at all, and the records held none while
    saying they were asked for."""
    prompts = make_prompts(tmp_path / "p.jsonl", 2, "easy")
    result = _run(
        tmp_path,
        real_server,
        prompts,
        num_repeats=2,
        seed=4,
        responses_create_params__include="[message.output_text.logprobs]",
    )
    assert result.returncode == 0, result.stderr
    for record in read_jsonl(tmp_path / "out.jsonl"):
        last = record["response"]["output"][-1]
        assert len(last["generation_log_probs"]) == record["response"]["usage"]["output_tokens"] > 0
        assert last["generation_log_probs_mode"] == "raw_logprobs"
