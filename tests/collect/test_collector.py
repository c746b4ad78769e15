"""The collector, end to end: real collector processes talking to real embedded-server processes over loopback."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

from rollout_pipeline.reference.embedded import start_embedded_server
from support import (
    PY,
    SCRIPTS,
    agent,
    collect,
    count_lines,
    make_prompts,
    read_jsonl,
    seed_args,
    server_stats,
    wait_for,
    write_params,
)

SEED_DOC = Path(__file__).resolve().parents[1] / "seed_docs" / "000_46c80efc949f60b0.txt"


def _served(url: str) -> int:
    """Generation requests the server answered (any status), once requests still in flight have landed."""

    def count() -> int:
        stats = server_stats(url)
        return sum(stats["requests"].get(path, 0) for path in ("/v1/chat/completions", "/v1/responses", "/run"))

    previous = -1
    while (current := count()) != previous:
        previous = current
        time.sleep(0.2)
    return current


@pytest.fixture(scope="module")
def server():
    with start_embedded_server([]) as handle:
        yield handle


@pytest.fixture(scope="module")
def slow_server():
    """20 ms per request: slow enough to interrupt a run in the middle."""
    with start_embedded_server(["--latency-ms", "20"]) as handle:
        yield handle


@pytest.fixture(scope="module")
def prompts_200(tmp_path_factory) -> Path:
    return make_prompts(tmp_path_factory.mktemp("prompts") / "math_prompts.jsonl", 200, seed=7)


def test_200_prompts_times_4_repeats_give_800_sorted_records(tmp_path, server, prompts_200):
    params = write_params(tmp_path, {"math_agent": agent(server.url)})
    out = tmp_path / "rollouts.jsonl"
    result = collect(
        seed_args(prompts_200, out, num_repeats=4, num_samples_in_parallel=16, seed=1), tmp_path, params, check=True
    )

    records = read_jsonl(out)
    assert len(records) == 800
    assert [(r["task_index"], r["rollout_index"]) for r in records] == [(t, k) for t in range(200) for k in range(4)]
    for field in (
        "prompt_id",
        "agent_name",
        "input",
        "output",
        "reward",
        "responses_create_params",
        "response",
        "expected_answer",
        "task_id",
        "extracted_answer",
    ):
        assert field in records[0], field
    assert "Found 200 rows!" in result.stdout
    assert "Querying with 16 concurrent requests" in result.stdout
    printed_mean = json.loads(result.stdout[result.stdout.index("{") :])["reward"]
    assert printed_mean == pytest.approx(sum(r["reward"] for r in records) / 800, abs=1e-6)
    stats = json.loads((tmp_path / "rollouts.stats.json").read_text())
    assert stats["rollouts"] == 800 and stats["failures"] == 0 and stats["requests"] == 800
    assert not list(tmp_path.glob(".*progress*")), "progress file is removed once the output is complete"


def test_the_seed_documents_jq_and_python_snippets_run_verbatim(tmp_path, server, prompts_200):
    params = write_params(tmp_path, {"math_agent": agent(server.url)})
    out = tmp_path / "rollouts.jsonl"
    collect(
        seed_args(prompts_200, out, num_repeats=4, seed=3) + ["+responses_create_params.temperature=0.7"],
        tmp_path,
        params,
        check=True,
    )
    records = read_jsonl(out)

    mean = subprocess.run(
        f"jq -s 'map(.reward) | add/length' {out}", shell=True, capture_output=True, text=True, check=True
    ).stdout
    assert float(mean) == pytest.approx(sum(r["reward"] for r in records) / len(records))

    document = SEED_DOC.read_text()
    snippets = [block.split("```", 1)[0] for block in document.split("```python\n")[1:]]
    sft_snippet, dpo_snippet = snippets
    scope = {"rollouts": records}
    exec(sft_snippet, scope)
    exec(dpo_snippet, scope)
    assert scope["high_quality"] and all(r["reward"] >= 0.8 for r in scope["high_quality"])
    assert len(scope["pairs"]) == 200 and all(isinstance(p["chosen"], str) for p in scope["pairs"])


def test_a_seeded_run_is_byte_for_byte_reproducible(tmp_path, server, prompts_200):
    params = write_params(tmp_path, {"math_agent": agent(server.url)})
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for out in (first, second):
        collect(seed_args(prompts_200, out, num_repeats=2, seed=11, limit=50), tmp_path, params, check=True)
    assert first.read_bytes() == second.read_bytes()


def _kill_midway(command: list[str], progress: Path, at_least: int, cwd: Path) -> None:
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: count_lines(progress) > at_least or process.poll() is not None)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_resume_after_sigkill_sends_only_the_missing_requests(tmp_path, slow_server, prompts_200):
    params = write_params(tmp_path, {"math_agent": agent(slow_server.url)})
    out = tmp_path / "rl.jsonl"
    args = seed_args(prompts_200, out, num_repeats=4, num_samples_in_parallel=8, seed=5, limit=100)
    command = [PY, str(SCRIPTS / "collect.py"), *args, "--no-progress", "--params", str(params)]
    progress = tmp_path / ".rl.jsonl.progress.jsonl"

    _kill_midway(command, progress, at_least=80, cwd=tmp_path)
    finished_before = count_lines(progress) - 1  # minus the identity header
    assert 0 < finished_before < 400 and not out.exists()

    served_before = _served(slow_server.url)
    result = collect(args, tmp_path, params, check=True)
    assert f"resuming: {finished_before} of 400 rollouts already done" in result.stdout
    assert _served(slow_server.url) - served_before == 400 - finished_before

    resumed = read_jsonl(out)
    keys = [(r["task_index"], r["rollout_index"]) for r in resumed]
    assert keys == sorted(set(keys)) and len(keys) == 400

    uninterrupted = tmp_path / "whole.jsonl"
    collect(
        seed_args(prompts_200, uninterrupted, num_repeats=4, num_samples_in_parallel=8, seed=5, limit=100),
        tmp_path,
        params,
        check=True,
    )
    assert out.read_bytes() == uninterrupted.read_bytes()


@pytest.mark.parametrize("change", ["temperature", "input file"])
def test_changed_settings_or_input_start_fresh_and_say_why(tmp_path, slow_server, prompts_200, change):
    params = write_params(tmp_path, {"math_agent": agent(slow_server.url)})
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(prompts_200.read_bytes())
    out = tmp_path / "rl.jsonl"
    args = seed_args(
        prompts, out, num_repeats=4, num_samples_in_parallel=8, limit=60, responses_create_params__temperature=0.7
    )
    command = [PY, str(SCRIPTS / "collect.py"), *args, "--no-progress", "--params", str(params)]
    _kill_midway(command, tmp_path / ".rl.jsonl.progress.jsonl", at_least=40, cwd=tmp_path)

    if change == "temperature":
        args = [a.replace("temperature=0.7", "temperature=0.9") for a in args]
        expected = "starting fresh: settings changed since the previous run: responses_create_params"
    else:  # a row inserted before the limit: every row after it moves (a row appended past it would change nothing)
        prompts.write_bytes(b'{"prompt": "What is 1 + 1?", "expected_answer": "2"}\n' + prompts.read_bytes())
        expected = "starting fresh: the input file changed since the previous run"
    served_before = _served(slow_server.url)
    result = collect(args, tmp_path, params, check=True)
    assert expected in result.stdout
    assert _served(slow_server.url) - served_before == 240
    if change == "temperature":
        assert all(r["responses_create_params"]["temperature"] == 0.9 for r in read_jsonl(out))


def test_twenty_percent_mixed_faults_lose_nothing_and_fake_nothing(tmp_path, prompts_200):
    faulty_flags = ["--fail-rate", "0.2", "--fault-seed", "3", "--hang-s", "3", "--retry-after", "0"]
    with start_embedded_server(faulty_flags) as faulty, start_embedded_server([]) as healthy:
        runs = {}
        for name, url in (("faulty", faulty.url), ("healthy", healthy.url)):
            params = write_params(tmp_path, {"math_agent": agent(url, timeout_s=1.0, max_retries=12)})
            out = tmp_path / f"{name}.jsonl"
            collect(
                seed_args(prompts_200, out, num_repeats=4, num_samples_in_parallel=32, seed=9, limit=60),
                tmp_path,
                params,
                check=True,
            )
            runs[name] = out
        stats = json.loads((tmp_path / "faulty.stats.json").read_text())
    assert stats["failures"] == 0 and sum(stats["retries"].values()) > 0
    # Every rollout is there, and each one is exactly what a fault-free server gives for the same seed.
    assert runs["faulty"].read_bytes() == runs["healthy"].read_bytes()


def test_two_endpoints_share_the_load_with_prompt_affinity(tmp_path, prompts_200):
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with (
        start_embedded_server(["--request-log", str(logs[0]), "--latency-ms", "5"]) as a,
        start_embedded_server(["--request-log", str(logs[1]), "--latency-ms", "5"]) as b,
    ):
        params = write_params(tmp_path, {"math_agent": agent([a.url, b.url])})
        collect(
            seed_args(prompts_200, tmp_path / "out.jsonl", num_repeats=4, num_samples_in_parallel=16, limit=80),
            tmp_path,
            params,
            check=True,
        )
    servers_by_prompt = defaultdict(set)
    for index, log in enumerate(logs):
        entries = read_jsonl(log)
        assert entries, "both endpoints get traffic"
        for entry in entries:
            servers_by_prompt[entry["prompt_sha"]].add(index)
    assert len(servers_by_prompt) == 80
    assert all(len(servers) == 1 for servers in servers_by_prompt.values()), "all repeats of a prompt hit one server"


def test_killing_one_of_two_endpoints_mid_run_still_completes(tmp_path, prompts_200):
    with start_embedded_server(["--latency-ms", "10"]) as survivor:
        doomed = start_embedded_server(["--latency-ms", "10"])
        params = write_params(tmp_path, {"math_agent": agent([doomed.url, survivor.url], timeout_s=2)})
        out = tmp_path / "out.jsonl"
        command = [
            PY,
            str(SCRIPTS / "collect.py"),
            *seed_args(prompts_200, out, num_repeats=4, num_samples_in_parallel=16, limit=100),
            "--no-progress",
            "--params",
            str(params),
        ]
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: count_lines(tmp_path / ".out.jsonl.progress.jsonl") > 60)
        doomed.stop()
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert len(read_jsonl(out)) == 400


def test_ng_collect_rollouts_runs_the_seed_command_as_written_on_the_embedded_server(tmp_path, prompts_200):
    (tmp_path / "math_prompts.jsonl").write_bytes(prompts_200.read_bytes())
    write_params(tmp_path, {"math_agent": agent("embedded")})
    command = Path(PY).parent / "ng_collect_rollouts"
    result = subprocess.run(
        f"{command} +agent_name=math_agent +input_jsonl_fpath=math_prompts.jsonl +output_jsonl_fpath=rl_rollouts.jsonl "
        "+num_repeats=8 +responses_create_params.temperature=0.8 +responses_create_params.top_p=0.95",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Found 200 rows!" in result.stdout and "Collecting rollouts" in result.stderr
    assert len(read_jsonl(tmp_path / "rl_rollouts.jsonl")) == 1600


def test_repeat_mode_n_sends_one_request_per_prompt(tmp_path, server, prompts_200):
    params = write_params(tmp_path, {"math_agent": agent(server.url, repeat_mode="n")})
    before = _served(server.url)
    collect(seed_args(prompts_200, tmp_path / "n.jsonl", num_repeats=4, limit=30, seed=2), tmp_path, params, check=True)
    assert _served(server.url) - before == 30
    records = read_jsonl(tmp_path / "n.jsonl")
    assert len(records) == 120 and len({r["response"]["id"] for r in records}) == 120


@pytest.mark.parametrize("protocol", ["responses", "agent"])
def test_responses_and_agent_protocols_give_the_same_record_shape(tmp_path, server, prompts_200, protocol):
    params = write_params(tmp_path, {"math_agent": agent(server.url, protocol=protocol)})
    out = tmp_path / f"{protocol}.jsonl"
    collect(seed_args(prompts_200, out, num_repeats=2, limit=20, seed=4), tmp_path, params, check=True)
    records = read_jsonl(out)
    assert len(records) == 40
    assert all(r["response"]["output"][0]["content"][0]["text"] == r["output"] for r in records)
    assert all(r["reward"] in (0.0, 1.0) and "extracted_answer" in r for r in records)


@pytest.mark.parametrize("protocol", ["chat", "agent"])
def test_a_rows_own_field_named_with_a_leading_underscore_is_kept_in_its_records_like_any_other(
    tmp_path, server, protocol
):
    """The collector's work state travels beside the row (a WorkItem), never inside it: no key of the row's own
    is taken for the collector's and dropped."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"prompt": f"What is {i} + 1?", "expected_answer": str(i + 1), "_source": f"set-{i}"}) + "\n"
            for i in range(3)
        )
    )
    params = write_params(tmp_path, {"math_agent": agent(server.url, protocol=protocol)})
    out = tmp_path / "out.jsonl"
    collect(seed_args(rows, out, num_repeats=2, seed=5), tmp_path, params, check=True)
    records = read_jsonl(out)
    assert sorted((r["task_index"], r["_source"]) for r in records) == [
        (i, f"set-{i}") for i in range(3) for _ in range(2)
    ]
    assert all(r["reward"] in (0.0, 1.0) for r in records)


