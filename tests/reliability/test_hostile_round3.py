"""Hostile inputs, round 3: replies bounded in bytes after decoding, in depth and in number ranges; server text
stripped of control characters; secrets that never reach a log. Real processes and sockets, as the rest of the suite."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import BASE_RUN
from reliability_support import (
    Misbehaving,
    children_of,
    collect_command,
    fast_agent,
    one_line_error,
    pid_alive,
    run_collect,
    wait_until,
)
from stage_testkit import health_config
from support import agent, read_jsonl


def _rows(path: Path, count: int = 3) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": f"What is {i} + 2?", "expected_answer": str(i + 2)}) + "\n" for i in range(count))
    )
    return path


def _run_measured(workdir: Path, command: list[str], timeout: float = 90) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MiB) of one collector run; the peak is the kernel's figure for that one
    process (wait4), not for everything the test started."""
    with open(workdir / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=stderr)
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, (workdir / "stderr.txt").read_text(), usage.ru_maxrss / 1024


# -- H1. a compressed reply is bounded after decoding ------------------------------------------------------------
def test_a_gzip_bomb_with_a_small_content_length_is_refused_as_too_large_with_the_collector_memory_bounded(tmp_path):
    from rollout_pipeline.reference.embedded import start_embedded_server

    prompts = _rows(tmp_path / "prompts.jsonl", 4)
    with start_embedded_server([]) as upstream, Misbehaving(upstream.url, "gzip-bomb", 1.0) as proxy:
        command = collect_command(
            tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url, max_retries=0), num_samples_in_parallel=4
        )
        returncode, stderr, peak_mib = _run_measured(tmp_path, command)
        posts = proxy.stats()["posts"]
    failures = read_jsonl(tmp_path / "out.failures.ndjson")
    assert returncode == 1 and posts == 4, stderr
    assert {f["cause"] for f in failures} == {"reply_too_large"}
    assert "over 16,777,216 bytes once decoded, over the agent's max_reply_bytes" in failures[0]["error"]
    # Each 256 MiB bomb is dropped once 16 MiB of it are in. Four at once may each hold their 16 MiB twice while
    # the chunks are joined, over the interpreter's ~60 MiB: about 200-310 MiB measured. Inflated whole, the four
    # take over 1 GiB (2.5 GB was measured before the fix), so half of that tells the two apart on a busy machine.
    assert peak_mib < 512, f"collector peak RSS {peak_mib:.0f} MiB"


# -- M6. input through a pipe -------------------------------------------------------------------------------------
def test_prompts_through_a_pipe_or_process_substitution_are_read_once_and_give_the_file_runs_output(
    tmp_path, embedded_server
):
    prompts = _rows(tmp_path / "prompts.jsonl", 3)
    settings = agent(embedded_server.url)
    from_file = collect_command(tmp_path, prompts, tmp_path / "file.jsonl", settings, num_repeats=2, seed=5)
    assert subprocess.run(from_file, cwd=tmp_path, capture_output=True, timeout=60, check=False).returncode == 0
    from_stdin = collect_command(
        tmp_path, Path("/dev/stdin"), tmp_path / "stdin.jsonl", settings, num_repeats=2, seed=5
    )
    piped = subprocess.run(
        from_stdin, cwd=tmp_path, input=prompts.read_bytes(), capture_output=True, timeout=60, check=False
    )
    assert piped.returncode == 0, piped.stderr
    substituted = collect_command(tmp_path, Path("PROMPTS"), tmp_path / "subst.jsonl", settings, num_repeats=2, seed=5)
    script = " ".join(shlex.quote(arg) for arg in substituted).replace("PROMPTS", f"<(cat {shlex.quote(str(prompts))})")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    expected = (tmp_path / "file.jsonl").read_bytes()
    assert len(read_jsonl(tmp_path / "file.jsonl")) == 6
    assert (tmp_path / "stdin.jsonl").read_bytes() == expected and (tmp_path / "subst.jsonl").read_bytes() == expected
    assert not list(tmp_path.glob(".*progress*")), "a finished run leaves no progress file"


