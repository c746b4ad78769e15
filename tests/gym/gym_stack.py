"""The real NeMo Gym 0.7.0 stack for the gym tier: `ng_run` with its own servers, on loopback ports we pin.

The model behind every Gym model server is the project's embedded reference server (OpenAI Chat Completions with
vLLM's token-id fields), so the stack runs offline. Gym's `vllm_model` turns the agents' Responses calls into chat
completions against it. Three reference servers play three upstreams:

    clean   the policy (token ids on; Gym's `sampling_overrides` pins the seed, so both collectors draw alike)
    flaky   a third of its replies are cut-off JSON: the model server fails, so that agent's /run fails at random
    down    every reply is cut-off JSON: that agent's /run always fails, and a judge on it always fails

Gym's servers (all from the installed nemo-gym 0.7.0 wheel, none of them ours):

    math_agent      simple_agent + math_with_judge (math-verify, no judge) + the clean policy
    masking_agent   simple_agent + math_with_judge with the judge on, the judge being the down model: a wrong answer
                    goes to the judge, the judge fails, and Gym's judge failsafe masks the row (judge_failed)
    flaky_agent     simple_agent + math_with_judge + the flaky model
    down_agent      simple_agent + math_with_judge + the down model

Each agent is reached through the environment server Gym puts in front of it (`<agent>_env`, a legacy_agent relay),
as Gym's own collector reaches it. `ng_run` would build a virtualenv per server with uv; every server here runs
from the tier's own virtualenv instead (`uv_venv_dir` holds links to it, `skip_venv_if_present`), so nothing is
installed at start-up. Observability is on, so the agents return `ng_trajectory`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rollout_pipeline.reference.embedded import start_embedded_server
from support import free_port

SEED = 7  # the seed Gym's model server pins on every request to the policy
AGENTS = ("math_agent", "masking_agent", "flaky_agent", "down_agent")
READY_LINE = "servers ready!"  # ng_run prints "All N / N servers ready! ..." once every server answers
START_TIMEOUT_S = 300  # two cores shared with other work: ten Python servers import Gym, Ray and FastAPI


@dataclass
class GymStack:
    """A running `ng_run`: its config file, the URL of each agent's environment server, its log."""

    directory: Path
    config: Path
    python: str
    urls: dict[str, str] = field(default_factory=dict)
    upstreams: dict[str, str] = field(default_factory=dict)
    log: Path | None = None

    @property
    def gym(self) -> str:
        """NeMo Gym's own `gym` command, from the tier's virtualenv."""
        return str(Path(self.python).parent / "gym")