@pytest.mark.parametrize("protocol", ["chat", "responses", "agent"])
def test_an_output_cut_off_by_the_token_limit_is_never_rewarded_for_a_number_it_did_not_finish(
    tmp_path, server, prompts_200, protocol
):
    # 6 tokens cut the reference policy's "37 + 48 = 85. The final answer is \\boxed{85}." after "85": the last
    # number is right, but no answer was given. Every protocol scores it the same: in the collector (chat,
    # responses) or in the server's /run (agent).
    params = write_params(tmp_path, {"math_agent": agent(server.url, protocol=protocol)})
    out = tmp_path / "cut.jsonl"
    collect(
        seed_args(
            prompts_200, out, num_repeats=2, limit=40, seed=4, **{"responses_create_params.max_output_tokens": 6}
        ),
        tmp_path,
        params,
        check=True,
    )
    records = read_jsonl(out)
    cut = [r for r in records if r["response"]["status"] == "incomplete"]
    assert len(cut) > 40, "most outputs are cut off"
    assert all(r["reward"] == 0.0 and r["extracted_answer"] is None for r in cut)
    assert any(r["output"].rstrip(". ").endswith(r["expected_answer"]) for r in cut), "some stop right after it"


# -- clear errors: one line, no traceback, nothing written -------------------------------------------
def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_malformed_prompt_line_names_file_and_line_and_writes_nothing(tmp_path, server, prompts_200):
    bad = tmp_path / "bad.jsonl"
    lines = prompts_200.read_text().splitlines()
    lines[2] = '{"prompt": "What is 1 + 1?", '
    bad.write_text("\n".join(lines) + "\n")
    params = write_params(tmp_path, {"math_agent": agent(server.url)})
    out = tmp_path / "out.jsonl"
    out.write_text("previous output\n")
    error = _one_line_error(collect(seed_args(bad, out), tmp_path, params))
    assert f"{bad}:3: not valid JSON" in error
    assert out.read_text() == "previous output\n"


