"""Helpers for the reliability suite: real processes, real sockets, bounded in time."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from support import PY, SCRIPTS, agent, read_jsonl, seed_args, write_params

HERE = Path(__file__).resolve().parent
MISBEHAVING = HERE / "misbehaving_server.py"
COLLECT = [PY, str(SCRIPTS / "collect.py")]


class Misbehaving:
    """The misbehaving proxy as a child process (see misbehaving_server.py)."""

    def __init__(self, upstream: str, fault: str = "", rate: float = 0.0, seed: int = 1, port: int = 0) -> None:
        self.process = subprocess.Popen(
            [
                PY,
                str(MISBEHAVING),
                "--upstream",
                upstream,
                "--fault",
                fault,
                "--rate",
                str(rate),
                "--seed",
                str(seed),
                "--port",
                str(port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        ready, _, _ = select.select([self.process.stdout], [], [], 20)
        line = self.process.stdout.readline().decode() if ready else ""
        match = re.search(r"listening on (http://\S+)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"misbehaving server did not start: {line!r}")
        self.url = match.group(1)

    def stats(self) -> dict:
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as reply:
            return json.loads(reply.read())

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def __enter__(self) -> Misbehaving:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_collect(
    workdir: Path,
    inp: Path,
    out: Path,
    agent_settings: dict,
    *,
    timeout: float = 60,
    env: dict | None = None,
    extra: list[str] = (),
    **seed_extra,
) -> subprocess.CompletedProcess:
    """One collector run as a real process with its own params.yaml; always bounded by `timeout`."""
    params = write_params(workdir, {"math_agent": agent_settings})
    command = [*COLLECT, *seed_args(inp, out, **seed_extra), *extra, "--no-progress", "--params", str(params)]
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def collect_command(
    workdir: Path, inp: Path, out: Path, agent_settings: dict, extra: list[str] = (), **seed_extra
) -> list[str]:
    params = write_params(workdir, {"math_agent": agent_settings})
    return [*COLLECT, *seed_args(inp, out, **seed_extra), *extra, "--no-progress", "--params", str(params)]


def rollout_keys(path: Path) -> set[tuple]:
    """The comparison the issue asks for: (task_index, rollout_index, output) per record, plus the reward."""
    return {(r["task_index"], r["rollout_index"], r["output"], r["reward"]) for r in read_jsonl(path)}


def one_line_error(result: subprocess.CompletedProcess, prog: str = "collect.py") -> str:
    """The run failed with exactly one non-empty stderr line, `<prog>: error: ...`, and no traceback."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def wait_until(predicate, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def stop_process(process: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout)


def children_of(pid: int) -> list[int]:
    """Direct child pids (Linux /proc)."""
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listing(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def fast_agent(url: str, **overrides) -> dict:
    """Agent settings with quick retries, so every fault plays out in seconds (an overload, which does not count
    toward max_retries, is bounded by give_up_after_s). The reply timeout stays generous: on a busy machine a
    healthy server can take seconds to answer, and a test about hangs sets its own."""
    settings = agent(url, timeout_s=10.0, max_retries=10, retry_backoff_s=0.01, give_up_after_s=3.0)
    settings.update(overrides)
    return settings


def tree_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def run_concurrently(jobs: dict, workers: int = 6) -> dict:
    """Run independent jobs (each starts its own server and collector processes) side by side.

    Returns {name: result or the exception it raised}; a test re-raises its own case's exception, so one
    broken case fails only its own test. Threads only wait on subprocesses, so the GIL is no bottleneck.
    """
    from concurrent.futures import ThreadPoolExecutor

    results = {}
    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as exc:  # noqa: BLE001 - handed to the case's own test
                results[name] = exc
    return results


def result_of(results: dict, name: str):
    outcome = results[name]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def finished_rollouts(progress: Path) -> set[tuple[int, int]]:
    """(task_index, rollout_index) of every complete record line in a progress file (header checked, skipped)."""
    lines = progress.read_bytes().split(b"\n")
    assert "run_identity" in json.loads(lines[0])
    done = set()
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the (possibly) cut-off last line
        done.add((record["task_index"], record["rollout_index"]))
    return done