# -- M7, M8. filter's forked `where` child -----------------------------------------------------------------------
def _hanging_filter(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    """filter.py running a `where` that never ends (a 60 s limit): (the stage, its forked child, the output)."""
    from stage_testkit import groups, stage_params, write_rollouts
    from support import PY, SCRIPTS

    source = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "a"), (0.9, "b")], [(1.0, "c")]))
    params = stage_params(tmp_path, filter={"where": "until(false; .)", "where_timeout_s": 60})
    out = tmp_path / "sft.jsonl"
    out.write_text("the previous output\n")
    process = subprocess.Popen(
        [PY, str(SCRIPTS / "filter.py"), "--in", str(source), "--out", str(out), "--params", str(params)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_until(lambda: children_of(process.pid), timeout=30)
    return process, children_of(process.pid)[0], out


def test_a_sigkilled_filter_takes_its_where_child_down_with_it(tmp_path):
    process, child, out = _hanging_filter(tmp_path)
    process.kill()
    process.communicate(timeout=10)
    try:
        assert wait_until(lambda: not pid_alive(child), timeout=10), "the where child outlived its SIGKILLed stage"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # an orphan would spin for ever
    assert out.read_text() == "the previous output\n"


def test_a_where_child_killed_by_a_signal_is_one_line_naming_the_signal(tmp_path):
    process, child, out = _hanging_filter(tmp_path)
    os.kill(child, signal.SIGKILL)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith("filter: error: ")
    assert "filter.where: the worker process was killed by signal SIGKILL" in stderr
    assert out.read_text() == "the previous output\n" and not list(tmp_path.glob(".*.tmp"))


# -- LOW. credentials given twice ---------------------------------------------------------------------------------
def test_url_credentials_together_with_an_api_key_are_one_line_not_a_traceback(tmp_path):
    prompts = _rows(tmp_path / "prompts.jsonl", 1)
    result = run_collect(
        tmp_path,
        prompts,
        tmp_path / "out.jsonl",
        agent("http://user:pw-1234@127.0.0.1:9", api_key_env="ROUND3_KEY"),
        env={"ROUND3_KEY": "sk-abcd"},
    )
    line = one_line_error(result)
    assert "a URL with user:password@ and api_key_env would both set the Authorization header" in line
    assert "pw-1234" not in line and not (tmp_path / "out.jsonl").exists()


# -- M1, M4. replies nested too deep or counting too many tokens --------------------------------------------------
def _proxy_collect(
    workdir: Path,
    prompts: Path,
    upstream: str,
    kind: str,
    rate: float,
    protocol: str = "chat",
    verify: bool = False,
    extra: list[str] = (),
    **overrides,
) -> tuple[subprocess.CompletedProcess, dict]:
    """One collector run through the misbehaving proxy (as the agent, or as its /verify URL); (result, its stats)."""
    with Misbehaving(upstream, kind, rate, seed=5) as proxy:
        settings = (
            fast_agent(upstream, verifier=f"{proxy.url}/verify", **overrides)
            if verify
            else fast_agent(proxy.url, protocol=protocol, **overrides)
        )
        result = run_collect(workdir, prompts, workdir / "out.jsonl", settings, extra=extra, **BASE_RUN)
        assert set(proxy.stats()["faults"]) == {kind}
    stats_path = workdir / "out.stats.json"
    return result, json.loads(stats_path.read_text()) if stats_path.exists() else {}


CASES = {
    "responses": {"protocol": "responses"},
    "agent": {"protocol": "agent"},
    "verify": {"verify": True},
    "chat, 2 processes": {"extra": ["--processes", "2"]},
}


@pytest.mark.parametrize("kind, cause", [("deep-nesting", "invalid_reply"), ("huge-usage", "invalid_reply")])
@pytest.mark.parametrize("case", list(CASES))
def test_a_reply_too_deep_to_write_or_counting_2_63_tokens_is_an_invalid_reply_retried_until_a_good_one(
    tmp_path, prompts, upstream, baseline, case, kind, cause
):
    if kind == "huge-usage" and case == "verify":
        pytest.skip("a /verify reply has no usage")
    result, stats = _proxy_collect(tmp_path, prompts, upstream.url, kind, 0.5, **CASES[case])
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert stats["retries"].get(cause, 0) >= 3 and stats["failures"] == 0
    if case != "verify":  # through a /verify URL, the rewards' extras differ from the in-process verifier's
        assert (tmp_path / "out.jsonl").read_bytes() == baseline(CASES[case].get("protocol", "chat")).read_bytes()


def test_a_reply_too_deep_every_time_fails_in_one_clear_line_and_so_does_the_resume(tmp_path, prompts, upstream):
    for run in range(2):
        result, stats = _proxy_collect(
            tmp_path, prompts, upstream.url, "deep-nesting", 1.0, protocol="responses", max_retries=0
        )
        assert result.returncode == 1 and "Traceback" not in result.stderr, (run, result.stderr)
        assert stats["failure_causes"] == {"invalid_reply": 24}
        assert "HTTP 200 with JSON nested more than 128 levels deep, which no record could hold" in result.stderr
        assert not (tmp_path / "out.jsonl").exists()


# -- M2. a prompt row nested too deep -----------------------------------------------------------------------------
def test_a_prompt_row_nested_too_deep_is_a_file_line_error_before_any_file_is_created(tmp_path):
    deep: object = "bottom"
    for _ in range(300):
        deep = [deep]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "What is 2 + 2?", "expected_answer": "4"})
        + "\n"
        + json.dumps({"prompt": "What is 3 + 3?", "expected_answer": "6", "metadata": deep})
        + "\n"
    )
    line = one_line_error(run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent("http://127.0.0.1:9")))
    assert f"{prompts}:2: the row nests arrays or objects more than 128 levels deep" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml", "prompts.jsonl"]


