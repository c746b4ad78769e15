"""Shared benchmark plumbing: servers in their own processes, the collector as a subprocess, measured figures.

Every benchmark family (throughput.py, concurrency.py, collector_memory.py, startup.py, repeat_mode.py,
pipeline.py) exposes `run(smoke: bool) -> list[Figure]` and can be run on its own; run_all.py runs them all
and appends the figures to RESULTS.md. A Figure carries the command that produced it, so every number in
RESULTS.md can be reproduced by hand.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import yaml

from rollout_pipeline.params import FETCH_KEYS

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BENCH = ROOT / "bench"


# -- figures -----------------------------------------------------------------------------------------------
@dataclass
class Figure:
    """One measured number, with the command that produced it. `target` is (operator, bound), e.g. (">=", 0.85),
    in the figure's own unit; a figure without one is informational."""

    benchmark: str
    case: str
    metric: str
    value: float | int | str
    unit: str = ""
    target: tuple[str, float] | None = None
    command: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None or isinstance(self.value, str):
            return None
        op, bound = self.target
        return {">=": self.value >= bound, "<=": self.value <= bound, "<": self.value < bound, ">": self.value > bound}[
            op
        ]

    @property
    def target_text(self) -> str:
        return "" if self.target is None else f"{self.target[0]} {fmt(self.target[1])} {self.unit}".strip()

    @property
    def shortfall(self) -> str:
        """How far a missed target is from being met, in the figure's unit and relative to the bound."""
        if self.met is not False:
            return ""
        op, bound = self.target  # type: ignore[misc]
        gap = abs(float(self.value) - bound)
        relative = f" ({100 * gap / abs(bound):.0f}%)" if bound else ""
        return f"{'short' if op.startswith('>') else 'over'} by {fmt(gap)} {self.unit}".rstrip() + relative

    def as_dict(self) -> dict:
        return {**self.__dict__, "met": self.met}


