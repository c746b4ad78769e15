"""Hostile inputs, round 2: ids that two prompts share, secrets a server echoes, progress a settings change would
have destroyed, `where` expressions that never end. Real processes and sockets, as the rest of the suite."""

from __future__ import annotations

import json
from pathlib import Path

from reliability_support import Misbehaving, one_line_error, run_collect
from rollout_pipeline.stages.dpo_pairs import run_pair
from rollout_pipeline.stages.rollout_metrics import run_metrics
from stage_testkit import health_config, make_rollout, pair_config, write_rollouts
from support import agent, read_jsonl


def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# -- 1. two prompts under one id -----------------------------------------------------------------------------
def test_two_different_prompts_under_one_id_are_refused_naming_both_lines(tmp_path):
    prompts = _rows(
        tmp_path / "prompts.jsonl",
        [
            {"task_id": "t1", "prompt": "What is 65 - 43 - 17?", "expected_answer": "5"},
            {"task_id": "t2", "prompt": "What is 2 + 2?", "expected_answer": "4"},
            {"task_id": "t1", "prompt": "What is 73 * 9 * 4 - 583?", "expected_answer": "2045"},
        ],
    )
    line = one_line_error(run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent("http://127.0.0.1:9")))
    assert f"{prompts}:1 and {prompts}:3 share the id 't1' but hold different prompts" in line
    assert "unique 'id' / 'task_id'" in line and not (tmp_path / "out.jsonl").exists()


def test_the_same_prompt_twice_under_one_id_is_two_tasks(tmp_path, embedded_server):
    prompts = _rows(
        tmp_path / "prompts.jsonl", [{"task_id": "t1", "prompt": "What is 2 + 2?", "expected_answer": "4"}] * 2
    )
    result = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent(embedded_server.url), num_repeats=2)
    assert result.returncode == 0, result.stderr
    assert [r["task_index"] for r in read_jsonl(tmp_path / "out.jsonl")] == [0, 0, 1, 1]


def test_stages_group_by_task_so_rows_sharing_an_id_never_pair_across_prompts(tmp_path):
    records = [
        make_rollout("same-id", task, i, reward, f"answer {task}-{i}", question=f"question {task}")
        for task in range(2)
        for i, reward in enumerate((1.0, 0.0))
    ]
    source = write_rollouts(tmp_path / "r.jsonl", records)
    run_pair(source, tmp_path / "pairs.jsonl", pair_config())
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert len(pairs) == 2
    for pair in pairs:
        task = pair["chosen"][0]["content"].split()[1].split("-")[0]
        assert pair["rejected"][0]["content"].startswith(f"answer {task}-")
        assert pair["prompt"][-1]["content"] == f"question {task}"
    metrics = run_metrics(source, tmp_path / "m.json", 1.0, health=health_config()).metrics
    assert metrics["prompts"] == 2 and metrics["group_size_max"] == 2


# -- 3. secrets ----------------------------------------------------------------------------------------------
KEY = "sk-test-7f3a9c2e5b1d4f6a8c0e2b4d6f8a0c2e"
PASSWORD = "hunter2-very-secret"


def _everything_written(directory: Path, result) -> str:
    """Every file the run wrote (not the params.yaml the test wrote), and both streams."""
    files = "".join(
        p.read_text(errors="replace") for p in directory.rglob("*") if p.is_file() and p.name != "params.yaml"
    )
    return files + result.stdout + result.stderr


def test_a_key_a_server_echoes_back_appears_in_no_file_and_no_line(tmp_path):
    from reliability_support import Misbehaving
    from rollout_pipeline.reference.embedded import start_embedded_server

    prompts = _rows(
        tmp_path / "prompts.jsonl", [{"prompt": f"What is {i} + 1?", "expected_answer": str(i + 1)} for i in range(3)]
    )
    with start_embedded_server([]) as upstream, Misbehaving(upstream.url, "401-echo", 1.0) as proxy:
        result = run_collect(
            tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url, api_key_env="TEST_KEY"), env={"TEST_KEY": KEY}
        )
        assert proxy.stats()["posts"] == 3
    assert result.returncode == 1
    written = _everything_written(tmp_path, result)
    assert "invalid key Bearer ***" in written  # the server's message is kept, its copy of the key is not
    assert KEY not in written


