"""Server faults: every kind alone, mixed at high rates, at 100 % (the retry budget runs out), dead endpoints.

The promise under test: the run completes with every rollout, or fails clearly once the retry budget is
spent; no record ever carries a reward produced by a fault (a run through faults is byte-identical to a
fault-free seeded run); a dead endpoint never hangs the run.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BASE_RUN
from reliability_support import (
    Misbehaving,
    collect_command,
    count_lines,
    fast_agent,
    last_line,
    result_of,
    run_collect,
    run_concurrently,
    wait_until,
)
from rollout_pipeline.reference.embedded import start_embedded_server
from support import free_port, read_jsonl, server_stats

# The embedded server's --fail-<kind> flags and the retry cause the collector reports for each.
EMBEDDED_KINDS = {
    "500": "http_500",
    "502": "http_502",
    "503": "http_503",
    "429": "http_429",
    "429-date": "http_429",
    "reset": "connection",
    "hang": "timeout",
    "trickle": "timeout",
    "malformed": "malformed_json",
    "missing-fields": "invalid_reply",
}
# Faults only a misbehaving server produces: kind -> (protocol, cause, retried?).
PROXY_KINDS = {
    "close/chat": ("chat", "connection", True),
    "garbage/chat": ("chat", "connection", True),
    "wrong-types/chat": ("chat", "invalid_reply", True),
    "wrong-types/responses": ("responses", "invalid_reply", True),
    "wrong-types/agent": ("agent", "invalid_reply", True),
    "bad-usage/chat": ("chat", "invalid_reply", True),
    "bad-usage/responses": ("responses", "invalid_reply", True),
    "bad-usage/agent": ("agent", "invalid_reply", True),
    "empty-choices/chat": ("chat", "invalid_reply", True),
    "no-content/chat": ("chat", "invalid_reply", True),
    "error-200/chat": ("chat", "invalid_reply", True),
    "html-200/chat": ("chat", "malformed_json", True),
    "failed-status/responses": ("responses", "invalid_reply", True),
    "string-reward/agent": ("agent", "invalid_reply", True),
    "no-reward/agent": ("agent", "invalid_reply", True),
    "bool-reward/agent": ("agent", "invalid_reply", True),
    "400/chat": ("chat", "http_400", False),
    "401/chat": ("chat", "http_401", False),
}
# Short timeouts so hangs and trickles cost half a second each.
FAULT_FLAGS = ["--fault-seed", "5", "--hang-s", "1.5", "--retry-after", "0"]


def _stats(out) -> dict:
    return json.loads(out.with_name(out.name.replace(".jsonl", ".stats.json")).read_text())


def _proxy_kinds(protocol: str) -> list[str]:
    """The misbehaving server's kinds that a retry can get past, for one protocol."""
    return sorted({key.split("/")[0] for key, (p, _, retried) in PROXY_KINDS.items() if p == protocol and retried})


