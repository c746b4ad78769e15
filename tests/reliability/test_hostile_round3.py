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

from reliability_support import Misbehaving, children_of, collect_command, pid_alive, wait_until
from support import agent, read_jsonl


def _rows(path: Path, count: int = 3) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"What is {i} + 2?", "expected_answer": str(i + 2)}) + "\n"
                            for i in range(count)))
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
        command = collect_command(tmp_path, prompts, tmp_path / "out.jsonl", agent(proxy.url, max_retries=0),
                                  num_samples_in_parallel=4)
        returncode, stderr, peak_mib = _run_measured(tmp_path, command)
        posts = proxy.stats()["posts"]
    failures = read_jsonl(tmp_path / "out.failures.ndjson")
    assert returncode == 1 and posts == 4, stderr
    assert {f["cause"] for f in failures} == {"reply_too_large"}
    assert "over 16,777,216 bytes once decoded, over the agent's max_reply_bytes" in failures[0]["error"]
    # Each 256 MiB bomb is dropped once 16 MiB of it are in: four at once inflated whole took 2.5 GB.
    assert peak_mib < 250, f"collector peak RSS {peak_mib:.0f} MiB"


# -- M6. input through a pipe -------------------------------------------------------------------------------------
def test_prompts_through_a_pipe_or_process_substitution_are_read_once_and_give_the_file_runs_output(
        tmp_path, embedded_server):
    prompts = _rows(tmp_path / "prompts.jsonl", 3)
    settings = agent(embedded_server.url)
    from_file = collect_command(tmp_path, prompts, tmp_path / "file.jsonl", settings, num_repeats=2, seed=5)
    assert subprocess.run(from_file, cwd=tmp_path, capture_output=True, timeout=60).returncode == 0
    from_stdin = collect_command(tmp_path, Path("/dev/stdin"), tmp_path / "stdin.jsonl", settings, num_repeats=2, seed=5)
    piped = subprocess.run(from_stdin, cwd=tmp_path, input=prompts.read_bytes(), capture_output=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    substituted = collect_command(tmp_path, Path("PROMPTS"), tmp_path / "subst.jsonl", settings, num_repeats=2, seed=5)
    script = " ".join(shlex.quote(arg) for arg in substituted).replace("PROMPTS", f"<(cat {shlex.quote(str(prompts))})")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, timeout=60)
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
    process = subprocess.Popen([PY, str(SCRIPTS / "filter.py"), "--in", str(source), "--out", str(out), "--params",
                                str(params)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