def _model(upstream: str, port: int, **extra) -> dict:
    return {
        "responses_api_models": {
            "vllm_model": {
                "entrypoint": "app.py",
                "host": "127.0.0.1",
                "port": port,
                "base_url": f"{upstream}/v1",
                "api_key": "none",
                "model": "reference",
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


def _math_resources(port: int, judge_model: str | None = None) -> dict:
    return {
        "resources_servers": {
            "math_with_judge": {
                "entrypoint": "app.py",
                "host": "127.0.0.1",
                "port": port,
                "judge_model_server": {"type": "responses_api_models", "name": judge_model or "policy_model"},
                "judge_responses_create_params": {"input": []},
                "should_use_judge": judge_model is not None,
                "domain": "math",
                "verified": False,
                "description": "arithmetic rows, scored with math-verify",
                "value": "the gym tier",
            }
        }
    }


def _agent(port: int, resources: str, model: str) -> dict:
    return {
        "responses_api_agents": {
            "simple_agent": {
                "entrypoint": "app.py",
                "host": "127.0.0.1",
                "port": port,
                "resources_server": {"type": "resources_servers", "name": resources},
                "model_server": {"type": "responses_api_models", "name": model},
            }
        }
    }


def _environment(port: int, agent: str) -> dict:
    return {
        "environment_servers": {
            "legacy_agent": {
                "entrypoint": "app.py",
                "host": "127.0.0.1",
                "port": port,
                "agent_server": {"type": "responses_api_agents", "name": agent},
            }
        }
    }


def stack_config(upstreams: dict[str, str], ports: dict[str, int], capture_dir: Path) -> dict:
    """The whole `ng_run` config: head server, models, resources servers, agents and their environment servers."""
    config = {
        "head_server": {"host": "127.0.0.1", "port": ports["head"]},
        "observability_enabled": True,
        "model_call_capture_dir": str(capture_dir),
        "error_on_agent_without_environment_server": True,
        "policy_model": _model(
            upstreams["clean"],
            ports["policy_model"],
            return_token_id_information=True,
            request_prompt_and_generation_token_ids=True,
            sampling_overrides={"seed": SEED},
        ),
        "flaky_model": _model(upstreams["flaky"], ports["flaky_model"]),
        "down_model": _model(upstreams["down"], ports["down_model"]),
        "math": _math_resources(ports["math"]),
        "masking_math": _math_resources(ports["masking_math"], judge_model="down_model"),
        "math_agent": _agent(ports["math_agent"], "math", "policy_model"),
        "masking_agent": _agent(ports["masking_agent"], "masking_math", "policy_model"),
        "flaky_agent": _agent(ports["flaky_agent"], "math", "flaky_model"),
        "down_agent": _agent(ports["down_agent"], "math", "down_model"),
    }
    for agent in AGENTS:
        config[f"{agent}_env"] = _environment(ports[f"{agent}_env"], agent)
    return config


def _link_server_venvs(root: Path, python: str) -> None:
    """uv_venv_dir/<type>/<name>/.venv for every server directory the stack uses, each a link to the tier's venv."""
    venv = Path(python).parent.parent  # .venv-gym, not resolved: its bin/python links to pyenv's interpreter
    for server in (
        "responses_api_models/vllm_model",
        "resources_servers/math_with_judge",
        "responses_api_agents/simple_agent",
        "environment_servers/legacy_agent",
    ):
        link = root / server / ".venv"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(venv.absolute(), target_is_directory=True)


def _wait_ready(process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if READY_LINE in text:
            return
        if process.poll() is not None:
            raise RuntimeError(f"ng_run exited {process.returncode} before its servers were ready:\n{text[-4000:]}")
        time.sleep(0.5)
    raise RuntimeError(f"ng_run's servers were not ready within {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _default_stop_signals() -> None:
    """In ng_run's child: SIGTERM and SIGINT with their default meaning, whatever this process inherited (an ignored
    signal survives exec), so the group stops when asked."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_group(process: subprocess.Popen) -> None:
    """Stop ng_run and everything it started (its servers, Ray's local cluster): one process group."""
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
def gym_stack(python: str, directory: Path):
    """Start the reference servers and `ng_run` with the whole stack; stop them all on exit."""
    with ExitStack() as stack:
        upstreams = {}
        for name, flags in (
            ("clean", []),
            ("flaky", ["--fail-malformed", "0.34", "--fault-seed", "3"]),
            ("down", ["--fail-malformed", "1"]),
        ):
            server = stack.enter_context(start_embedded_server(flags))
            upstreams[name] = server.url
        names = ["head", "policy_model", "flaky_model", "down_model", "math", "masking_math", *AGENTS]
        names += [f"{agent}_env" for agent in AGENTS]
        ports = {name: free_port() for name in names}
        capture_dir = directory / "model_calls"
        config = directory / "stack.yaml"
        config.write_text(yaml.safe_dump(stack_config(upstreams, ports, capture_dir), sort_keys=False))
        venvs = directory / "venvs"
        _link_server_venvs(venvs, python)
        log = directory / "ng_run.log"
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        env.pop("VIRTUAL_ENV", None)
        env.pop("RAY_ADDRESS", None)  # Gym's ray.init() would join that cluster (another test's) instead of its own
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    str(Path(python).parent / "ng_run"),
                    f"+config_paths=[{config}]",
                    "++skip_venv_if_present=true",
                    f"++uv_venv_dir={venvs}",
                ],
                cwd=directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: stopped as one
                preexec_fn=_default_stop_signals,
            )
        stack.callback(_stop_group, process)
        _wait_ready(process, log)
        urls = {agent: f"http://127.0.0.1:{ports[f'{agent}_env']}" for agent in AGENTS}
        yield GymStack(directory, config, python, urls, upstreams, log)
