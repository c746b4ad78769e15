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
as Gym's own collector reaches it. `ng_run` runs every server from the tier's own virtualenv
(rollout_pipeline.tooling.gym_stack). Observability is on, so the agents return `ng_trajectory`.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rollout_pipeline.reference.embedded import start_embedded_server
from rollout_pipeline.tooling.gym_stack import environment, math_resources, ng_run, simple_agent, vllm_model
from support import free_port

SEED = 7  # the seed Gym's model server pins on every request to the policy
AGENTS = ("math_agent", "masking_agent", "flaky_agent", "down_agent")


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


def stack_config(upstreams: dict[str, str], ports: dict[str, int], capture_dir: Path) -> dict:
    """The whole `ng_run` config: head server, models, resources servers, agents and their environment servers."""
    config = {
        "head_server": {"host": "127.0.0.1", "port": ports["head"]},
        "observability_enabled": True,
        "model_call_capture_dir": str(capture_dir),
        "error_on_agent_without_environment_server": True,
        "policy_model": vllm_model(
            upstreams["clean"],
            ports["policy_model"],
            "reference",
            return_token_id_information=True,
            request_prompt_and_generation_token_ids=True,
            sampling_overrides={"seed": SEED},
        ),
        "flaky_model": vllm_model(upstreams["flaky"], ports["flaky_model"], "reference"),
        "down_model": vllm_model(upstreams["down"], ports["down_model"], "reference"),
        "math": math_resources(ports["math"], "policy_model"),
        "masking_math": math_resources(ports["masking_math"], "policy_model", judge_model="down_model"),
        "math_agent": simple_agent(ports["math_agent"], "math", "policy_model"),
        "masking_agent": simple_agent(ports["masking_agent"], "masking_math", "policy_model"),
        "flaky_agent": simple_agent(ports["flaky_agent"], "math", "flaky_model"),
        "down_agent": simple_agent(ports["down_agent"], "math", "down_model"),
    }
    for agent in AGENTS:
        config[f"{agent}_env"] = environment(ports[f"{agent}_env"], agent)
    return config


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
        config = stack.enter_context(
            ng_run(python, directory, stack_config(upstreams, ports, directory / "model_calls"))
        )
        urls = {agent: f"http://127.0.0.1:{ports[f'{agent}_env']}" for agent in AGENTS}
        yield GymStack(directory, config, python, urls, upstreams, directory / "ng_run.log")
