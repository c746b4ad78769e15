"""Rate limits and flaky servers: the collector backs off from a server that turns requests away as they rise
with concurrency, not from random faults; a Retry-After holds back its own request; and it never loses a rollout
to a server that is making progress (real servers over loopback: the embedded one with fault flags, and a
rate-limited one). Assertions count events (requests, cuts, pauses), not wall time."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from reliability_support import collect_command, run_collect
from rollout_pipeline.reference.embedded import start_embedded_server
from support import ROOT, agent, free_port, make_prompts, read_jsonl

RATE_LIMITED = ROOT / "bench" / "rate_limited_server.py"


class RateLimited:
    """bench/rate_limited_server.py: at most `capacity` requests at a time, 429 beyond."""

    def __init__(self, capacity: int, service_ms: float, retry_after: str | None = None, every: int = 1) -> None:
        command = [sys.executable, str(RATE_LIMITED), "--capacity", str(capacity), "--service-ms", str(service_ms)]
        if retry_after:
            command += ["--retry-after", retry_after, "--retry-after-every", str(every)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = re.search(r"listening on (\S+)", self.process.stdout.readline()).group(1)

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as reply:
            return json.loads(reply.read())

    def __enter__(self) -> RateLimited:
        return self

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()
        self.process.wait(10)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return make_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", 100)


@pytest.mark.timing
def test_a_server_failing_a_quarter_of_requests_loses_nothing_over_twenty_runs(prompts, tmp_path):
    flaky = ["--fail-rate", "0.25", "--fault-seed", "7", "--hang-s", "0.3", "--retry-after", "0.01"]
    settings = agent("", timeout_s=1.0, retry_backoff_s=0.001)
    del settings["max_retries"]  # the default (20): what this test is about
    with start_embedded_server(flaky) as server:
        settings["url"] = server.url
        for run in range(20):
            out = tmp_path / f"run{run}.jsonl"
            result = run_collect(
                tmp_path, prompts, out, settings, num_repeats=4, num_samples_in_parallel=64, timeout=120
            )
            assert result.returncode == 0, f"run {run}: {result.stderr[-2000:]}"
            assert len(read_jsonl(out)) == 400
            stats = json.loads((tmp_path / f"run{run}.stats.json").read_text())
            assert stats["failures"] == 0 and sum(stats["retries"].values()) > 0


def test_against_a_rate_limited_server_the_collector_settles_under_its_capacity_and_loses_nothing(prompts, tmp_path):
    """How close to the capacity it runs is a speed, measured side by side in bench/rate_limits.py (family 8):
    here, what holds on a busy machine too: every rollout, few 429s, a limit that came down to the capacity."""
    capacity, service_s, rollouts = 16, 0.02, 800
    with RateLimited(capacity, service_s * 1000) as server:
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            agent(server.url, retry_backoff_s=0.01),
            num_repeats=8,
            num_samples_in_parallel=256,
            timeout=60,
        )
        seen = server.stats()
    assert result.returncode == 0, result.stderr[-2000:]
    stats = json.loads((tmp_path / "out.stats.json").read_text())
    assert seen["ok"] == rollouts
    # Under 0.2 on a quiet machine (bench family 8); a busy one slows the server and the collector unevenly, and
    # 0.39 was seen with both cores loaded. Without the adaptive limit, 256 in flight against 16 is ten or more.
    assert seen["rejected"] / rollouts < 0.6, seen
    (endpoint,) = stats["endpoints"]
    assert endpoint["overloads"] == seen["rejected"] and endpoint["limit_low"] <= capacity
    assert endpoint["limit_ceiling"] == 256 and stats["retries"]["http_429"] == seen["rejected"]


def test_an_endpoint_down_longer_than_give_up_after_s_fails_within_that_plus_one_timeout(prompts, tmp_path):
    settings = agent(
        f"http://127.0.0.1:{free_port()}", give_up_after_s=1.5, timeout_s=1.0, retry_backoff_s=0.05, max_retries=1000
    )
    command = collect_command(tmp_path, prompts, tmp_path / "out.jsonl", settings, limit=2)
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(2)]  # "Found 2 rows!", then "Querying with ...": timed
        assert lines[-1].startswith("Querying with"), lines  # from here, the collector's start-up left out
        started = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        process.kill()
    assert process.returncode == 1
    assert "give_up_after_s" in stderr.splitlines()[-1]
    # give_up_after_s, one request timeout, and the run's own ending, which a busy machine stretches (6.9 s was seen
    # at load 10 on 2 cores). Without the give-up, max_retries=1000 of refused connections would last minutes.
    assert elapsed < 1.5 + 1.0 + 10.0, elapsed


def test_a_retry_after_longer_than_give_up_after_s_is_reported_at_once(prompts, tmp_path):
    with start_embedded_server(["--fail-429", "1.0", "--retry-after", "3600"]) as server:
        started = time.monotonic()
        result = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", agent(server.url), limit=1, timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert "asked to wait 3600 s (Retry-After), longer than give_up_after_s (300 s)" in result.stderr


def test_a_retry_after_is_waited_out_by_its_own_request_and_does_not_count_as_a_retry(prompts, tmp_path):
    with RateLimited(4, 20, retry_after="0.2") as server:
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            agent(server.url, max_retries=0),
            num_repeats=2,
            num_samples_in_parallel=32,
            timeout=60,
        )
        seen = server.stats()
    assert result.returncode == 0, result.stderr[-2000:]  # max_retries 0, yet every 429 was waited out
    stats = json.loads((tmp_path / "out.stats.json").read_text())
    assert seen["ok"] == 200 and seen["rejected"] > 0
    assert stats["wait_s"]["retry_after"] >= 0.2
    (endpoint,) = stats["endpoints"]
    assert endpoint["pauses"] == 0, "the server kept answering: no reason to stop every request"


def test_a_retry_after_on_one_request_does_not_stall_the_others(prompts, tmp_path):
    log = tmp_path / "requests.ndjson"
    flags = ["--fail-429", "0.1", "--retry-after", "3", "--fault-seed", "3", "--request-log", str(log)]
    with start_embedded_server(flags) as server:
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            agent(server.url, retry_backoff_s=0.001),
            limit=40,
            num_samples_in_parallel=4,
            seed=5,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    requests = read_jsonl(log)
    first = next(i for i, request in enumerate(requests) if request["status"] == "fault:429")
    retried = next(i for i in range(first + 1, len(requests)) if requests[i]["seed"] == requests[first]["seed"])
    answered_meanwhile = sum(request["status"] == "200" for request in requests[first + 1 : retried])
    # While it waited 3 s, the other rollouts went on (a pause of the whole endpoint would have let through only
    # the other 3 slots' next requests before this retry).
    assert first < 10 and answered_meanwhile >= 12, (first, retried, answered_meanwhile)


def test_random_overloads_from_a_flaky_server_are_tolerated_and_do_not_lower_the_limit(prompts, tmp_path):
    # The mix at 25 %: HTML 502 and 503, 429 with Retry-After 0.2 s or an HTTP date, cut-off JSON, no
    # choices, trickled bodies, resets. The server never has more than the collector's 32 requests in flight and
    # takes most of them at every level: its 429s and 503s are noise, not congestion.
    kinds = ("502", "503", "429", "429-date", "malformed", "missing-fields", "trickle", "reset")
    flags = ["--fault-seed", "7", "--retry-after", "0.2", "--hang-s", "0.3"]
    for kind in kinds:
        flags += [f"--fail-{kind}", str(0.25 / len(kinds))]
    with start_embedded_server(flags) as server:
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            agent(server.url, max_retries=20),
            num_repeats=3,
            num_samples_in_parallel=32,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    stats = json.loads((tmp_path / "out.stats.json").read_text())
    assert stats["failures"] == 0 and len(read_jsonl(tmp_path / "out.jsonl")) == 300
    (endpoint,) = stats["endpoints"]
    # Was 34 cuts down to 2: a cut per 429 or 503. Now at most a few while too little is known.
    assert endpoint["limit_decreases"] <= 3 and endpoint["limit_low"] >= 16, endpoint
    assert endpoint["overloads"] >= 20 and endpoint["tolerated"] >= 0.75 * endpoint["overloads"], endpoint
    assert endpoint["pauses"] == 0, endpoint


def test_sustained_429s_with_retry_after_on_a_third_lower_the_limit_without_pausing_the_endpoint(prompts, tmp_path):
    capacity, rollouts = 16, 800
    with RateLimited(capacity, 50, retry_after="1", every=3) as server:
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            agent(server.url, retry_backoff_s=0.01),
            num_repeats=8,
            num_samples_in_parallel=256,
            timeout=120,
        )
        seen = server.stats()
    assert result.returncode == 0, result.stderr[-2000:]
    stats = json.loads((tmp_path / "out.stats.json").read_text())
    (endpoint,) = stats["endpoints"]
    assert seen["ok"] == rollouts and seen["max_in_flight"] == capacity
    assert seen["rejected"] / rollouts <= 0.3, seen
    assert endpoint["limit_low"] <= capacity and endpoint["limit_decreases"] >= 3, endpoint
    assert endpoint["pauses"] == 0, "one request's Retry-After held back that request only"


def test_a_server_that_turns_everything_away_with_retry_after_pauses_the_whole_endpoint(prompts, tmp_path):
    with RateLimited(0, 20, retry_after="0.5") as server:
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            agent(server.url, give_up_after_s=2.5, retry_backoff_s=0.01),
            limit=4,
            num_samples_in_parallel=4,
            timeout=60,
        )
    assert result.returncode == 1
    (endpoint,) = json.loads((tmp_path / "out.stats.json").read_text())["endpoints"]
    assert endpoint["pauses"] >= 1, endpoint  # nothing succeeded for a second: overloaded as a whole


def test_a_503_with_retry_after_pauses_the_whole_endpoint_and_the_run_completes(prompts, tmp_path):
    from reliability_support import Misbehaving

    with start_embedded_server([]) as upstream, Misbehaving(upstream.url, "503-retry-after", 0.1, seed=1) as proxy:
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            agent(proxy.url),
            limit=20,
            num_repeats=2,
            num_samples_in_parallel=8,
            timeout=60,
        )
        faults = proxy.stats()["faults"]
    assert result.returncode == 0, result.stderr[-2000:]
    (endpoint,) = json.loads((tmp_path / "out.stats.json").read_text())["endpoints"]
    # The server said it is down for a second, as a whole: every request waits, not only the one it answered.
    assert faults.get("503-retry-after", 0) >= 1 and endpoint["pauses"] >= 1, (faults, endpoint)
    assert endpoint["limit_decreases"] == 0, endpoint  # a pause is no congestion: the limit stays


def test_deterministic_client_errors_are_sent_exactly_once(prompts, tmp_path):
    from reliability_support import Misbehaving

    with start_embedded_server([]) as upstream, Misbehaving(upstream.url, "400", 1.0) as proxy:
        result = run_collect(
            tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url), limit=5, num_repeats=2, timeout=60
        )
        posts = proxy.stats()["posts"]
    assert result.returncode == 1 and posts == 10
