"""NeMo Gym 0.7.0's own servers under its `ng_run`, on loopback ports we pin: the config pieces and the process.

`ng_run` would build a virtualenv per server with uv; every server here runs from the gym tier's own virtualenv
instead (`uv_venv_dir` holds links to it, `skip_venv_if_present`), so nothing is installed at start-up. `ng_run` and
everything it starts (its servers, Ray's local cluster) form one process group, stopped as one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

HOST = "127.0.0.1"
READY_LINE = "servers ready!"  # ng_run prints "All N / N servers ready! ..." once every server answers
START_TIMEOUT_S = 300  # two cores shared with other work: every Python server imports Gym, Ray and FastAPI
SERVER_DIRS = (
    "responses_api_models/vllm_model",
    "resources_servers/math_with_judge",
    "responses_api_agents/simple_agent",
    "environment_servers/legacy_agent",
)


def vllm_model(base_url: str, port: int, model: str, **extra) -> dict:
    """Gym's `vllm_model`: turns an agent's Responses calls into chat completions against `base_url` (a server's
    root URL, without /v1)."""
    return {
        "responses_api_models": {
            "vllm_model": {
                "entrypoint": "app.py",
                "host": HOST,
                "port": port,
                "base_url": f"{base_url}/v1",
                "api_key": "none",
                "model": model,
                "return_token_id_information": False,
                "uses_reasoning_parser": False,
                "uses_interleaved_reasoning": False,
                "chat_template_kwargs": None,
                "extra_body": None,
                "default_headers": {},
                "endpoint_file": None,
                **extra,
            }
        }
    }


def math_resources(port: int, policy_model: str, judge_model: str | None = None) -> dict:
    """Gym's `math_with_judge`, scoring with math-verify; with `judge_model`, a rejected answer goes to that judge."""
    return {
        "resources_servers": {
            "math_with_judge": {
                "entrypoint": "app.py",
                "host": HOST,
                "port": port,
                "judge_model_server": {"type": "responses_api_models", "name": judge_model or policy_model},
                "judge_responses_create_params": {"input": []},
                "should_use_judge": judge_model is not None,
                "domain": "math",
                "verified": False,
                "description": "arithmetic rows, scored with math-verify",
                "value": "a local run",
            }
        }
    }


def simple_agent(port: int, resources: str, model: str) -> dict:
    """Gym's `simple_agent`: one model call, then the resources server's verify."""
    return {
        "responses_api_agents": {
            "simple_agent": {
                "entrypoint": "app.py",
                "host": HOST,
                "port": port,
                "resources_server": {"type": "resources_servers", "name": resources},
                "model_server": {"type": "responses_api_models", "name": model},
            }
        }
    }


def environment(port: int, agent: str) -> dict:
    """The environment server Gym puts in front of an agent (a `legacy_agent` relay): what collectors reach."""
    return {
        "environment_servers": {
            "legacy_agent": {
                "entrypoint": "app.py",
                "host": HOST,
                "port": port,
                "agent_server": {"type": "responses_api_agents", "name": agent},
            }
        }
    }


def _link_server_venvs(root: Path, python: str) -> None:
    """uv_venv_dir/<type>/<name>/.venv for every server directory used, each a link to the tier's venv."""
    venv = Path(python).parent.parent  # .venv-gym, not resolved: its bin/python links to pyenv's interpreter
    for server in SERVER_DIRS:
        link = root / server / ".venv"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(venv.absolute(), target_is_directory=True)


def _wait_ready(process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if READY_LINE in text:
            return
        if process.poll() is not None:
            raise RuntimeError(f"ng_run exited {process.returncode} before its servers were ready; see {log}")
        time.sleep(0.5)
    raise RuntimeError(f"ng_run's servers were not ready within {timeout_s:g} s; see {log}")


def _default_stop_signals() -> None:
    """In ng_run's child: SIGTERM and SIGINT with their default meaning, whatever this process inherited (an ignored
    signal survives exec), so the group stops when asked."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_group(process: subprocess.Popen) -> None:
    """Stop ng_run and everything it started: one process group."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
    try:  # a server that outlived ng_run is still in the group
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def ng_run(
    python: str,
    directory: Path,
    config: dict,
    start_timeout_s: float = START_TIMEOUT_S,
    while_starting: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """Write `config` to directory/stack.yaml, start `ng_run` on it with the gym tier's interpreter `python`, wait
    until every server answers, yield the config file; stop the whole group on exit. Its log: directory/ng_run.log.

    `while_starting` runs in this thread once ng_run is started and before waiting for it: start there the model
    server its `vllm_model` points at (ng_run waits for its model endpoints), so both start at once."""
    path = directory / "stack.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    venvs = directory / "venvs"
    _link_server_venvs(venvs, python)
    log = directory / "ng_run.log"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    env.pop("RAY_ADDRESS", None)  # Gym's ray.init() would join that cluster (someone else's) instead of its own
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(Path(python).parent / "ng_run"), f"+config_paths=[{path}]", "++skip_venv_if_present=true"]
            + [f"++uv_venv_dir={venvs}"],
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: stopped as one
            preexec_fn=_default_stop_signals,
        )
    try:
        if while_starting is not None:
            while_starting()
        _wait_ready(process, log, start_timeout_s)
        yield path
    finally:
        _stop_group(process)
