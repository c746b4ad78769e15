"""Kills: SIGKILL at random points with resumes, SIGINT / SIGTERM clean stops, and `dvc repro` interrupted in collect.

The promise under test: a kill loses nothing that was finished, a resume sends no request for a finished
rollout, the final output is exactly an uninterrupted seeded run's, and a clean stop says in one line what
it kept and leaves no temp files.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BASE_RUN
from reliability_support import (
    children_of,
    collect_command,
    count_lines,
    fast_agent,
    finished_rollouts,
    last_line,
    listing,
    pid_alive,
    result_of,
    run_collect,
    run_concurrently,
    wait_until,
)
from rollout_pipeline.collect.fetcher import rollout_seed
from rollout_pipeline.reference.embedded import start_embedded_server
from support import ctrl_c_default, read_jsonl

RUN = {"num_repeats": 6, "seed": 33, "num_samples_in_parallel": 4}  # 12 prompts x 6 = 72 rollouts
TOTAL = 72
PROGRESS = ".out.jsonl.progress.jsonl"
SUMMARY_RE = re.compile(
    r"^(interrupted|terminated): (\d+) of (\d+) rollouts done and kept in (\S+); "
    r"run the same command again to resume$"
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prompts, upstream) -> Path:
    work = tmp_path_factory.mktemp("uninterrupted")
    out = work / "out.jsonl"
    result = run_collect(work, prompts, out, fast_agent(upstream.url), **RUN)
    assert result.returncode == 0, result.stderr
    return out


def test_sigkill_at_six_random_points_then_resume_gives_exactly_the_uninterrupted_output(
    tmp_path, prompts, slow_server, uninterrupted
):
    out = tmp_path / "out.jsonl"
    progress = tmp_path / PROGRESS
    command = collect_command(tmp_path, prompts, out, fast_agent(slow_server.url), **RUN)
    rng = random.Random(20240607)
    # One kill during start-up (before any rollout is stored), then five at random numbers of stored rollouts.
    # (The last point leaves 20 rollouts, ~150 ms of work, so the kill always lands before the run ends.)
    points = [("startup", rng.uniform(0.05, 0.3))] + [("done", n) for n in sorted(rng.sample(range(2, TOTAL - 20), 5))]
    kills = []
    for what, point in points:
        log_before = count_lines(slow_server.log)
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if what == "startup":
                time.sleep(point)
            else:
                assert wait_until(
                    lambda point=point, process=process: (
                        count_lines(progress) - 1 >= point or process.poll() is not None
                    ),
                    60,
                )
            assert process.poll() is None, "the run finished before the kill point"
        finally:
            process.kill()
            process.wait(10)
        done = finished_rollouts(progress) if progress.exists() else set()
        kills.append((log_before, count_lines(slow_server.log), done))
    assert not out.exists()

    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    done_before_last = kills[-1][2]
    assert f"resuming: {len(done_before_last)} of {TOTAL} rollouts already done" in result.stdout

    # Identical, as a set of (task_index, rollout_index, output) -- and in fact byte for byte.
    key = lambda r: (r["task_index"], r["rollout_index"], r["output"])  # noqa: E731
    assert {key(r) for r in read_jsonl(out)} == {key(r) for r in read_jsonl(uninterrupted)}
    assert out.read_bytes() == uninterrupted.read_bytes()

    # No request is ever sent for a rollout that was finished when the process was killed.
    requests = read_jsonl(slow_server.log)
    seed_of = {rollout_seed(RUN["seed"], t, r): (t, r) for t in range(12) for r in range(6)}
    for index, (_, log_after_kill, done) in enumerate(kills):
        later = [seed_of[entry["seed"]] for entry in requests[log_after_kill:]]
        resent = done & set(later)
        assert not resent, f"after kill {index + 1}: requests sent again for finished rollouts {sorted(resent)}"
    assert sum(1 for what, _ in points) >= 5
    assert listing(tmp_path) == {"out.jsonl", "out.stats.json", "out.failures.ndjson", "params.yaml"}, (
        "the progress file is gone once the output is complete, and no temp file is left"
    )


def test_sigkill_of_the_collector_takes_its_embedded_server_down_too(tmp_path, prompts):
    out = tmp_path / "out.jsonl"
    command = collect_command(
        tmp_path, prompts, out, fast_agent("embedded", embedded_args=["--latency-ms", "50"]), **RUN
    )
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: count_lines(tmp_path / PROGRESS) > 3, 30)
        servers = children_of(process.pid)
        assert servers, "the embedded server runs as a child process"
    finally:
        process.kill()
        process.wait(10)
    assert wait_until(lambda: not any(pid_alive(pid) for pid in servers), 10), "an orphaned embedded server"


def _read_stdout_until(process: subprocess.Popen, text: str, timeout: float) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096).decode()
            if not chunk:
                break
            seen += chunk
    return seen


@pytest.mark.parametrize(
    "sig,when,bar",
    [
        (signal.SIGINT, "mid-run", True),
        (signal.SIGTERM, "mid-run", False),
        (signal.SIGINT, "start-up", False),
        (signal.SIGTERM, "start-up", True),
    ],
    ids=["SIGINT-mid-run", "SIGTERM-mid-run", "SIGINT-start-up", "SIGTERM-start-up"],
)
def test_sigint_and_sigterm_stop_cleanly_with_a_one_line_summary(
    tmp_path, prompts, slow_server, uninterrupted, sig, when, bar
):
    out = tmp_path / "out.jsonl"
    # Start-up signals land while the embedded server is starting: after the first lines, before any request.
    url = slow_server.url if when == "mid-run" else "embedded"
    command = collect_command(tmp_path, prompts, out, fast_agent(url), **RUN)
    if bar:
        command.remove("--no-progress")
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ctrl_c_default
    )
    try:
        if when == "mid-run":
            assert wait_until(lambda: count_lines(tmp_path / PROGRESS) > 20, 30)
        else:
            assert "Querying with" in _read_stdout_until(process, "Querying with", 30)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    stderr = stderr.decode()
    assert process.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], stderr
    assert "Traceback" not in stderr
    match = SUMMARY_RE.match(last_line(stderr))
    assert match, f"the last line is the one-line summary: {stderr!r}"
    assert match.group(1) == {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[sig]
    kept = int(match.group(2))
    assert int(match.group(3)) == TOTAL and Path(match.group(4)).name == PROGRESS
    assert len(finished_rollouts(tmp_path / PROGRESS)) == kept, "the summary counts what the progress file holds"
    if when == "mid-run":
        assert kept >= 20
    assert listing(tmp_path) == {PROGRESS, "params.yaml"}, "no temp file, no output, no half-written side file"

    # The resume picks up exactly what was kept.
    resumed = run_collect(tmp_path, prompts, out, fast_agent(slow_server.url), **RUN)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {kept} of {TOTAL} rollouts already done" in resumed.stdout
    assert out.read_bytes() == uninterrupted.read_bytes()


# -- dvc repro interrupted during collect ----------------------------------------------------------------
@pytest.mark.e2e
def test_dvc_repro_interrupted_during_collect_resumes_on_the_next_repro(dvc_project):
    first, second = dvc_project.first, dvc_project.second
    assert first.returncode != 0, "the interrupted repro fails"
    assert "interrupted: " in first.stdout + first.stderr
    kept = dvc_project.kept
    assert 0 < kept < dvc_project.rl_total
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming: {kept} of {dvc_project.rl_total} rollouts already done" in second.stdout
    stats = json.loads((dvc_project.root / "data/generations/rl.stats.json").read_text())
    assert stats["resumed_rollouts"] == kept and stats["new_rollouts"] == dvc_project.rl_total - kept
    assert stats["rollouts"] == dvc_project.rl_total
    assert len(read_jsonl(dvc_project.root / "data/rollouts/rl.jsonl")) == dvc_project.rl_total  # all scored
    assert not list((dvc_project.root / "data/generations").glob(".*progress*"))


# -- a resume never mixes in stale data ------------------------------------------------------------------
def _partial_then_resume(workdir: Path, prompts: Path, faulty_url: str, upstream_url: str, first: dict, tamper=None):
    """A first run that fails about half its rollouts (keeping the rest in the progress file), an optional tamper
    with that file, then the baseline run's settings against a healthy server."""

    def job():
        out = workdir / "out.jsonl"
        failed = run_collect(workdir, prompts, out, fast_agent(faulty_url, max_retries=0), **first)
        assert failed.returncode == 1 and count_lines(workdir / PROGRESS) > 3, failed.stderr
        if tamper is not None:
            tamper(workdir / PROGRESS)
        return run_collect(workdir, prompts, out, fast_agent(upstream_url), **BASE_RUN), out

    return job


