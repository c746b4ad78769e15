"""Helpers shared by the tests: real subprocesses, real files, no mocks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.params import FETCH_KEYS, fetch_settings, validate_params  # FETCH_KEYS: what write_params moves

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SCRIPTS = ROOT / "scripts"


def ctrl_c_default() -> None:
    """A Popen preexec_fn for a child the test will send SIGINT: Ctrl-C with its default meaning there, whatever
    this process inherited (a shell starts background jobs with SIGINT ignored, and exec keeps an ignored signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_in_own_group(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """A child (and what it starts) in a process group of its own, with Ctrl-C's default meaning, so that the test
    can stop the whole group as a terminal's Ctrl-C does (stop_group)."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=ctrl_c_default,
    )


def stop_group(process: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 60) -> tuple[str, str]:
    """Send `sig` to the child's whole process group and wait for it; (stdout, stderr). Whatever still runs after
    is killed."""
    try:
        os.killpg(process.pid, sig)
        return process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_prompts(path: Path, count: int, difficulty: str = "mixed", seed: int = 0) -> Path:
    """Write a prompt set with the project's own generator."""
    subprocess.run(
        [
            PY,
            str(SCRIPTS / "prompts.py"),
            "--count",
            str(count),
            "--difficulty",
            difficulty,
            "--seed",
            str(seed),
            "--out",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    return path


def agent(url: str | list[str] = "embedded", **overrides) -> dict:
    settings = {
        "protocol": "chat",
        "url": url,
        "model": "reference",
        "verifier": "math",
        "timeout_s": 10,
        "max_retries": 5,
        "retry_backoff_s": 0.01,
    }
    settings.update(overrides)
    return settings


def write_params(directory: Path, agents: dict, objectives: dict | None = None, **sections) -> Path:
    """A params.yaml for a test: only the sections a test needs (the rest take their defaults). Fetch keys given
    with an agent or an objective (timeouts, retries, parallelism) go where params.yaml keeps them: the
    `fetch` block's per-agent and per-objective overrides."""
    fetch: dict = {"agents": {}, "objectives": {}}
    agents = {name: _split_fetch(settings, fetch["agents"], name) for name, settings in agents.items()}
    objectives = {
        name: _split_fetch(settings, fetch["objectives"], name) for name, settings in (objectives or {}).items()
    }
    params = {"agents": agents, "objectives": objectives, "fetch": fetch}
    params.update(sections)
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def objective_run_settings(params: dict, out: Path, objective: str = "sft") -> CollectSettings:
    """The typed settings of a run of one objective of a params document, validated as params.yaml is."""
    validated = validate_params(params)
    name = validated["objectives"][objective]["agent_name"]
    return CollectSettings.from_params(
        name,
        AgentSettings.named(validated, name),
        validated["objectives"][objective],
        fetch_settings(validated, name, objective),
        out,
    )


def _split_fetch(settings: dict, overrides: dict, name: str) -> dict:
    fetch = {key: value for key, value in settings.items() if key in FETCH_KEYS}
    if fetch:
        overrides[name] = fetch
    return {key: value for key, value in settings.items() if key not in FETCH_KEYS}


def collect(
    args: list[str],
    cwd: Path,
    params: Path | None = None,
    env: dict | None = None,
    timeout: float = 120,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """Run `python scripts/collect.py ARGS` as a real process."""
    command = [PY, str(SCRIPTS / "collect.py"), *args, "--no-progress"]
    if params is not None:
        command += ["--params", str(params)]
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and result.returncode != 0:
        raise AssertionError(f"collect failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def seed_args(inp: Path, out: Path, agent_name: str = "math_agent", **extra) -> list[str]:
    args = [f"+agent_name={agent_name}", f"+input_jsonl_fpath={inp}", f"+output_jsonl_fpath={out}"]
    for key, value in extra.items():
        args.append(f"+{key.replace('__', '.')}={value}")
    return args


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


@contextlib.contextmanager
def paused(url: str) -> Iterator[None]:
    """The reference server at `url` holds every generation request for the length of the block (POST /pause),
    so that a test can see the run's requests in flight and stop or kill it before any is answered."""
    _post(url, "/pause")
    try:
        yield
    finally:
        _post(url, "/resume")


def held_requests(url: str) -> int:
    """How many generation requests the paused server at `url` holds."""
    with urllib.request.urlopen(f"{url}/is_paused", timeout=5) as reply:
        return json.loads(reply.read())["held"]


def _post(url: str, path: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + path, data=b""), timeout=10).close()


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as reply:
        return json.loads(reply.read())


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def mark_folder(items, folder: Path, marker) -> None:
    """Give every test collected from `folder` the marker (a tier's conftest marks its own tests)."""
    for item in items:
        if Path(str(item.fspath)).parent == folder:
            item.add_marker(marker)


def tier_interpreter(variable: str, target: str) -> str:
    """The interpreter of a real-server tier's own virtualenv, which its make target names in `variable`; the
    tier's tests skip, saying which target runs them, when it is not set (a plain `make test`)."""
    python = os.environ.get(variable)
    if not python:
        import pytest

        pytest.skip(f"this tier runs with `make {target}` ({variable} is not set)")
    return python
