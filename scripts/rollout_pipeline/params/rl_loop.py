"""The models of the online RL loop (`rl`: see rl/loop.py and the README's "The RL loop")."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from rollout_pipeline.errors import did_you_mean
from rollout_pipeline.params.base import Checked, NamedMap, Strict
from rollout_pipeline.params.checks import (
    UPDATE_PLACEHOLDERS,
    check_band,
    check_http_url,
    check_iteration_key,
    check_update_body,
    template,
)
from rollout_pipeline.params.collection import DynamicSampling, Sampling, moved
from rollout_pipeline.paths import PROMPTS_DIR
from rollout_pipeline.settings import RL_EVAL_FETCH, RL_LOOP_FETCH, TRAIN_SETTINGS

DEFAULT_TRAIN_CMD = "python scripts/train.py --rollouts {rollouts} --init {init} --out {out} --lr {lr} --steps {steps}"
# A training command names the iteration's files, the interpreter, and any of the rl.train settings.
TRAIN_PLACEHOLDERS = ("rollouts", "init", "out", "iteration", "prev", "python", "metrics", *TRAIN_SETTINGS)


class RlCollect(Strict):
    """What every RL iteration collects (the temperature is per iteration)."""

    moved_keys: ClassVar[dict[str, str]] = moved(f"fetch.objectives.{RL_LOOP_FETCH}")

    agent_name: str | None = None
    num_repeats: int = Field(8, ge=1)
    limit: int | None = Field(None, ge=1)
    responses_create_params: Sampling = Field(default_factory=Sampling)
    dynamic_sampling: DynamicSampling | None = Field(
        None, description="DAPO-style: draw prompts until `groups` groups have reward variance, keep only those"
    )


class TemperatureSchedule(Strict):
    """The temperature of new iterations: from `start` at iteration 1 to `end` at iteration `over`."""

    start: float = Field(0.9, ge=0, le=2)
    end: float = Field(0.3, ge=0, le=2)
    over: int = Field(10, ge=1)
    shape: Literal["linear", "cosine", "exponential"] = "linear"


class CurriculumPhase(Strict):
    """A prompt file used from iteration `from` until the next phase."""

    from_: int = Field(alias="from", ge=1)
    prompts: str


class AdaptiveCurriculum(Strict):
    """curriculum_mode adaptive: each iteration's prompts chosen from a pool by the previous iteration's pass rates."""

    pool: str = Field(
        str(PROMPTS_DIR / "math.jsonl"), description="the prompt file the iterations' prompts are chosen from"
    )
    prompts_per_iteration: int = Field(300, ge=1, description="prompts chosen for each iteration")
    band: Checked(list[float], check_band) = Field(
        default_factory=lambda: [0.1, 0.9], description="keep prompts whose measured pass rate is in [low, high]"
    )
    initial_rollouts: str | None = Field(
        None, description="a profiling run of checkpoint 000 whose pass rates choose iteration 001 (null: seeded draw)"
    )


class Schedule(Strict):
    """What `make rl-iter` writes into new iterations."""

    temperature: TemperatureSchedule = Field(default_factory=TemperatureSchedule)
    curriculum_mode: Literal["fixed", "adaptive"] = Field(
        "fixed", description="fixed: the curriculum's prompt files; adaptive: chosen by measured pass rates"
    )
    curriculum: list[CurriculumPhase] = Field(default_factory=list)
    adaptive: AdaptiveCurriculum = Field(default_factory=AdaptiveCurriculum)
    seed: int | None = None


class Selection(Strict):
    """One adaptive iteration's choice of prompts (stage rl_select@NNN), written by `make rl-iter`."""

    prev: Checked(str, check_iteration_key)
    pool: str
    measured: str = Field(
        description="the rollouts whose pass rates choose (iteration 001: the pool, nothing measured)"
    )
    state: str = Field(description="the previous selection's state (iteration 001: the pool)")
    size: int = Field(ge=1)
    band: Checked(list[float], check_band)
    seed: int | None = None


