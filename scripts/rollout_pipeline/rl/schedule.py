"""The RL loop's schedule: each iteration's temperature, prompts and seed, the rl.iterations entry it runs with, and
the agent it collects from."""

from __future__ import annotations

import math

from rollout_pipeline.errors import UserError
from rollout_pipeline.params import PARAMS_FILE
from rollout_pipeline.rl import curriculum
from rollout_pipeline.rl.names import rollouts_path


def collect_agent(params: dict, source: str = PARAMS_FILE) -> str:
    """rl.collect.agent_name, which must be set for the loop to run."""
    name = params["rl"]["collect"]["agent_name"]
    if name is None:
        raise UserError(
            f"{source}: rl.collect.agent_name is not set; name the agent (a key of agents:) that serves the policy"
        )
    return name


def scheduled_temperature(spec: dict, iteration: int) -> float:
    """rl.schedule.temperature at iteration 1, 2, ...: `start` at 1, `end` from iteration `over` on.

    linear: straight line; cosine: half a cosine (slow, fast, slow); exponential: geometric (the same
    ratio per iteration). Rounded to 3 decimals so params.yaml stays readable.
    """
    start, end, over = spec["start"], spec["end"], spec["over"]
    f = 1.0 if over <= 1 else min(max(iteration - 1, 0), over - 1) / (over - 1)
    shape = spec["shape"]
    if shape == "linear":
        value = start + (end - start) * f
    elif shape == "cosine":
        value = end + (start - end) * (1 + math.cos(math.pi * f)) / 2
    elif shape == "exponential":
        value = start * (end / start) ** f
    else:  # the schema allows only the three above
        raise UserError(f"rl.schedule.temperature.shape: unknown shape {shape!r}")
    return round(value, 3)


def scheduled_prompts(curriculum: list[dict], iteration: int, source: str = PARAMS_FILE) -> str:
    """The prompt file of the curriculum phase that iteration `iteration` falls in."""
    if not curriculum:
        raise UserError(
            f"{source}: rl.schedule.curriculum is empty; add a phase such as "
            "{from: 1, prompts: data/prompts/mixed.jsonl}"
        )
    current = curriculum[0]["prompts"]
    for phase in curriculum:
        if phase["from"] <= iteration:
            current = phase["prompts"]
    return current


def scheduled_entry(rl: dict, iteration: int, source: str = PARAMS_FILE) -> dict:
    """The entry `extend_params` writes for a missing iteration: previous checkpoint, temperature, prompts, seed.
    With the adaptive curriculum, the prompts are the file rl_select@NNN writes."""
    schedule = rl["schedule"]
    adaptive = schedule["curriculum_mode"] == "adaptive"
    return {
        "prev": f"{iteration - 1:03d}",
        "temperature": scheduled_temperature(schedule["temperature"], iteration),
        "prompts": (
            str(curriculum.prompts_path(f"{iteration:03d}"))
            if adaptive
            else scheduled_prompts(schedule["curriculum"], iteration, source)
        ),
        "seed": None if schedule["seed"] is None else schedule["seed"] + iteration,
    }


def scheduled_selection(rl: dict, iteration: int) -> dict:
    """The rl.selections entry `extend_params` writes for a new adaptive iteration (rl/curriculum.py)."""
    schedule = rl["schedule"]
    adaptive = schedule["adaptive"]
    seed = None if schedule["seed"] is None else schedule["seed"] + iteration
    previous = str(rollouts_path(f"{iteration - 1:03d}"))
    return curriculum.selection_entry(iteration, adaptive, adaptive["pool"], seed, previous)


def iteration_entry(params: dict, key: str, source: str = PARAMS_FILE) -> dict:
    """The validated entry of iteration `key`; a missing one says how to add it."""
    iterations = params["rl"]["iterations"]
    if key not in iterations:
        keys = sorted(iterations)
        known = ", ".join(keys) if len(keys) <= 6 else f"{len(keys)} from {keys[0]} to {keys[-1]}"
        raise UserError(
            f"{source}: no iteration {key!r} in rl.iterations (iterations: {known or 'none yet'}); "
            f"`make rl-iter N={int(key)}` adds it from rl.schedule"
        )
    return iterations[key]