def test_a_urls_password_appears_in_no_file_and_no_line(tmp_path):
    from support import free_port

    prompts = _rows(tmp_path / "prompts.jsonl", [{"prompt": "What is 1 + 1?", "expected_answer": "2"}])
    url = f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"
    result = run_collect(
        tmp_path, prompts, tmp_path / "out.jsonl", agent(url, max_retries=1, give_up_after_s=0.5, retry_backoff_s=0.01)
    )
    assert result.returncode == 1
    written = _everything_written(tmp_path, result)
    assert "***@127.0.0.1" in written and PASSWORD not in written


# -- 5. a mistaken run never destroys resumable progress -----------------------------------------------------
def _partial_run(tmp_path: Path, server_url: str, prompts: Path, **run) -> int:
    """A run through a proxy that fails some rollouts for good: it exits 1 and keeps the rest. Returns how many."""
    with Misbehaving(server_url, "400", 0.3, seed=3) as proxy:
        first = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url), num_repeats=2, seed=1, **run)
    assert first.returncode == 1
    return len(read_jsonl(tmp_path / ".out.jsonl.progress.jsonl")) - 1


def _run_counting_requests(tmp_path: Path, server_url: str, prompts: Path, **run) -> tuple:
    """(the run, how many requests it sent) into out.jsonl."""
    from support import server_stats

    before = server_stats(server_url)["requests"].get("/v1/chat/completions", 0)
    result = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent(server_url), num_repeats=2, **run)
    assert result.returncode == 0, result.stderr
    return result, server_stats(server_url)["requests"]["/v1/chat/completions"] - before


def _same_as_a_clean_run(tmp_path: Path, server_url: str, prompts: Path) -> bool:
    clean = run_collect(tmp_path, prompts, tmp_path / "clean.jsonl", agent(server_url), num_repeats=2, seed=1)
    assert clean.returncode == 0
    return (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "clean.jsonl").read_bytes()


def test_a_run_with_other_settings_sets_progress_aside_and_the_old_command_resumes_it(tmp_path, embedded_server):
    prompts = _rows(
        tmp_path / "prompts.jsonl", [{"prompt": f"What is {i} + 7?", "expected_answer": str(i + 7)} for i in range(12)]
    )
    kept = _partial_run(tmp_path, embedded_server.url, prompts)
    assert 0 < kept < 24

    typo, _ = _run_counting_requests(tmp_path, embedded_server.url, prompts, seed=2)
    assert (
        "starting fresh: settings changed since the previous run: seed 1 -> 2; the previous progress is kept in"
        in typo.stdout
    )

    again, asked = _run_counting_requests(tmp_path, embedded_server.url, prompts, seed=1)
    assert f"resuming: {kept} of 24 rollouts already done" in again.stdout
    assert asked == 24 - kept
    assert _same_as_a_clean_run(tmp_path, embedded_server.url, prompts)


def test_appended_prompts_and_a_larger_limit_keep_the_finished_rollouts_of_the_unchanged_prompts(
    tmp_path, embedded_server
):
    rows = [{"prompt": f"What is {i} + 7?", "expected_answer": str(i + 7)} for i in range(16)]
    prompts = _rows(tmp_path / "prompts.jsonl", rows[:12])
    kept = _partial_run(tmp_path, embedded_server.url, prompts, limit=6)
    assert 0 < kept < 12

    with open(prompts, "a") as handle:  # four more prompts, and no limit: 16 prompts, the first 6 unchanged
        handle.writelines(json.dumps(row) + "\n" for row in rows[12:])
    grown, asked = _run_counting_requests(tmp_path, embedded_server.url, prompts, seed=1)
    assert f"resuming: {kept} of 32 rollouts already done; the input grew past the previous run's" in grown.stdout
    assert asked == 32 - kept
    assert _same_as_a_clean_run(tmp_path, embedded_server.url, prompts)


def test_an_edited_prompt_is_not_taken_for_an_appended_one(tmp_path, embedded_server):
    prompts = _rows(
        tmp_path / "prompts.jsonl", [{"prompt": f"What is {i} + 7?", "expected_answer": str(i + 7)} for i in range(4)]
    )
    assert _partial_run(tmp_path, embedded_server.url, prompts) > 0
    text = prompts.read_text().replace("What is 3 + 7?", "What is 3 + 8?").replace('"10"}', '"11"}')
    prompts.write_text(text + json.dumps({"prompt": "What is 9 + 9?", "expected_answer": "18"}) + "\n")
    edited, _ = _run_counting_requests(tmp_path, embedded_server.url, prompts, seed=1)
    assert (
        "starting fresh: the input file changed since the previous run; the previous progress is kept in"
        in edited.stdout
    )