def _garble_header(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([b"{not json"] + lines[1:]))


def _cut_last_line(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-15])


def _garbage_in_the_middle(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[3] = b'{"task_index": 0, "rollout_index": "x"'
    path.write_bytes(b"\n".join(lines))


STALE = {
    # name: (first run's settings, tamper, what the second run must say)
    "seed changed": (
        {"num_repeats": 2, "seed": 22},
        None,
        "starting fresh: settings changed since the previous run: seed 22 -> 21",
    ),
    "num_repeats changed": (
        {"num_repeats": 3, "seed": 21},
        None,
        "starting fresh: settings changed since the previous run: num_repeats 3 -> 2",
    ),
    # A larger limit only adds rows: the first 6 prompts' finished rollouts are this run's too.
    "limit raised": ({"num_repeats": 2, "seed": 21, "limit": 6}, None, "the input grew past the previous run's"),
    "temperature changed": (
        {"num_repeats": 2, "seed": 21, "responses_create_params__temperature": 0.3},
        None,
        "starting fresh: settings changed since the previous run: responses_create_params",
    ),
    "header garbled": (
        {"num_repeats": 2, "seed": 21},
        _garble_header,
        "starting fresh: the previous progress file has no readable header",
    ),
    "last line cut off by a crash": ({"num_repeats": 2, "seed": 21}, _cut_last_line, "resuming: "),
    "garbage line in the middle": ({"num_repeats": 2, "seed": 21}, _garbage_in_the_middle, "resuming: 2 of 24"),
    "only parallelism changed": ({"num_repeats": 2, "seed": 21, "num_samples_in_parallel": 3}, None, "resuming: "),
}


@pytest.fixture(scope="module")
def stale_runs(tmp_path_factory, prompts, upstream):
    with start_embedded_server(["--fail-500", "0.5", "--fault-seed", "6"]) as faulty:
        return run_concurrently(
            {
                name: _partial_then_resume(
                    tmp_path_factory.mktemp("stale"), prompts, faulty.url, upstream.url, first, tamper
                )
                for name, (first, tamper, _) in STALE.items()
            },
            workers=4,
        )


@pytest.mark.parametrize("name", list(STALE))
def test_a_resume_never_mixes_in_stale_or_damaged_progress(stale_runs, baseline, name):
    result, out = result_of(stale_runs, name)
    assert result.returncode == 0, result.stderr
    assert STALE[name][2] in result.stdout, result.stdout
    assert out.read_bytes() == baseline().read_bytes(), "exactly the new settings' rollouts, nothing stale"


def test_a_resume_against_another_server_says_where_the_kept_rollouts_came_from(tmp_path, prompts, upstream, baseline):
    """The server is not part of the run identity (a resume may go to another replica of the same model), but
    a resume from somewhere else says so, in case the same model name now means other weights."""
    with start_embedded_server(["--fail-500", "0.5", "--fault-seed", "3"]) as flaky:
        outcomes = {}
        for name, resume_url in (("same server", flaky.url), ("another server", upstream.url)):
            work = tmp_path / name.replace(" ", "-")
            work.mkdir()
            out = work / "out.jsonl"
            failed = run_collect(work, prompts, out, fast_agent(flaky.url, max_retries=0), **BASE_RUN)
            assert failed.returncode == 1, failed.stderr
            kept = len(finished_rollouts(work / PROGRESS))
            resumed = run_collect(work, prompts, out, fast_agent(resume_url, max_retries=20), **BASE_RUN)
            assert resumed.returncode == 0, resumed.stderr
            assert out.read_bytes() == baseline().read_bytes()
            outcomes[name] = (kept, resumed.stdout)
    kept, stdout = outcomes["same server"]
    assert f"resuming: {kept} of 24 rollouts already done\n" in stdout
    kept, stdout = outcomes["another server"]
    assert (
        f"resuming: {kept} of 24 rollouts already done (fetched from {flaky.url}; this run asks {upstream.url}: "
        "if that serves other weights under the same model name, delete "
    ) in stdout


# -- repeat_mode: n, killed between two choices of one reply ---------------------------------------------
def test_a_repeat_mode_n_resume_after_a_partly_stored_reply_gives_exactly_the_uninterrupted_output(
    tmp_path, prompts, slow_server
):
    """The parent stores a reply's choices one by one, so a kill can fall between two of them. The resume asks
    again for every choice with the seed of choice 0 and keeps the missing ones: the same samples as a run that
    was never killed, not new ones drawn with another seed."""
    n_agent = fast_agent(slow_server.url, repeat_mode="n")
    full = tmp_path / "full" / "out.jsonl"
    full.parent.mkdir()
    assert run_collect(full.parent, prompts, full, n_agent, **RUN).returncode == 0
    records = full.read_bytes().splitlines(keepends=True)

    # A progress file as a kill leaves it: its header (from a run that could not reach any server), every
    # choice of prompts 0-4, and choices 0 and 1 of prompt 5 only.
    out = tmp_path / "out.jsonl"
    dead = run_collect(tmp_path, prompts, out, fast_agent("http://127.0.0.1:9", repeat_mode="n", max_retries=0), **RUN)
    assert dead.returncode != 0
    progress = tmp_path / PROGRESS
    kept = [line for line in records if json.loads(line)["task_index"] < 5] + [
        line for line in records if json.loads(line)["task_index"] == 5 and json.loads(line)["rollout_index"] < 2
    ]
    with open(progress, "ab") as handle:
        handle.writelines(kept)
    log_before = count_lines(slow_server.log)

    resumed = run_collect(tmp_path, prompts, out, n_agent, **RUN)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {len(kept)} of {TOTAL} rollouts already done" in resumed.stdout
    assert out.read_bytes() == full.read_bytes()
    asked = read_jsonl(slow_server.log)[log_before:]
    assert len(asked) == 12 - 5, "one request per unfinished prompt"
    assert {entry["n"] for entry in asked} == {RUN["num_repeats"]}, "every choice is asked for again"
    assert rollout_seed(RUN["seed"], 5, 0) in {entry["seed"] for entry in asked}


# -- a SIGKILL during a final write ------------------------------------------------------------------------
def test_temporary_files_left_by_a_writer_killed_mid_write_are_removed_by_the_next_write(tmp_path, prompts, upstream):
    """Outputs are written to `.<name>.<random>.tmp` and renamed; a SIGKILL between the two leaves the temporary
    file. The next write of the same file removes it (a file has one writer at a time); other files' stay."""
    stale = [tmp_path / ".out.jsonl.k3j4x9.tmp", tmp_path / ".out.stats.json.0a1b2c.tmp"]
    unrelated = tmp_path / ".other.jsonl.k3j4x9.tmp"
    for path in [*stale, unrelated]:
        path.write_bytes(b'{"half": "a record cut off by the kill')
    result = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", fast_agent(upstream.url), **BASE_RUN)
    assert result.returncode == 0, result.stderr
    assert not any(path.exists() for path in stale)
    assert unrelated.exists()
    assert listing(tmp_path) == {"out.jsonl", "out.stats.json", "out.failures.ndjson", "params.yaml", unrelated.name}


# -- Ctrl-C while the collector is still importing -------------------------------------------------------------
def test_ctrl_c_during_the_start_up_imports_is_a_one_line_stop_never_a_traceback_or_a_crash(tmp_path, prompts):
    """Twenty Ctrl-Cs spread over the ~0.3 s of imports. Raised inside a C extension's initialisation, a
    KeyboardInterrupt crashed the interpreter (SIGSEGV in orjson's import) about one time in fifteen; now a
    Ctrl-C there is noted and acted on once the imports are done. Each is sent once the imports have begun (the
    first compiled module is mapped): before that, in the interpreter's own start-up (`site`), a Ctrl-C is
    Python's, and a fixed delay landed there on a busy machine."""
    command = collect_command(tmp_path, prompts, tmp_path / "out.jsonl", fast_agent("http://127.0.0.1:9"))
    outcomes = []
    for attempt in range(20):
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_default
        )
        assert wait_until(lambda process=process: _importing(process.pid), 30, interval=0.001)
        time.sleep(attempt * 0.01)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        outcomes.append((process.returncode, stderr))
    for code, stderr in outcomes:
        assert code == 130, f"exit {code}: {stderr[-500:]}"
        assert "Traceback" not in stderr
        line = last_line(stderr)
        # Mostly the first; on a fast machine the later Ctrl-Cs can land after the imports, where run() reports.
        assert line in (
            "collect.py: interrupted during start-up; nothing was written",
            "interrupted: stopped before any rollout was collected; nothing was written",
        ) or SUMMARY_RE.match(line), stderr
    assert sum(last_line(stderr).startswith("collect.py: interrupted during start-up") for _, stderr in outcomes) >= 5


