"""What rl_collect@NNN and rl_eval@NNN collect: one plan shape (agent, checkpoint as model, objective settings, output)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.errors import UserError
from rollout_pipeline.params import PARAMS_FILE
from rollout_pipeline.rl.names import (
    CHECKPOINT_DIR,
    INIT_KEY,
    checkpoint_path,
    eval_rollouts_path,
    model_name,
    rollouts_path,
)
from rollout_pipeline.rl.schedule import collect_agent, iteration_entry


class CollectionPlan(NamedTuple):
    """A collection of the loop: the agent to ask, its settings (the checkpoint as model), the objective-shaped
    settings (prompts, repeats, sampling) and where the rollouts go."""

    agent_name: str
    agent: AgentSettings
    objective: dict
    output: Path


def collect_plan(params: dict, key: str, source: str = PARAMS_FILE) -> CollectionPlan:
    """rl_collect@key: the agent is rl.collect.agent_name with its model replaced by the previous checkpoint's model
    name (for the embedded server, models are looked up in data/rl/checkpoints), sampled with the iteration's
    temperature, prompts and seed."""
    entry = iteration_entry(params, key, source)
    collect = params["rl"]["collect"]
    settings = {
        "prompts": entry["prompts"],
        "num_repeats": collect["num_repeats"],
        "limit": collect["limit"],
        "seed": entry["seed"],
        "responses_create_params": {**collect["responses_create_params"], "temperature": entry["temperature"]},
    }
    return _plan(params, entry["prev"], f"iteration {key} collects with it", settings, rollouts_path(key), source)


def eval_plan(params: dict, key: str, source: str = PARAMS_FILE) -> CollectionPlan:
    """rl_eval@key: checkpoint `key` itself, sampled at rl.eval's fixed temperature and seed on rl.eval's held-out
    prompts. Nothing of the iteration's own schedule (temperature, prompts, seed) enters, so the eval reward of two
    checkpoints differs only by what training changed."""
    iteration_entry(params, key, source)
    evaluation = params["rl"]["eval"]
    settings = {name: evaluation[name] for name in ("prompts", "num_repeats", "limit", "seed")}
    settings["responses_create_params"] = {
        name: evaluation[name] for name in ("temperature", "top_p", "max_output_tokens")
    }
    return _plan(params, key, f"rl_eval@{key} evaluates it", settings, eval_rollouts_path(key), source)


def _plan(params: dict, checkpoint: str, used_by: str, settings: dict, output: Path, source: str) -> CollectionPlan:
    """The plan of a collection with checkpoint `checkpoint` as the model; `settings` are the objective's own (prompts,
    num_repeats, limit, seed, responses_create_params). A missing checkpoint of the embedded server names the stage
    that writes it; `used_by` says which collection needs it."""
    agent_name = collect_agent(params, source)
    agent = dataclasses.replace(
        AgentSettings.named(params, agent_name, source), model=model_name(params["rl"], checkpoint)
    )
    if agent.url == "embedded":
        agent = dataclasses.replace(agent, checkpoint_dir=str(CHECKPOINT_DIR.resolve()))
        if not checkpoint_path(checkpoint).exists():
            stage = "rl_init" if checkpoint == INIT_KEY else f"rl_train@{checkpoint}"
            raise UserError(
                f"{checkpoint_path(checkpoint)}: checkpoint missing ({used_by}); `dvc repro {stage}` writes it"
            )
    return CollectionPlan(agent_name, agent, {"agent_name": agent_name, **settings}, output)