def test_an_unknown_agent_lists_the_known_ones(tmp_path, prompts_200):
    params = write_params(tmp_path, {"math_agent": agent(), "code_agent": agent()})
    error = _one_line_error(
        collect(seed_args(prompts_200, tmp_path / "o.jsonl", agent_name="math_agnet"), tmp_path, params)
    )
    assert "unknown agent_name 'math_agnet'" in error and "did you mean 'math_agent'" in error
    assert "math_agent, code_agent" in error


def test_an_unknown_argument_suggests_the_closest(tmp_path, prompts_200):
    params = write_params(tmp_path, {"math_agent": agent()})
    error = _one_line_error(collect(seed_args(prompts_200, tmp_path / "o.jsonl") + ["+num_repeat=4"], tmp_path, params))
    assert "+num_repeat" in error and "did you mean 'num_repeats'" in error


def test_a_missing_api_key_names_the_variable_and_the_key_never_leaks(tmp_path, server, prompts_200):
    params = write_params(tmp_path, {"math_agent": agent(server.url, api_key_env="ROLLOUT_TEST_KEY")})
    env = {k: v for k, v in os.environ.items() if k != "ROLLOUT_TEST_KEY"}
    result = subprocess.run(
        [PY, str(SCRIPTS / "collect.py"), *seed_args(prompts_200, tmp_path / "o.jsonl"), "--params", str(params)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert "ROLLOUT_TEST_KEY is not set" in _one_line_error(result)

    secret = "sk-test-0123456789abcdef"
    collect(
        seed_args(prompts_200, tmp_path / "o.jsonl", limit=10),
        tmp_path,
        params,
        env={"ROLLOUT_TEST_KEY": secret},
        check=True,
    )
    for path in tmp_path.iterdir():
        assert secret not in path.read_text(errors="replace"), path


def test_a_dead_server_names_the_url_and_does_not_hang(tmp_path, prompts_200):
    dead = "http://127.0.0.1:9"  # discard port: nothing listens there
    params = write_params(tmp_path, {"math_agent": agent(dead, max_retries=2)})
    result = collect(seed_args(prompts_200, tmp_path / "o.jsonl", limit=5), tmp_path, params, timeout=60)
    assert result.returncode != 0
    assert dead in result.stderr and "Traceback" not in result.stderr
    failures = read_jsonl(tmp_path / "o.failures.ndjson")
    assert len(failures) == 5 and all(f["cause"] == "connection" for f in failures)
    assert not (tmp_path / "o.jsonl").exists(), "no output with made-up rewards"


def test_running_a_finished_standalone_command_again_asks_nothing_unless_forced(tmp_path, embedded_server):
    prompts = make_prompts(tmp_path / "prompts.jsonl", 5)
    params = write_params(tmp_path, {"math_agent": agent(embedded_server.url)})
    args = seed_args(prompts, tmp_path / "out.jsonl", num_repeats=2, seed=4)
    first = collect(args, tmp_path, params, check=True)
    before = server_stats(embedded_server.url)["requests"]["/v1/chat/completions"]
    again = collect(args, tmp_path, params, check=True)
    assert server_stats(embedded_server.url)["requests"]["/v1/chat/completions"] == before
    assert "already collected" in again.stderr and again.stdout.splitlines()[-3:] == first.stdout.splitlines()[-3:]
    forced = collect([*args, "--force"], tmp_path, params, check=True)
    assert server_stats(embedded_server.url)["requests"]["/v1/chat/completions"] == before + 10
    assert "already collected" not in forced.stderr
    (tmp_path / "out.jsonl").write_text((tmp_path / "out.jsonl").read_text())  # touched: no longer as written
    collect(args, tmp_path, params, check=True)
    assert server_stats(embedded_server.url)["requests"]["/v1/chat/completions"] == before + 20


def test_the_exact_reward_sum_stays_small_and_its_mean_exact_for_rewards_near_the_float_maximum():
    """A sum of 1e308s overflows a float: it used to leave a nan partial per value (quadratic: 20,000 rollouts
    took 49 s at the end of the run) and a nan mean."""
    from rollout_pipeline.collect.exact_sum import ExactSum

    total = ExactSum()
    for _ in range(20_000):
        total.add(1e308)
    assert len(total._partials) <= 2
    assert total.mean(20_000) == 1e308 and total.value == float("inf")
    small = ExactSum()
    for value in [0.1] * 10 + [1.0, 0.3]:
        small.add(value)
    assert small.value == math.fsum([0.1] * 10 + [1.0, 0.3])