# -- M3. control characters from servers --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, protocol, cause",
    [
        ("escape-400", "chat", "http_400"),
        ("escape-html-502", "chat", "http_502"),
        ("escape-tool-call", "chat", "tool_call"),
        ("escape-ng-failure", "agent", None),
    ],
)
def test_terminal_escapes_in_server_text_reach_no_line_stats_key_or_metrics_key(
    tmp_path, prompts, upstream, kind, protocol, cause
):
    from rollout_pipeline.stages.rollout_metrics import run_metrics

    result, stats = _proxy_collect(
        tmp_path, prompts, upstream.url, kind, 0.5, protocol=protocol, max_retries=0, max_failure_rate=1.0
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    not_scored = run_metrics(tmp_path / "out.jsonl", tmp_path / "m.json", 1.0, health=health_config()).metrics[
        "not_scored"
    ]
    shown = result.stdout + result.stderr
    keys = " ".join([*stats["failure_causes"], *stats["retries"], *not_scored])
    for raw in ("\x1b", "\x07", "\r", "\u202e"):
        assert raw not in shown and raw not in keys, (raw, shown[-600:], keys)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[32mall rollouts verified OK" in shown  # shown, inert
    if cause is not None:
        assert set(stats["failure_causes"]) == set(not_scored) == {cause}
    else:  # NeMo Gym's failure class is the cause: a stats key, and in the metrics a not_scored key
        assert all(key.startswith("judge\\x1b]0;pwned") for key in [*stats["failure_causes"], *not_scored])


# -- LOW. a key echoed inside a successful reply ------------------------------------------------------------------
def test_a_key_a_server_echoes_inside_a_successful_reply_is_masked_in_the_records(tmp_path, upstream):
    key = "sk-round3-echo-5e8a2c4f9d1b"
    prompts = _rows(tmp_path / "prompts.jsonl", 3)
    with Misbehaving(upstream.url, "echo-200", 1.0) as proxy:
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            agent(proxy.url, api_key_env="ROUND3_KEY"),
            env={"ROUND3_KEY": key},
        )
    assert result.returncode == 0, result.stderr
    records = (tmp_path / "out.jsonl").read_text()
    assert records.count("(you sent Bearer ***)") >= 3  # the reply is kept, the key is not
    written = "".join(path.read_text() for path in tmp_path.iterdir() if path.name != "params.yaml")
    assert key not in written + result.stdout + result.stderr


# -- LOW. a verifier's prints -------------------------------------------------------------------------------------
def test_a_verifiers_prints_go_to_stderr_and_stdout_ends_with_the_reward_json(tmp_path, upstream):
    prompts = _rows(tmp_path / "prompts.jsonl", 3)
    result = run_collect(
        tmp_path,
        prompts,
        tmp_path / "out.jsonl",
        agent(upstream.url, verifier="reliability_verifiers:prints"),
        env={"PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 0, result.stderr
    assert "verifier debug" not in result.stdout and result.stderr.count("verifier debug: scoring") == 3
    assert list(json.loads(result.stdout[result.stdout.index("{") :])) == ["reward"]


# -- LOW. half a UTF-16 pair -------------------------------------------------------------------------------------
def test_a_lone_surrogate_escape_is_read_as_the_replacement_character_not_as_broken_json(tmp_path, upstream):
    prompts = _rows(tmp_path / "prompts.jsonl", 3)
    with Misbehaving(upstream.url, "lone-surrogate", 1.0) as proxy:
        result = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url, max_retries=0))
        posts = proxy.stats()["posts"]
    assert result.returncode == 0 and posts == 3, result.stderr  # once each: not retried as "not JSON"
    assert all(record["output"].endswith(" \ufffd") for record in read_jsonl(tmp_path / "out.jsonl"))


def test_chat_content_as_a_list_of_mistral_chunks_is_joined_and_its_thinking_kept_as_reasoning(tmp_path, upstream):
    prompts = _rows(tmp_path / "prompts.jsonl", 3)
    fault_free = run_collect(tmp_path, prompts, tmp_path / "plain.jsonl", agent(upstream.url), seed=4)
    with Misbehaving(upstream.url, "content-chunks", 1.0) as proxy:
        result = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url, max_retries=0), seed=4)
        posts = proxy.stats()["posts"]
    assert fault_free.returncode == 0 and result.returncode == 0 and posts == 3, result.stderr  # was: retried, failed
    plain, chunked = read_jsonl(tmp_path / "plain.jsonl"), read_jsonl(tmp_path / "out.jsonl")
    assert [r["output"] for r in chunked] == [r["output"] for r in plain]  # the text chunks, joined
    assert [r["reward"] for r in chunked] == [r["reward"] for r in plain]
    for record in chunked:
        reasoning = record["response"]["output"][0]
        assert reasoning["type"] == "reasoning" and reasoning["content"][0]["text"] == "Let me add."