def _assert_failed_clearly(result: subprocess.CompletedProcess, out, rollouts: int, causes: set[str]) -> list[dict]:
    """Exit 1, the last line says how many failed and where to look, no output, no reward anywhere."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert last_line(result.stderr).startswith(f"error: {rollouts} of {rollouts} rollouts failed"), result.stderr
    assert not out.exists(), "a failed run writes no output"
    failures = read_jsonl(out.with_name(out.name.replace(".jsonl", ".failures.ndjson")))
    assert len(failures) == rollouts and {f["cause"] for f in failures} <= causes, failures
    assert all("reward" not in f for f in failures)
    progress = out.with_name(f".{out.name}.progress.jsonl")
    assert count_lines(progress) == 1, "only the identity header: no rollout was stored"
    return failures


@dataclass
class FaultRun:
    result: subprocess.CompletedProcess
    out: Path
    elapsed: float
    server: dict  # the server's (or the misbehaving proxy's) own /stats after the run


def _timeouts(kind: str, **overrides) -> dict:
    """Hangs and trickles are cut at 0.5 s; everything else gets a timeout that a loaded CI box never hits."""
    return {"timeout_s": 0.5 if kind in ("hang", "trickle") else 10.0, **overrides}


def _embedded_job(workdir: Path, prompts: Path, flags: list[str], agent_overrides: dict, **seed_extra):
    def job() -> FaultRun:
        with start_embedded_server(flags) as server:
            out = workdir / "out.jsonl"
            started = time.monotonic()
            result = run_collect(
                workdir, prompts, out, fast_agent(server.url, **agent_overrides), timeout=60, **seed_extra
            )
            return FaultRun(result, out, time.monotonic() - started, server_stats(server.url))

    return job


def _proxy_job(
    workdir: Path,
    prompts: Path,
    upstream: str,
    fault: str,
    rate: float,
    agent_overrides: dict,
    proxy_is_verifier: bool = False,
    proxy_seed: int = 3,
    **seed_extra,
):
    def job() -> FaultRun:
        with Misbehaving(upstream, fault, rate=rate, seed=proxy_seed) as proxy:
            out = workdir / "out.jsonl"
            settings = (
                fast_agent(upstream, verifier=f"{proxy.url}/verify", **agent_overrides)
                if proxy_is_verifier
                else fast_agent(proxy.url, **agent_overrides)
            )
            started = time.monotonic()
            result = run_collect(workdir, prompts, out, settings, timeout=60, **seed_extra)
            return FaultRun(result, out, time.monotonic() - started, proxy.stats())

    return job


# -- each kind alone, at 50 %, and all mixed at 60 % ----------------------------------------------------------
@pytest.fixture(scope="module")
def runs_at_50_percent(tmp_path_factory, prompts, upstream):
    jobs = {
        kind: _embedded_job(
            tmp_path_factory.mktemp("alone"),
            prompts,
            [f"--fail-{kind}", "0.5", *FAULT_FLAGS],
            _timeouts(kind, max_retries=15),
            **BASE_RUN,
        )
        for kind in EMBEDDED_KINDS
    }
    mixed = [
        "--fail-rate",
        "0.3",
        "--fail-502",
        "0.06",
        "--fail-503",
        "0.06",
        "--fail-429-date",
        "0.06",
        "--fail-trickle",
        "0.06",
        "--fail-missing-fields",
        "0.06",
        *FAULT_FLAGS,
    ]
    jobs["mixed"] = _embedded_job(
        tmp_path_factory.mktemp("mixed"),
        prompts,
        mixed,
        _timeouts("hang", max_retries=30),
        num_samples_in_parallel=8,
        **BASE_RUN,
    )
    for protocol in ("chat", "responses", "agent"):
        jobs[f"proxy-{protocol}"] = _proxy_job(
            tmp_path_factory.mktemp("proxy"),
            prompts,
            upstream.url,
            ",".join(_proxy_kinds(protocol)),
            0.6,
            {"protocol": protocol, "max_retries": 30},
            **BASE_RUN,
        )
    jobs["verify"] = _proxy_job(
        tmp_path_factory.mktemp("verify"),
        prompts,
        upstream.url,
        "no-reward,close,html-200,error-200",
        0.5,
        {"max_retries": 30},
        proxy_is_verifier=True,
        proxy_seed=4,
        **BASE_RUN,
    )
    return run_concurrently(jobs)


@pytest.mark.parametrize("kind", list(EMBEDDED_KINDS))
def test_each_fault_kind_alone_at_50_percent_loses_nothing_and_fakes_nothing(runs_at_50_percent, baseline, kind):
    run = result_of(runs_at_50_percent, kind)
    assert run.result.returncode == 0, run.result.stderr
    served = run.server["statuses"]["/v1/chat/completions"]
    assert served.get(f"fault:{kind}", 0) >= 3, served
    stats = _stats(run.out)
    assert stats["failures"] == 0 and stats["retries"].get(EMBEDDED_KINDS[kind], 0) >= 3, stats
    assert run.out.read_bytes() == baseline().read_bytes(), "every rollout, each exactly as a fault-free run gives it"


def test_all_fault_kinds_mixed_at_60_percent(runs_at_50_percent, baseline):
    run = result_of(runs_at_50_percent, "mixed")
    assert run.result.returncode == 0, run.result.stderr
    served = run.server["statuses"]["/v1/chat/completions"]
    assert sum(n for status, n in served.items() if status.startswith("fault:")) >= 15, served
    assert len(_stats(run.out)["retries"]) >= 4
    assert run.out.read_bytes() == baseline().read_bytes()


@pytest.mark.parametrize("protocol", ["chat", "responses", "agent"])
def test_misbehaving_server_faults_mixed_at_60_percent(runs_at_50_percent, baseline, protocol):
    run = result_of(runs_at_50_percent, f"proxy-{protocol}")
    assert run.result.returncode == 0, run.result.stderr
    assert set(run.server["faults"]) == set(_proxy_kinds(protocol)), "every kind was drawn"
    assert run.out.read_bytes() == baseline(protocol).read_bytes()


def test_a_misbehaving_verify_url_never_becomes_a_reward(runs_at_50_percent, baseline):
    """The chat reply is fine but the resources server's /verify fails in transit half the time: only the /verify
    request is asked again (a reward that is no number is a verdict, not a transit fault: test_verifier_contract)."""
    run = result_of(runs_at_50_percent, "verify")
    assert run.result.returncode == 0, run.result.stderr
    stats = run.server
    assert stats["paths"] == {"/verify": stats["posts"]} and sum(stats["faults"].values()) >= 5
    records, reference = read_jsonl(run.out), read_jsonl(baseline())
    assert [(r["task_index"], r["rollout_index"], r["output"], r["reward"]) for r in records] == [
        (r["task_index"], r["rollout_index"], r["output"], r["reward"]) for r in reference
    ]


# -- each kind at 100 %: the retry budget runs out, and the run says so -------------------------------------
@pytest.fixture(scope="module")
def runs_at_100_percent(tmp_path_factory, prompts, upstream):
    """Every request faulty: 12 rollouts x (1 + 2 retries) = 36 draws, so every kind of a mix is drawn."""
    every_kind = [flag for kind in EMBEDDED_KINDS for flag in (f"--fail-{kind}", "0.1")]
    # Fault seed 1: its first 36 draws hold all 10 kinds.
    jobs = {
        "embedded": _embedded_job(
            tmp_path_factory.mktemp("full"),
            prompts,
            [*every_kind, *FAULT_FLAGS, "--fault-seed", "1"],
            _timeouts("hang", max_retries=2),
            limit=12,
            num_repeats=1,
        )
    }
    for protocol in ("chat", "responses", "agent"):
        jobs[protocol] = _proxy_job(
            tmp_path_factory.mktemp("full-proxy"),
            prompts,
            upstream.url,
            ",".join(_proxy_kinds(protocol)),
            1.0,
            {"protocol": protocol, "max_retries": 2, "timeout_s": 10.0},
            proxy_seed=5,
            limit=12,
            num_repeats=1,
        )
    for kind in ("400", "401"):
        jobs[kind] = _proxy_job(
            tmp_path_factory.mktemp("full-proxy"),
            prompts,
            upstream.url,
            kind,
            1.0,
            {"max_retries": 2, "timeout_s": 10.0},
            limit=3,
            num_repeats=1,
        )
    for kind, retry_after in (("429", "1"), ("429-date", "2")):
        # retry_backoff_s 0: only the server's Retry-After can make the collector wait between the 2 attempts.
        jobs[f"retry-after-{kind}"] = _embedded_job(
            tmp_path_factory.mktemp("retry-after"),
            prompts,
            [f"--fail-{kind}", "1", "--retry-after", retry_after],
            {"max_retries": 1, "retry_backoff_s": 0, "timeout_s": 10.0, "give_up_after_s": 2.5},
            limit=1,
            num_repeats=1,
        )
    # Four rollouts told to wait 2 s at the same moment: a long wait is announced, once.
    jobs["retry-after-notice"] = _embedded_job(
        tmp_path_factory.mktemp("retry-after-notice"),
        prompts,
        ["--fail-429", "1", "--retry-after", "2"],
        {"max_retries": 1, "retry_backoff_s": 0, "timeout_s": 10.0, "give_up_after_s": 2.5},
        limit=2,
        num_repeats=2,
    )
    return run_concurrently(jobs)


def test_every_fault_kind_at_100_percent_fails_clearly_after_the_retry_budget(runs_at_100_percent):
    run = result_of(runs_at_100_percent, "embedded")
    _assert_failed_clearly(run.result, run.out, 12, set(EMBEDDED_KINDS.values()))
    statuses = run.server["statuses"]["/v1/chat/completions"]
    assert set(statuses) == {f"fault:{kind}" for kind in EMBEDDED_KINDS}, "every kind was drawn, nothing else"
    # 1 + max_retries tries each, and more for the overloads (429, 503), which are waited out, not counted.
    overloads = sum(n for status, n in statuses.items() if status in ("fault:429", "fault:429-date", "fault:503"))
    assert sum(statuses.values()) - overloads <= 12 * (2 + 1) <= sum(statuses.values())
    assert run.elapsed < 30


@pytest.mark.parametrize("protocol", ["chat", "responses", "agent"])
def test_every_misbehaving_server_fault_at_100_percent_fails_clearly(runs_at_100_percent, protocol):
    run = result_of(runs_at_100_percent, protocol)
    kinds = _proxy_kinds(protocol)
    causes = {PROXY_KINDS[f"{kind}/{protocol}"][1] for kind in kinds if f"{kind}/{protocol}" in PROXY_KINDS}
    _assert_failed_clearly(run.result, run.out, 12, causes)
    assert set(run.server["faults"]) == set(kinds), "every kind was drawn"
    assert run.server["posts"] == 12 * (2 + 1)


@pytest.mark.parametrize("kind", ["400", "401"])
def test_a_client_error_other_than_429_is_not_retried_and_its_message_is_shown(runs_at_100_percent, kind):
    run = result_of(runs_at_100_percent, kind)
    failures = _assert_failed_clearly(run.result, run.out, 3, {f"http_{kind}"})
    assert run.server["posts"] == 3, "one request per rollout: retrying cannot fix a bad request"
    assert all(f"HTTP {kind}: injected: " in failure["error"] for failure in failures), "the server's own message"


@pytest.mark.parametrize("kind", ["429", "429-date"])
def test_retry_after_is_honoured_in_seconds_and_as_an_http_date(runs_at_100_percent, kind):
    run = result_of(runs_at_100_percent, f"retry-after-{kind}")
    _assert_failed_clearly(run.result, run.out, 1, {"http_429"})
    # A 429 is waited out (it does not count toward max_retries: 1) until give_up_after_s passes with no success.
    assert run.server["requests"]["/v1/chat/completions"] >= 2
    assert _stats(run.out)["wall_s"] >= 0.9, "waited for Retry-After (1 s; an HTTP date 2 s ahead, to the second)"
    assert (
        "give_up_after_s"
        in read_jsonl(run.out.with_name(run.out.name.replace(".jsonl", ".failures.ndjson")))[0]["error"]
    )


def test_a_long_retry_after_wait_is_announced_once_not_per_rollout(runs_at_100_percent):
    run = result_of(runs_at_100_percent, "retry-after-notice")
    _assert_failed_clearly(run.result, run.out, 4, {"http_429"})
    notices = [line for line in run.result.stderr.splitlines() if "asked to wait" in line]
    assert notices == [
        "the server asked to wait 2 s before retrying (http_429, Retry-After); waiting (such waits "
        "are shown at most every 30 s)"
    ], run.result.stderr


# -- endpoints that die, come back, or never answer ---------------------------------------------------------
def _dies_and_comes_back(workdir: Path, prompts: Path):
    def job() -> FaultRun:
        port = free_port()
        flags = ["--port", str(port), "--latency-ms", "40"]
        server = start_embedded_server(flags)
        out = workdir / "out.jsonl"
        command = collect_command(
            workdir,
            prompts,
            out,
            # give_up_after_s: the server's restart can take seconds on a busy machine; the run must wait for it.
            fast_agent(server.url, retry_backoff_s=0.05, max_retries=12, give_up_after_s=60),
            num_samples_in_parallel=2,
            **BASE_RUN,
        )
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_until(lambda: count_lines(workdir / ".out.jsonl.progress.jsonl") > 6, 30)
            server.process.kill()  # a crash, not a clean shutdown: the requests in flight fail, and so do the next
            server.stop()  # until the server is back on its port
            server = start_embedded_server(flags)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
            server.stop()
        result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        return FaultRun(result, out, time.monotonic() - started, {})

    return job


def _not_up_yet(workdir: Path, prompts: Path):
    def job() -> FaultRun:
        port = free_port()
        out = workdir / "out.jsonl"
        command = collect_command(
            workdir,
            prompts,
            out,
            # give_up_after_s: the embedded server takes a while to come up on a busy machine
            fast_agent(f"http://127.0.0.1:{port}", retry_backoff_s=0.02, max_retries=12, give_up_after_s=60),
            **BASE_RUN,
        )
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lines = [process.stdout.readline() for _ in range(2)]  # "Found N rows!", "Querying with K ...":
            assert lines[-1].startswith("Querying with"), lines  # the first requests are going out now
            time.sleep(1.0)  # refused connections, retried with backoff (0.02 s, doubling), within give_up_after_s
            with start_embedded_server(["--port", str(port)]):
                rest, stderr = process.communicate(timeout=60)
            stdout = "".join(lines) + rest
        finally:
            process.kill()
        result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        return FaultRun(result, out, time.monotonic() - started, {})

    return job


def _refused_for_good(workdir: Path, prompts: Path):
    def job() -> FaultRun:
        out = workdir / "out.jsonl"
        started = time.monotonic()
        result = run_collect(
            workdir,
            prompts,
            out,
            fast_agent(f"http://127.0.0.1:{free_port()}", max_retries=2),
            num_samples_in_parallel=2,
            num_repeats=4,
            timeout=30,
        )
        return FaultRun(result, out, time.monotonic() - started, {})

    return job


def _drops_packets(workdir: Path, prompts: Path):
    """A host that never completes a TCP handshake, as behind a firewall that drops packets: a listener whose
    accept queue is full (backlog 0, one connection parked in it, never accepted), so the kernel drops SYNs."""

    def job() -> FaultRun:
        with socket.socket() as listener, socket.socket() as parked:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            parked.connect(listener.getsockname())
            out = workdir / "out.jsonl"
            started = time.monotonic()
            agent = fast_agent(
                f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=60, connect_timeout_s=0.3, max_retries=1
            )
            result = run_collect(workdir, prompts, out, agent, num_samples_in_parallel=20, num_repeats=2, timeout=60)
            return FaultRun(result, out, time.monotonic() - started, {})

    return job


@pytest.fixture(scope="module")
def endpoint_runs(tmp_path_factory, prompts):
    mktemp = tmp_path_factory.mktemp
    return run_concurrently(
        {
            "dies": _dies_and_comes_back(mktemp("dies"), prompts),
            "not-up-yet": _not_up_yet(mktemp("not-up-yet"), prompts),
            "refused": _refused_for_good(mktemp("refused"), prompts),
            "drops-packets": _drops_packets(mktemp("drops"), prompts),
            "never-answers": _embedded_job(
                mktemp("never"),
                prompts,
                ["--fail-hang", "1", "--hang-s", "60"],
                {"timeout_s": 0.5, "max_retries": 1},
                num_samples_in_parallel=20,
                num_repeats=4,
            ),
            # 20 fast failures in a row decide it: the run stops then, not when the slow requests time out.
            "hanging-after-give-up": _embedded_job(
                mktemp("give-up"),
                prompts,
                ["--fail-500", "0.85", "--fail-hang", "0.15", "--fault-seed", "2", "--hang-s", "60"],
                {"timeout_s": 30, "max_retries": 0},
                num_samples_in_parallel=24,
                num_repeats=8,
            ),
        }
    )


def test_an_endpoint_that_dies_mid_run_and_comes_back_loses_nothing(endpoint_runs, baseline):
    run = result_of(endpoint_runs, "dies")
    assert run.result.returncode == 0, run.result.stderr
    assert _stats(run.out)["retries"].get("connection", 0) >= 1
    assert run.out.read_bytes() == baseline().read_bytes()


def test_an_endpoint_that_is_not_up_yet_is_waited_for_within_the_retry_budget(endpoint_runs, baseline):
    run = result_of(endpoint_runs, "not-up-yet")
    assert run.result.returncode == 0, run.result.stderr
    assert _stats(run.out)["retries"].get("connection", 0) >= 1
    assert run.out.read_bytes() == baseline().read_bytes()


def test_connection_refused_for_good_gives_up_after_20_rollouts(endpoint_runs):
    run = result_of(endpoint_runs, "refused")
    # A refused connection fails at once: about 1 s on a quiet machine. The bound only tells a give-up from minutes
    # of backed-off retries; 15 s was once exceeded at load 10, with this fixture's five other runs going on beside.
    assert run.elapsed < 25
    assert run.result.returncode == 2 and "Traceback" not in run.result.stderr
    line = last_line(run.result.stderr)
    assert line.startswith("collect.py: error: giving up: the last 20 rollouts all failed"), run.result.stderr
    assert "http://127.0.0.1:" in line and "cannot connect" in line
    failures = read_jsonl(run.out.with_name("out.failures.ndjson"))
    assert 20 <= len(failures) <= 21 and all(f["cause"] == "connection" for f in failures)
    assert not run.out.exists()


def test_a_host_that_drops_packets_fails_within_the_connect_timeout_not_the_request_timeout(endpoint_runs):
    run = result_of(endpoint_runs, "drops-packets")
    line = last_line(run.result.stderr)
    assert line.startswith("collect.py: error: giving up: the last 20 rollouts all failed"), run.result.stderr
    assert "no connection within 0.3 s (is the host reachable? a firewall may be dropping packets)" in line
    # Well under the 60 s one request may take, even on a loaded machine: a few seconds on a quiet one.
    assert run.elapsed < 30, f"took {run.elapsed:.1f} s: timeout_s (60 s) is for replies, not for connecting"
    failures = read_jsonl(run.out.with_name("out.failures.ndjson"))
    assert failures and all(f["cause"] == "connect_timeout" for f in failures)


def test_a_server_that_accepts_and_never_answers_does_not_hang_the_run(endpoint_runs):
    run = result_of(endpoint_runs, "never-answers")
    assert "giving up: the last 20 rollouts all failed" in last_line(run.result.stderr), run.result.stderr
    assert "no complete reply within 0.5 s" in run.result.stderr
    # Well under the 60 s the server would hang each request for, even on a loaded machine: seconds on a quiet one.
    assert run.elapsed < 30, f"took {run.elapsed:.1f} s: waited for the hanging server"


def test_giving_up_does_not_wait_for_requests_still_hanging(endpoint_runs):
    run = result_of(endpoint_runs, "hanging-after-give-up")
    assert "giving up: the last 24 rollouts all failed" in last_line(run.result.stderr), run.result.stderr
    # Well under the 60 s the hanging requests last, even on a loaded machine: seconds on a quiet one.
    assert run.elapsed < 30, f"took {run.elapsed:.1f} s: waited for hanging requests after giving up"


# -- the failure budget -----------------------------------------------------------------------------------
def test_failures_over_max_failure_rate_fail_the_run_keep_the_rest_and_a_rerun_fetches_only_the_missing(
    tmp_path, prompts, baseline, upstream
):
    reference = {(r["task_index"], r["rollout_index"]): r for r in read_jsonl(baseline())}
    out = tmp_path / "out.jsonl"
    with start_embedded_server(["--fail-500", "0.4", "--fault-seed", "9"]) as faulty:
        result = run_collect(tmp_path, prompts, out, fast_agent(faulty.url, max_retries=0), **BASE_RUN)
    assert result.returncode == 1, result.stderr
    failed = len(read_jsonl(tmp_path / "out.failures.ndjson"))
    assert 0 < failed < 24 and last_line(result.stderr).startswith(f"error: {failed} of 24 rollouts failed")
    kept = read_jsonl(tmp_path / ".out.jsonl.progress.jsonl")[1:]
    assert len(kept) == 24 - failed
    assert all(record == reference[(record["task_index"], record["rollout_index"])] for record in kept)

    rerun = run_collect(tmp_path, prompts, out, fast_agent(upstream.url), **BASE_RUN)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {24 - failed} of 24 rollouts already done" in rerun.stdout
    stats = _stats(out)
    assert stats["requests"] == failed and stats["resumed_rollouts"] == 24 - failed
    assert out.read_bytes() == baseline().read_bytes()


def test_failures_within_max_failure_rate_write_only_real_rollouts(tmp_path, prompts, baseline):
    reference = {(r["task_index"], r["rollout_index"]): r for r in read_jsonl(baseline())}
    out = tmp_path / "out.jsonl"
    with start_embedded_server(["--fail-500", "0.3", "--fault-seed", "9"]) as faulty:
        result = run_collect(
            tmp_path, prompts, out, fast_agent(faulty.url, max_retries=0), max_failure_rate=0.9, **BASE_RUN
        )
    assert result.returncode == 0, result.stderr
    records, failures = read_jsonl(out), read_jsonl(tmp_path / "out.failures.ndjson")
    assert failures and len(records) + len(failures) == 24
    assert all(record == reference[(record["task_index"], record["rollout_index"])] for record in records)
    failed_keys = {(f["task_index"], f["rollout_index"]) for f in failures}
    assert not failed_keys & {(r["task_index"], r["rollout_index"]) for r in records}
    assert _stats(out)["failures"] == len(failures)


# -- the verifier misbehaves ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "function,cause",
    [
        ("raises", "verifier_error"),
        ("async_raises", "verifier_error"),
        ("returns_nan", "verifier_error"),
        ("returns_none", "verifier_error"),
        ("returns_string", "verifier_error"),
        ("spins", "verifier_timeout"),
    ],
)
def test_a_verifier_that_raises_or_returns_a_non_reward_fails_only_those_rollouts(
    tmp_path, prompts, baseline, upstream, function, cause
):
    reference = {(r["task_index"], r["rollout_index"]): r for r in read_jsonl(baseline())}
    out = tmp_path / "out.jsonl"
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    result = run_collect(
        tmp_path,
        prompts,
        out,
        fast_agent(upstream.url, verifier=f"reliability_verifiers:{function}", max_retries=1, verify_timeout_s=1),
        env=env,
        max_failure_rate=1.0,
        **BASE_RUN,
    )
    assert result.returncode == 0, result.stderr
    records, failures = read_jsonl(out), read_jsonl(tmp_path / "out.failures.ndjson")
    assert records and failures and len(records) + len(failures) == 24
    assert {f["cause"] for f in failures} == {cause}
    for record in records:  # the others are scored normally (the math verifier's reward) ...
        expected = reference[(record["task_index"], record["rollout_index"])]
        assert (record["output"], record["reward"]) == (expected["output"], expected["reward"])
    # ... and the failed ones have no record at all: never a made-up reward
    assert not {(f["task_index"], f["rollout_index"]) for f in failures} & {
        (r["task_index"], r["rollout_index"]) for r in records
    }