# -- 6. `where` expressions that never end, or depend on more than the record --------------------------------
def _filter_setup(tmp_path: Path, where: str, timeout_s: float = 1.0) -> tuple[list[str], Path]:
    from stage_testkit import groups, stage_params
    from support import PY, SCRIPTS

    source = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "a"), (0.9, "b")], [(1.0, "c")]))
    params = stage_params(tmp_path, filter={"where": where, "where_timeout_s": timeout_s})
    out = tmp_path / "sft.jsonl"
    out.write_text("the previous output\n")
    return [PY, str(SCRIPTS / "filter.py"), "--in", str(source), "--out", str(out), "--params", str(params)], out


def test_a_where_that_never_ends_is_stopped_within_its_time_limit_and_leaves_nothing_behind(tmp_path):
    import subprocess
    import time

    command, out = _filter_setup(tmp_path, "until(false; .)")
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 5
    line = one_line_error(result, "filter")
    assert "no record finished within 1 s" in line and "filter.where_timeout_s" in line and "r.jsonl:1" in line
    assert out.read_text() == "the previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "r.jsonl", "sft.jsonl"]


def test_sigterm_stops_a_hanging_where_with_no_temp_file(tmp_path):
    import signal
    import subprocess

    command, out = _filter_setup(tmp_path, "until(false; .)", timeout_s=60)
    from reliability_support import children_of, wait_until

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: children_of(process.pid), timeout=30)  # the watchdog's child is running `where`
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 143 and "terminated; nothing was written" in stderr
    assert out.read_text() == "the previous output\n" and not list(tmp_path.glob(".*.tmp"))


def test_a_where_that_depends_on_the_clock_or_other_input_is_refused(tmp_path):
    import subprocess

    for expression, name in (("now > 0", "now"), ("input | .reward > 0", "input"), ("$__prog_args", "$__prog_args")):
        command, _ = _filter_setup(tmp_path, expression)
        line = one_line_error(subprocess.run(command, capture_output=True, text=True, timeout=30), "filter")
        assert f"filter.where: '{name}' is not allowed in a filter" in line
    command, out = _filter_setup(tmp_path, '.output | contains("now") | not')  # a word in a string is data
    assert subprocess.run(command, capture_output=True, text=True, timeout=30).returncode == 0


# -- 2. a degenerate output never freezes the collector -------------------------------------------------------
def test_scoring_a_degenerate_output_is_linear():
    import time

    from rollout_pipeline.verify.verifiers import verify

    timings = []
    for size in (14_000, 56_000):
        started = time.perf_counter()
        assert verify("math", "\\boxed{" * (size // 7), {"expected_answer": "5"})["reward"] == 0.0
        timings.append(time.perf_counter() - started)
    assert timings[1] < 0.5, timings  # was 21 s at 56 KB (quadratic)


def test_one_degenerate_reply_does_not_time_out_the_others(tmp_path):
    """Eight rollouts, one of which answers with 56 KB of unclosed boxes: none fails with a false timeout."""
    from reliability_support import Misbehaving
    from rollout_pipeline.reference.embedded import start_embedded_server

    prompts = _rows(
        tmp_path / "prompts.jsonl", [{"prompt": f"What is {i} + 2?", "expected_answer": str(i + 2)} for i in range(8)]
    )
    with (
        start_embedded_server(["--latency-ms", "200"]) as upstream,
        Misbehaving(upstream.url, "degenerate-boxes", 0.15, seed=2) as proxy,
    ):
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            agent(proxy.url, timeout_s=5, max_retries=0),
            num_samples_in_parallel=8,
        )
        assert proxy.stats()["faults"].get("degenerate-boxes", 0) >= 1
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 8


# -- 4 and 7. sizes, redirects --------------------------------------------------------------------------------
def _proxy_run(tmp_path: Path, kind: str, **agent_overrides):
    from reliability_support import Misbehaving
    from rollout_pipeline.reference.embedded import start_embedded_server

    prompts = _rows(
        tmp_path / "prompts.jsonl", [{"prompt": f"What is {i} + 2?", "expected_answer": str(i + 2)} for i in range(3)]
    )
    with start_embedded_server([]) as upstream, Misbehaving(upstream.url, kind, 1.0) as proxy:
        result = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url, **agent_overrides))
        posts = proxy.stats()["posts"]
    return result, posts, read_jsonl(tmp_path / "out.failures.ndjson")


