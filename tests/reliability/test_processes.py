"""Several collector processes (`--processes N`): the records of one process, and the promises of one process.

The collector can spread a run over forked processes (auto: one per 128 concurrent requests, at most one per
CPU). Each fetches, scores and encodes its share and sends it to the parent, which alone writes files. Under
test: the output is byte for byte what one process writes; the work is shared; and a kill of the parent, of one
child or of the whole process group loses nothing finished, sends no finished rollout again on resume, and
leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from reliability_support import (
    children_of,
    collect_command,
    count_lines,
    fast_agent,
    finished_rollouts,
    last_line,
    listing,
    one_line_error,
    pid_alive,
    run_collect,
    wait_until,
)
from rollout_pipeline.collect.fetcher import rollout_seed
from rollout_pipeline.collect.processes import SLOTS_PER_PROCESS, auto_processes
from rollout_pipeline.reference.embedded import start_embedded_server
from support import ctrl_c_default, held_requests, make_prompts, paused, read_jsonl, start_in_own_group, stop_group

PROMPTS, REPEATS, SEED = 40, 3, 5
TOTAL = PROMPTS * REPEATS
RUN = {"num_repeats": REPEATS, "seed": SEED, "num_samples_in_parallel": 6}
THREE = ["--processes", "3"]
PROGRESS = ".out.jsonl.progress.jsonl"


@pytest.fixture(scope="module")
def many_prompts(tmp_path_factory) -> Path:
    return make_prompts(tmp_path_factory.mktemp("proc-prompts") / "prompts.jsonl", PROMPTS, seed=23)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, many_prompts, upstream) -> Path:
    """The reference: the same seeded run in a single process."""
    work = tmp_path_factory.mktemp("one-process")
    out = work / "out.jsonl"
    result = run_collect(work, many_prompts, out, fast_agent(upstream.url), extra=["--processes", "1"], **RUN)
    assert result.returncode == 0, result.stderr
    assert _stats(out)["processes"] == 1
    return out


def _stats(out: Path) -> dict:
    return json.loads(out.with_name(out.name.replace(".jsonl", ".stats.json")).read_text())


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        children = children_of(frontier.pop())
        found += children
        frontier += children
    return found


def _run_with_every_slot_busy(command: list[str], cwd: Path, url: str) -> tuple[int, str]:
    """Run the collector, answering nothing until every slot of every process holds a request: on a busy
    machine, a process that started late could otherwise find the work all taken."""
    with paused(url):
        run = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        slots = RUN["num_samples_in_parallel"]
        wait_until(lambda: run.poll() is not None or held_requests(url) == slots, timeout=60)
    _, stderr = run.communicate(timeout=120)
    return run.returncode, stderr


# -- the same records -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "protocol,repeat_mode", [("chat", "separate"), ("responses", "separate"), ("agent", "separate"), ("chat", "n")]
)
def test_three_processes_write_byte_for_byte_what_one_process_writes(
    tmp_path, many_prompts, upstream, protocol, repeat_mode
):
    outputs = {}
    for processes in ("1", "3"):
        work = tmp_path / processes
        work.mkdir()
        out = work / "out.jsonl"
        agent = fast_agent(upstream.url, protocol=protocol, repeat_mode=repeat_mode)
        command = collect_command(work, many_prompts, out, agent, extra=["--processes", processes], **RUN)
        returncode, stderr = _run_with_every_slot_busy(command, work, upstream.url)
        assert returncode == 0, stderr
        outputs[processes] = out

    assert outputs["3"].read_bytes() == outputs["1"].read_bytes()
    one, three = _stats(outputs["1"]), _stats(outputs["3"])
    assert three["processes"] == 3
    assert sum(three["process_rollouts"]) == TOTAL
    assert all(count > 0 for count in three["process_rollouts"]), f"every process got work: {three['process_rollouts']}"
    # The counters of all processes add up: requests, latencies, endpoints, tokens.
    assert three["requests"] == one["requests"] == (PROMPTS if repeat_mode == "n" else TOTAL)
    assert three["endpoints"][0]["requests"] == three["requests"]
    assert three["tokens"] == one["tokens"]
    assert all(three["latency_s"][p] > 0 for p in ("p50", "p95", "p99"))


def test_the_progress_bar_counts_the_rollouts_of_every_process(tmp_path, many_prompts, upstream):
    # The bar lives in the parent and starts after the fork (tqdm's monitor thread must not be copied).
    command = collect_command(
        tmp_path, many_prompts, tmp_path / "out.jsonl", fast_agent(upstream.url), extra=THREE, **RUN
    )
    command.remove("--no-progress")
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Collecting rollouts: 100%" in result.stderr and f"{TOTAL}/{TOTAL}" in result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr


def test_retries_and_failures_from_every_process_reach_the_stats_and_the_failures_file(tmp_path, many_prompts):
    # A third of the requests get HTTP 500: one retry saves most, and some still fail.
    with start_embedded_server(["--fail-500", "0.3", "--fault-seed", "4"]) as server:
        out = tmp_path / "out.jsonl"
        result = run_collect(
            tmp_path, many_prompts, out, fast_agent(server.url, max_retries=1), extra=THREE, max_failure_rate=1.0, **RUN
        )
    assert result.returncode == 0, result.stderr
    stats = _stats(out)
    failures = read_jsonl(tmp_path / "out.failures.ndjson")
    assert stats["failures"] == len(failures) > 0
    assert sum(stats["retries"].values()) > 0
    assert stats["rollouts"] + stats["failures"] == TOTAL
    assert {(f["task_index"], f["rollout_index"]) for f in failures}.isdisjoint(
        (r["task_index"], r["rollout_index"]) for r in read_jsonl(out)
    )


# -- kills -----------------------------------------------------------------------------------------------
def test_sigkill_of_the_parent_leaves_no_process_and_the_resume_gives_exactly_the_one_process_output(
    tmp_path, many_prompts, slow_server, one_process
):
    out = tmp_path / "out.jsonl"
    command = collect_command(tmp_path, many_prompts, out, fast_agent(slow_server.url), extra=THREE, **RUN)
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: count_lines(tmp_path / PROGRESS) > 30 or process.poll() is not None, 30)
        assert process.poll() is None, "the run finished before the kill"
        workers = children_of(process.pid)
        assert len(workers) == 3, "three collector processes"
    finally:
        process.kill()
        process.wait(10)
    log_after_kill = count_lines(slow_server.log)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in workers), 10), "an orphaned collector process"
    done = finished_rollouts(tmp_path / PROGRESS)
    assert len(done) >= 30

    resumed = run_collect(tmp_path, many_prompts, out, fast_agent(slow_server.url), extra=["--processes", "2"], **RUN)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(done)} of {TOTAL} rollouts already done" in resumed.stdout
    assert out.read_bytes() == one_process.read_bytes()
    # Requests the children had in flight at the kill may still reach the log just after it; none after the
    # resume started is for a rollout that was finished.
    seed_of = {rollout_seed(SEED, t, r): (t, r) for t in range(PROMPTS) for r in range(REPEATS)}
    resent = done & {seed_of[entry["seed"]] for entry in read_jsonl(slow_server.log)[log_after_kill:]}
    assert not resent, f"requests sent again for finished rollouts: {sorted(resent)}"


def test_sigkill_of_one_child_fails_the_run_in_one_line_and_keeps_everythingfinished_rollouts(
    tmp_path, many_prompts, slow_server, one_process
):
    out = tmp_path / "out.jsonl"
    command = collect_command(tmp_path, many_prompts, out, fast_agent(slow_server.url), extra=THREE, **RUN)
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: count_lines(tmp_path / PROGRESS) > 20 or process.poll() is not None, 30)
        victim = children_of(process.pid)[1]
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    error = one_line_error(result)
    assert f"collector process 1 (pid {victim}) was killed by signal SIGKILL" in error
    assert "the finished rollouts are kept: run the same command again" in error
    assert not out.exists()
    kept = finished_rollouts(tmp_path / PROGRESS)
    assert 20 <= len(kept) < TOTAL, "the other processes went on; the killed one's unfinished work is left to do"

    resumed = run_collect(tmp_path, many_prompts, out, fast_agent(slow_server.url), extra=THREE, **RUN)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(kept)} of {TOTAL} rollouts already done" in resumed.stdout
    assert out.read_bytes() == one_process.read_bytes()


@pytest.mark.parametrize(
    "sig,code,word",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_to_the_whole_process_group_stops_cleanly_and_keeps_what_every_processfinished_rollouts(
    tmp_path, many_prompts, slow_server, one_process, sig, code, word
):
    # What a terminal's Ctrl-C does (and a job scheduler's SIGTERM): every process of the group gets it.
    out = tmp_path / "out.jsonl"
    command = collect_command(tmp_path, many_prompts, out, fast_agent(slow_server.url), extra=THREE, **RUN)
    process = start_in_own_group(command, tmp_path)
    try:
        assert wait_until(lambda: count_lines(tmp_path / PROGRESS) > 20 or process.poll() is not None, 30)
        workers = children_of(process.pid)
    finally:
        _, stderr = stop_group(process, sig, timeout=30)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    summary = last_line(stderr)
    assert summary.startswith(f"{word}: ") and summary.endswith("run the same command again to resume"), stderr
    kept = int(summary.split(": ", 1)[1].split(" of ")[0])
    assert len(finished_rollouts(tmp_path / PROGRESS)) == kept >= 20, "the summary counts what the progress file holds"
    assert not any(pid_alive(pid) for pid in workers)
    assert listing(tmp_path) == {PROGRESS, "params.yaml"}, "no temp file, no output, no half-written side file"

    resumed = run_collect(tmp_path, many_prompts, out, fast_agent(slow_server.url), extra=THREE, **RUN)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {kept} of {TOTAL} rollouts already done" in resumed.stdout
    assert out.read_bytes() == one_process.read_bytes()


def test_ctrl_c_is_acted_on_at_once_while_every_process_waits_for_a_slow_reply(tmp_path, many_prompts):
    # The parent acts on a Ctrl-C between two frames (never halfway through storing one), and it checks for
    # one even when no frame comes: here the server holds every request until the run has stopped.
    with start_embedded_server([]) as server, paused(server.url):
        command = collect_command(
            tmp_path, many_prompts, tmp_path / "out.jsonl", fast_agent(server.url, timeout_s=60), extra=THREE, **RUN
        )
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_default
        )
        try:
            # Every slot of the three processes waits for a reply.
            assert wait_until(lambda: held_requests(server.url) == RUN["num_samples_in_parallel"], 60)
            sent = time.monotonic()
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
            waited = time.monotonic() - sent
        finally:
            process.kill()
    assert process.returncode == 130, stderr
    assert last_line(stderr).startswith(f"interrupted: 0 of {TOTAL} rollouts done and kept in "), stderr
    # About a second on a quiet machine; the bound leaves a busy one room and still tells "at once" from waiting
    # out the replies (timeout_s is 60 s).
    assert waited < 10, f"took {waited:.1f} s to stop"


def test_an_input_line_broken_mid_run_is_the_same_one_line_error_as_in_one_process(tmp_path, slow_server):
    # The input is checked before anything is sent; a line changed afterwards is found by the process that
    # reads it, which tells the parent, which stops the others and says it in one line.
    prompts = make_prompts(tmp_path / "prompts.jsonl", 300, seed=29)
    lines = prompts.read_bytes().splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    command = collect_command(
        tmp_path,
        prompts,
        out,
        fast_agent(slow_server.url),
        extra=THREE,
        num_repeats=1,
        seed=SEED,
        num_samples_in_parallel=6,
    )
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: count_lines(tmp_path / PROGRESS) > 20 or process.poll() is not None, 30)
        with open(prompts, "r+b") as handle:  # in place, same length: line 290 is no longer JSON
            handle.seek(sum(len(line) for line in lines[:289]))
            handle.write(b"#" * (len(lines[289]) - 1))
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    error = one_line_error(result)
    assert error.startswith(f"collect.py: error: {prompts}:290: not valid JSON"), error
    assert PROGRESS in listing(tmp_path) and not out.exists()


def test_a_dead_server_gives_up_in_one_line_with_every_process_gone(tmp_path, many_prompts):
    out = tmp_path / "out.jsonl"
    agent = fast_agent("http://127.0.0.1:9", max_retries=0)  # port 9 (discard): nothing listens
    command = collect_command(tmp_path, many_prompts, out, agent, extra=THREE, **RUN)
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    descendants: set[int] = set()
    while process.poll() is None:
        descendants.update(_descendants(process.pid))
    stdout, stderr = process.communicate(timeout=30)
    error = last_line(stderr)
    assert process.returncode == 2 and error.startswith("collect.py: error: giving up: the last 20 rollouts all failed")
    assert "127.0.0.1:9" in error
    assert not any(pid_alive(pid) for pid in descendants)
    assert PROGRESS in listing(tmp_path)


# -- how many processes -----------------------------------------------------------------------------------
def test_auto_uses_one_process_per_128_slots_at_most_one_per_cpu_and_one_for_small_runs():
    cpus = len(os.sched_getaffinity(0))
    assert auto_processes(parallel=64, pending_requests=1_000_000) == 1, "64 slots: one process keeps up"
    assert auto_processes(parallel=4 * SLOTS_PER_PROCESS, pending_requests=1_000_000) == min(4, cpus)
    assert auto_processes(parallel=1024, pending_requests=1_000_000) == min(8, cpus)
    assert auto_processes(parallel=1024, pending_requests=1_500) == 1, "too little work to be worth a fork"


def test_processes_is_capped_by_the_parallelism(tmp_path, many_prompts, upstream):
    out = tmp_path / "out.jsonl"
    result = run_collect(
        tmp_path,
        many_prompts,
        out,
        fast_agent(upstream.url),
        extra=["--processes", "8"],
        num_repeats=1,
        num_samples_in_parallel=2,
    )
    assert result.returncode == 0, result.stderr
    assert _stats(out)["processes"] == 2, "no process without a slot"


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_processes_value_is_a_one_line_error(tmp_path, many_prompts, value):
    result = run_collect(
        tmp_path, many_prompts, tmp_path / "out.jsonl", fast_agent("http://127.0.0.1:9"), extra=["--processes", value]
    )
    assert result.returncode == 2
    assert f"--processes: expected a whole number >= 1 or auto, got {value!r}" in result.stderr
    assert "Traceback" not in result.stderr