def fmt(value: float | int | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def print_figures(figures: list[Figure]) -> None:
    for f in figures:
        verdict = "" if f.met is None else ("  [met]" if f.met else f"  [NOT MET: {f.shortfall}]")
        target = f"  (target {f.target_text})" if f.target else ""
        print(f"{f.benchmark:<12} {f.case:<34} {f.metric:<34} {fmt(f.value):>10} {f.unit:<4}{target}{verdict}")


def shell(command: list[str]) -> str:
    """A command line as it would be typed from the repo root (temporary paths shortened)."""
    parts = []
    for arg in command:
        arg = "python" if arg == PY else str(arg).replace(str(ROOT) + "/", "")
        parts.append(arg)
    text = shlex.join(parts)
    return text.replace(tempfile.gettempdir() + "/", "$TMP/")


# -- processes ---------------------------------------------------------------------------------------------
def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    url: str
    pid: int
    command: list[str] = field(default_factory=list)

    def cpu_s(self) -> float:
        return process_cpu_s(self.pid)


@contextmanager
def instant_server(
    latency_ms: float = 0.0, reply_tokens: int = 0, top_logprobs: int = 0, agent: bool = False
) -> Iterator[Server]:
    """The instant (or fixed-latency) chat server of bench/instant_server.py in its own process; with
    `reply_tokens`, its replies are long ones carrying token data; with `agent`, it is a NeMo Gym agent (/run)."""
    command = [PY, str(BENCH / "instant_server.py"), "--latency-ms", f"{latency_ms:g}"]
    command += ["--agent"] if agent else []
    if reply_tokens:
        command += ["--reply-tokens", str(reply_tokens), "--top-logprobs", str(top_logprobs)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("listening on "):
            raise RuntimeError(f"instant server did not start: {line!r}")
        yield Server(line.split("listening on ", 1)[1].strip(), process.pid, command)
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        process.wait(timeout=10)


@contextmanager
def embedded_server(*flags: str) -> Iterator[Server]:
    """The project's embedded reference server (scripts/serve.py) in its own process."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from rollout_pipeline.reference.embedded import server_command, start_embedded_server

    with start_embedded_server(list(flags)) as server:
        yield Server(server.url, server.pid, server_command(list(flags)))


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    command: list[str] = field(default_factory=list)

    def check(self) -> Measured:
        if self.returncode != 0:
            raise RuntimeError(f"{shell(self.command)} exited {self.returncode}:\n{self.stderr[-3000:]}")
        return self


# A tiny launcher (python -S, a few MB) forks and execs the command and reports wait4's figures for it. Peak RSS
# is a high-water mark that a child inherits at fork and keeps across exec, so a command forked straight from
# this (bigger) process would report at least this process's RSS: the stages' ~20 MB would read as ours.
_LAUNCHER = """
import os, sys, time
report = int(sys.argv[1])
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(report)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
os.write(report, ("%r %r %r %r" % (wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
                                   os.waitstatus_to_exitcode(status))).encode())
"""


def run_measured(command: list[str], cwd: Path, env: dict | None = None) -> Measured:
    """Run a command; wall time, CPU time and peak RSS from os.wait4 on its pid: the process itself plus any
    children it reaped (the embedded server, when the collector starts one), and nothing else on the machine.
    The command is started by a tiny launcher process, so its peak RSS is its own (see _LAUNCHER)."""
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            process = subprocess.Popen(
                [PY, "-S", "-c", _LAUNCHER, str(write_end), *map(str, command)],
                cwd=cwd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                pass_fds=(write_end,),
                env={**os.environ, **(env or {})},
            )
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as report:
            figures = report.read().decode().split()
        process.wait()
        if len(figures) != 4:
            raise RuntimeError(f"{shell(command)}: the launcher failed (exit {process.returncode})")
        wall, cpu, rss_kib, code = float(figures[0]), float(figures[1]), int(figures[2]), int(figures[3])
        out.seek(0)
        err.seek(0)
        return Measured(
            wall,
            cpu,
            rss_kib / 1024,
            code,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            command,
        )


# -- the collector -----------------------------------------------------------------------------------------
def write_prompts(path: Path, count: int) -> Path:
    """`count` distinct arithmetic rows in NeMo Gym's format, written fast (benchmarks need up to a million)."""
    with open(path, "wb") as handle:
        for i in range(count):
            a, b = i % 997, (i * 7) % 991
            handle.write(
                orjson.dumps(
                    {
                        "responses_create_params": {"input": f"What is {a} + {b}?"},
                        "expected_answer": str(a + b),
                        "task_id": f"b{i}",
                    }
                )
                + b"\n"
            )
    return path


def write_params(directory: Path, url: str, **agent) -> Path:
    """A params.yaml with one agent, `bench`, on `url` (a chat server, the math verifier); the fetch keys among
    `agent` (timeouts, retries) go to the fetch block, where params.yaml keeps them."""
    settings = {"protocol": "chat", "url": url, "model": "instant", "verifier": "math", **agent}
    fetch = {
        "timeout_s": 60,
        "max_retries": 3,
        "retry_backoff_s": 0.05,
        **{key: settings.pop(key) for key in FETCH_KEYS if key in settings},
    }
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump({"agents": {"bench": settings}, "objectives": {}, "fetch": fetch}))
    return path


def collect_command(
    params: Path,
    prompts: Path,
    out: Path,
    repeats: int,
    parallel: int | None,
    extra: list[str] | None = None,
    progress: bool = True,
    seed: int | None = 1,
) -> list[str]:
    """The collector's real CLI, in the seed syntax. The progress bar stays on (the default) unless asked; with
    `seed` None, the run derives no per-rollout seeds (the rows' or the overrides' own seed is sent as it is)."""
    args = [
        "+agent_name=bench",
        f"+input_jsonl_fpath={prompts}",
        f"+output_jsonl_fpath={out}",
        f"+num_repeats={repeats}",
    ]
    args += [] if seed is None else [f"+seed={seed}"]
    if parallel is not None:
        args.append(f"+num_samples_in_parallel={parallel}")
    flags = [] if progress else ["--no-progress"]
    return [PY, str(ROOT / "scripts" / "collect.py"), *args, *(extra or []), *flags, "--params", str(params)]


@dataclass
class CollectorRun:
    measured: Measured
    stats: dict  # the run's <output>.stats.json

    @property
    def rollouts(self) -> int:
        return int(self.stats["rollouts"])

    @property
    def rollouts_per_s(self) -> float:
        """Throughput while collecting, as the collector reports it (stats.json)."""
        return float(self.stats["throughput_rollouts_per_s"])

    @property
    def cpu_ms_per_rollout(self) -> float:
        """Whole-run CPU (the collector and every process it forked and reaped, os.wait4) per rollout."""
        return 1000 * self.measured.cpu_s / max(1, self.rollouts)

    @property
    def processes(self) -> int:
        return int(self.stats.get("processes", 1))

    @property
    def peak_rss_sum_mb(self) -> float:
        """The peaks of the collector and each of its processes, added (stats.json). Forked processes share
        their start-up pages, so this overstates what they use together; os.wait4 reports only the largest."""
        peaks = self.stats["peak_rss_mb"]
        return peaks["collector"] + sum(peaks.get("processes", []))


def run_collector(
    work: Path,
    url: str,
    prompts: int,
    repeats: int,
    parallel: int | None,
    agent: dict | None = None,
    tag: str = "run",
    processes: int | None = None,
    flags: list[str] | None = None,
    env: dict | None = None,
) -> CollectorRun:
    """Collect prompts x repeats rollouts against `url` in a fresh directory (`flags` added to the command, `env` to
    its environment); keeps no output behind (stats.json's `output.bytes` says how large it was)."""
    directory = work / tag
    directory.mkdir(parents=True, exist_ok=True)
    params = write_params(directory, url, **(agent or {}))
    prompt_file = directory / "prompts.jsonl"
    if not prompt_file.exists():
        write_prompts(prompt_file, prompts)
    out = directory / "rollouts.jsonl"
    # Relative file names (the run's directory is its cwd), so the command reads as one would type it.
    extra = (["--processes", str(processes)] if processes else []) + (flags or [])
    command = collect_command(Path(params.name), Path(prompt_file.name), Path(out.name), repeats, parallel, extra)
    measured = run_measured(command, directory, env).check()
    stats = orjson.loads((directory / "rollouts.stats.json").read_bytes())
    out.unlink(missing_ok=True)
    return CollectorRun(measured, stats)


def run_bare_client(
    url: str, total: int, parallel: int, gc_threshold: int | None = None, bodies: Path | None = None
) -> tuple[Measured, dict]:
    """bench/bare_client.py: the bare aiohttp loop, the ceiling for one Python process (optionally with the
    collector's generation-0 GC threshold, and sending the given bodies)."""
    extra = [] if gc_threshold is None else ["--gc-threshold", str(gc_threshold)]
    extra += [] if bodies is None else ["--bodies", str(bodies)]
    measured = run_measured([PY, str(BENCH / "bare_client.py"), url, str(total), str(parallel), *extra], ROOT).check()
    return measured, orjson.loads(measured.stdout.strip().splitlines()[-1])


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as tmp:
        yield Path(tmp)