def test_a_reply_over_max_reply_bytes_is_refused_once_with_a_clear_reason(tmp_path):
    result, posts, failures = _proxy_run(tmp_path, "degenerate-boxes", max_reply_bytes=4096)
    assert result.returncode == 1 and posts == 3
    assert {f["cause"] for f in failures} == {"reply_too_large"}
    assert "over the agent's max_reply_bytes (4,096)" in failures[0]["error"]


def test_a_redirect_is_not_followed(tmp_path):
    result, posts, failures = _proxy_run(tmp_path, "redirect-302")
    assert result.returncode == 1 and posts == 3
    assert {f["cause"] for f in failures} == {"http_302"}
    assert "redirect to http://127.0.0.2:9/elsewhere; the collector does not follow redirects" in failures[0]["error"]


def test_a_prompt_too_large_for_its_records_is_refused_before_anything_is_sent(tmp_path):
    prompts = _rows(tmp_path / "prompts.jsonl", [{"prompt": "x" * (9 * 1024 * 1024), "expected_answer": "1"}])
    line = one_line_error(run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent("http://127.0.0.1:9")))
    assert f"{prompts}:1: the row is" in line and "over the 8,388,608-byte limit" in line


# -- 7. smaller defects ---------------------------------------------------------------------------------------
def test_smaller_bad_inputs_are_one_clear_line_each(tmp_path):
    cases = {
        "a content part whose text is a number": (
            [
                {
                    "responses_create_params": {
                        "input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]
                    },
                    "expected_answer": "5",
                }
            ],
            {},
            "a content part's 'text' must be a string, got int 5",
        ),
        "object content": (
            [{"messages": [{"role": "user", "content": {"question": "2+2?"}}], "expected_answer": "4"}],
            {},
            "a message's 'content' must be a string or a list of content parts, got dict",
        ),
        "an empty expected answer": (
            [{"prompt": "What is 2 + 2?", "expected_answer": ""}],
            {},
            "'expected_answer' is empty",
        ),
        "a hundred million repeats": (
            [{"prompt": "What is 2 + 2?", "expected_answer": "4"}] * 2,
            {"num_repeats": 100_000_000},
            "over the 100,000,000 one run can index",
        ),
    }
    for name, (rows, extra, expected) in cases.items():
        directory = tmp_path / name.replace(" ", "_")
        directory.mkdir()
        prompts = _rows(directory / "prompts.jsonl", rows)
        line = one_line_error(
            run_collect(directory, prompts, directory / "out.jsonl", agent("http://127.0.0.1:9"), **extra)
        )
        assert expected in line, (name, line)


def test_an_output_without_jsonl_is_refused_so_x_and_x_jsonl_never_share_side_files(tmp_path):
    prompts = _rows(tmp_path / "prompts.jsonl", [{"prompt": "What is 2 + 2?", "expected_answer": "4"}])
    line = one_line_error(run_collect(tmp_path, prompts, tmp_path / "out", agent("http://127.0.0.1:9")))
    assert "the output must be a .jsonl file (e.g. out.jsonl)" in line


def test_rows_appended_while_a_run_is_going_wait_for_the_next_run(tmp_path):
    import subprocess

    from reliability_support import collect_command
    from rollout_pipeline.reference.embedded import start_embedded_server

    prompts = _rows(
        tmp_path / "prompts.jsonl", [{"prompt": f"What is {i} + 1?", "expected_answer": str(i + 1)} for i in range(20)]
    )
    with start_embedded_server(["--latency-ms", "100"]) as server:
        command = collect_command(
            tmp_path, prompts, tmp_path / "out.jsonl", agent(server.url), num_samples_in_parallel=2
        )
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout.readline().startswith("Found 20 rows!")  # the scan is done: the run is going
        with open(prompts, "a") as handle:
            handle.write(json.dumps({"prompt": "What is 100 + 1?", "expected_answer": "101"}) + "\n")
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and len(read_jsonl(tmp_path / "out.jsonl")) == 20