class Train(Strict):
    """The trainer command and its settings (each one a placeholder of `cmd`; the LoRA trainer takes them all)."""

    cmd: Checked(str, template(*TRAIN_PLACEHOLDERS)) = DEFAULT_TRAIN_CMD
    lr: float = Field(0.15, gt=0)
    steps: int = Field(10, ge=1)
    base: str | None = Field(None, description="the base model's Hugging Face folder, for a trainer of adapters")
    clip: float = Field(0.2, gt=0, lt=1, description="PPO clip range of the importance ratio")
    lora_rank: int = Field(8, ge=1, description="LoRA rank of a new adapter (at most the server's --max-lora-rank)")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha of a new adapter")
    divide_by_std: bool = Field(False, description="divide each advantage by its prompt's reward std")
    seed: int = Field(0, description="the trainer's random seed")
    max_token_mult_prob_error: float = Field(
        1.1, ge=1, description=("the on-policy check fails the stage above this mean exp(|logp_train - logp_infer|)")
    )


class Update(Strict):
    """How the server learns of a new checkpoint."""

    model: Checked(str, template("iteration")) = "iter_{iteration}"
    init_model: str | None = Field(
        None,
        description=(
            "the name the server serves checkpoint 000 under (a real server: the base model's); null = model's"
        ),
    )
    cmd: Checked(str, template(*UPDATE_PLACEHOLDERS)) | None = None
    url: Checked(str, check_http_url) | None = None
    body: Checked(dict, check_update_body) | None = None
    timeout_s: float = Field(60.0, gt=0)


class Iteration(Strict):
    """One RL iteration: which checkpoint collects, at which temperature, on which prompts."""

    prev: Checked(str, check_iteration_key)
    temperature: float = Field(ge=0, le=2)
    prompts: str
    seed: int | None = None


class RlEval(Strict):
    """Each iteration's checkpoint evaluated at one fixed temperature on one held-out prompt set, so the eval
    reward moves only when the policy does (the collection reward also moves with the annealed temperature)."""

    moved_keys: ClassVar[dict[str, str]] = moved(f"fetch.objectives.{RL_EVAL_FETCH}")

    prompts: str = str(PROMPTS_DIR / "heldout.jsonl")
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_output_tokens: int | None = Field(None, ge=1)
    num_repeats: int = Field(4, ge=1)
    limit: int | None = Field(None, ge=1)
    seed: int = 300


class Rl(Strict):
    """The online RL loop."""

    collect: RlCollect = Field(default_factory=RlCollect)
    schedule: Schedule = Field(default_factory=Schedule)
    init: str = "reference"
    eval: RlEval = Field(default_factory=RlEval)
    train: Train = Field(default_factory=Train)
    update: Update = Field(default_factory=Update)
    iterations: NamedMap(Iteration) = Field(default_factory=dict)
    selections: NamedMap(Selection) = Field(default_factory=dict)


def rl_problem(rl: Rl, agents: list[str]) -> str | None:
    """What is wrong with the references inside `rl` (iterations, their checkpoints, the curriculum's phases, the
    agent), or None; `Params` runs it with its other cross-checks."""
    for key in rl.iterations:
        problem = check_iteration_key(key) or (
            "iteration 000 is the initial checkpoint (rl.init)" if key == "000" else None
        )
        if problem:
            return f"rl.iterations.{key}: {problem}"
    agent = rl.collect.agent_name
    if agent is not None and agent not in agents:
        return (
            f"rl.collect.agent_name: unknown agent {agent!r}{did_you_mean(agent, agents)}; "
            f"known agents: {', '.join(agents) or '(none)'}"
        )
    if rl.collect.responses_create_params.temperature is not None:
        return (
            "rl.collect.responses_create_params.temperature: the temperature is set per iteration "
            "(rl.iterations.NNN.temperature, filled from rl.schedule.temperature); remove it here"
        )
    temperature = rl.schedule.temperature
    if temperature.shape == "exponential" and min(temperature.start, temperature.end) <= 0:
        return "rl.schedule.temperature: the exponential shape needs start > 0 and end > 0"
    phases = [phase.from_ for phase in rl.schedule.curriculum]
    if phases and phases[0] != 1:
        return f"rl.schedule.curriculum[0].from: the first phase must start at iteration 1, got {phases[0]}"
    for index in range(1, len(phases)):
        if phases[index] <= phases[index - 1]:
            return (
                f"rl.schedule.curriculum[{index}].from: phases must start at increasing iterations "
                f"({phases[index]} does not come after {phases[index - 1]})"
            )
    for key, entry in rl.iterations.items():
        if entry.prev >= key:
            return f"rl.iterations.{key}.prev: must be an earlier iteration than {key}, got {entry.prev!r}"
        if entry.prev != "000" and entry.prev not in rl.iterations:
            return f'rl.iterations.{key}.prev: no iteration {entry.prev!r} in rl.iterations (use "000" for the initial checkpoint)'
    return None