def _importing(pid: int) -> bool:
    """Whether the collector has begun its guarded imports: a compiled module from site-packages is mapped (the
    interpreter's start-up, `site` and the project's .pth files load none). True once the process has ended."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return True
    return any("site-packages/" in line and ".so" in line for line in maps.splitlines())


# -- two collectors on one output, and Ctrl-C ignored -------------------------------------------------------
def test_a_second_collector_on_the_same_output_is_refused_and_the_first_is_unharmed(
    tmp_path, prompts, slow_server, uninterrupted
):
    out = tmp_path / "out.jsonl"
    # The first run is stopped for as long as the second takes to start (seconds on a busy machine); its requests
    # in flight meanwhile must not time out, so its timeouts are far longer than that.
    patient = fast_agent(slow_server.url, timeout_s=60, give_up_after_s=120)
    command = collect_command(tmp_path, prompts, out, patient, **RUN)
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: count_lines(tmp_path / PROGRESS) > 5, 30)
        first.send_signal(signal.SIGSTOP)  # mid-run, holding its lock, however long the second takes to start
        try:
            second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30)
        finally:
            first.send_signal(signal.SIGCONT)
        _, first_stderr = first.communicate(timeout=60)
    finally:
        first.kill()
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert last_line(second.stderr) == (
        f"collect.py: error: {out}: another collector is writing it right now "
        f"(its progress file {tmp_path / PROGRESS} is locked); wait for that run to "
        "end, or give this one another output"
    )
    assert first.returncode == 0, first_stderr
    assert out.read_bytes() == uninterrupted.read_bytes()


def test_a_collector_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path, prompts, slow_server, uninterrupted):
    # A shell starts background jobs with SIGINT ignored; a Ctrl-C meant for the foreground must not stop them.
    out = tmp_path / "out.jsonl"
    command = collect_command(tmp_path, prompts, out, fast_agent(slow_server.url), **RUN)
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        time.sleep(0.1)  # during the start-up imports
        process.send_signal(signal.SIGINT)
        assert wait_until(lambda: count_lines(tmp_path / PROGRESS) > 10 or process.poll() is not None, 30)
        process.send_signal(signal.SIGINT)  # and while collecting
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert out.read_bytes() == uninterrupted.read_bytes()