@pytest.mark.parametrize(
    "kind, message",
    [
        ("ids-logprobs-mismatch", "generation_log_probs; there is one logprob per generated token"),
        ("positive-logprob", "has a positive logprob (0.5) in generation_log_probs; a log-probability is at most 0"),
        ("negative-token-id", "has a negative token id (-1) in generation_token_ids"),
    ],
)
def test_token_ids_and_logprobs_a_trainer_cannot_use_are_an_invalid_reply_with_a_clear_message(
    tmp_path, upstream, kind, message
):
    prompts = _rows(tmp_path / "prompts.jsonl", 2)
    with Misbehaving(upstream.url, kind, 1.0) as proxy:
        result = run_collect(
            tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url, max_retries=0, token_data="ids")
        )
    assert result.returncode == 1, result.stderr  # was: exit 0, the broken token data in the records
    failures = read_jsonl(tmp_path / "out.failures.ndjson")
    assert len(failures) == 2 and all(f["cause"] == "invalid_reply" and message in f["error"] for f in failures), (
        failures
    )
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("kind, noted", [("other-model", True), ("model-snapshot", False)])
def test_a_reply_naming_another_model_is_noted_once_and_never_fails_the_run(tmp_path, upstream, kind, noted):
    prompts = _rows(tmp_path / "prompts.jsonl", 3)
    with Misbehaving(upstream.url, kind, 1.0) as proxy:
        result = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url, max_retries=0), num_repeats=2)
    assert result.returncode == 0, result.stderr  # an alias (vLLM's served-model-name) must not fail a run
    notes = [line for line in result.stderr.splitlines() if "the server answers as model" in line]
    if noted:  # was: accepted silently
        assert notes == [
            "note: the server answers as model 'someone-else/other-model' although 'reference' was "
            "asked (an alias or served-model-name, or another model behind the URL); the records keep "
            "the server's name"
        ], result.stderr
    else:  # a dated snapshot of the name asked is the same model
        assert notes == [], result.stderr
    models = {record["response"]["model"] for record in read_jsonl(tmp_path / "out.jsonl")}
    assert models == {"someone-else/other-model" if noted else "reference-2024-08-06"}
