"""Shared benchmark plumbing: start servers in their own processes, run the collector, measure RSS and CPU."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@contextmanager
def instant_server(latency_ms: float = 0.0) -> Iterator[str]:
    """An instant (or fixed-latency) chat server in its own process; yields its URL."""
    process = subprocess.Popen([PY, str(ROOT / "bench" / "instant_server.py"), "--latency-ms", str(latency_ms)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("listening on "):
            raise RuntimeError(f"instant server did not start: {line!r}")
        yield line.split("listening on ", 1)[1].strip()
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        process.wait(timeout=10)


def write_prompts(path: Path, count: int) -> Path:
    """`count` distinct arithmetic rows, written fast (benchmarks need up to a million)."""
    with open(path, "wb") as handle:
        for i in range(count):
            a, b = i % 997, (i * 7) % 991
            handle.write(orjson.dumps({"responses_create_params": {"input": f"What is {a} + {b}?"},
                                       "expected_answer": str(a + b), "task_id": f"b{i}"}) + b"\n")
    return path


def write_params(directory: Path, url: str, **agent) -> Path:
    settings = {"protocol": "chat", "url": url, "model": "instant", "verifier": "math", "timeout_s": 60,
                "max_retries": 3, "retry_backoff_s": 0.05}
    settings.update(agent)
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump({"agents": {"bench": settings}, "objectives": {}}))
    return path


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_measured(command: list[str], cwd: Path, env: dict | None = None) -> Measured:
    """Run a command; wall time, CPU time and peak RSS of that process alone (os.wait4 on its pid)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, process.returncode,
                        out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def collect_command(params: Path, prompts: Path, out: Path, repeats: int, parallel: int | None,
                    extra: list[str] | None = None) -> list[str]:
    args = [f"+agent_name=bench", f"+input_jsonl_fpath={prompts}", f"+output_jsonl_fpath={out}",
            f"+num_repeats={repeats}"]
    if parallel is not None:
        args.append(f"+num_samples_in_parallel={parallel}")
    return [PY, str(ROOT / "scripts" / "collect.py"), *args, *(extra or []), "--no-progress", "--params", str(params)]
