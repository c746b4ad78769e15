"""params.yaml: its models (the one schema: validation and params.schema.json), safe loading, cross-checks."""

from __future__ import annotations

import os
import re
import string
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from rollout_pipeline.errors import UserError, did_you_mean
from rollout_pipeline.paths import PROMPTS_DIR
from rollout_pipeline.settings import (  # noqa: F401
    OBJECTIVE_FETCH_KEYS,
    PARAMS_FILE,
    RL_EVAL_FETCH,
    RL_LOOP_FETCH,
    agent_settings,
    fetch_settings,
    objective_settings,
    stage_objective,
)

# ---- the pydantic base: strict validation, and errors as one line naming the key ----------------------

Model = TypeVar("Model", bound=BaseModel)


class Strict(BaseModel):
    """A params section: no unknown keys, no type coercion ("5" is not a number), and a key set to null takes
    its default unless null is a value it accepts (so `filter:` with nothing under it is the default section)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = _fields_by_key(cls)
        return {
            key: value
            for key, value in data.items()
            if not (
                value is None
                and key in fields
                and not fields[key].is_required()
                and not _accepts_none(fields[key].annotation)
            )
        }


class Open(Strict):
    """A section that passes unknown keys through to the server (e.g. responses_create_params)."""

    model_config = ConfigDict(extra="allow")


def _string_keys(value: Any) -> Any:
    # YAML reads `4:` as an integer key; names are strings everywhere else, so compare them as strings.
    return {str(key): item for key, item in value.items()} if isinstance(value, dict) else value


def NamedMap(value_type: Any) -> Any:
    """A mapping from user-chosen names to one kind of section (agents, objectives, prompt sets)."""
    return Annotated[dict[str, value_type], BeforeValidator(_string_keys)]


def parse_section(model: type[Model], raw: Any, where: str) -> Model:
    """Validate `raw` against `model`, or raise a UserError naming the key (`where: dotted.key: problem`)."""
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise UserError(describe(model, exc.errors()[0], where)) from None


# ---- errors: pydantic's first error, said the way the rest of the project says things ---------------

TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true/false",
    "list": "a list",
    "dict": "a mapping",
}
ERROR_TYPES = {
    "int_type": "int",
    "int_from_float": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "bool",
    "list_type": "list",
    "dict_type": "dict",
    "model_type": "dict",
    "model_attributes_type": "dict",
}
BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def describe(model: type[BaseModel], error: dict, where: str) -> str:
    """One line for one pydantic error: `<where>.<dotted key>: <what is wrong>`."""
    loc = [part for part in error["loc"] if part != "[key]"]
    dotted = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    path = f"{where}: {dotted}" if where and dotted else (where or dotted)
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        known = list(_fields_by_key(parent)) if parent else []
        hint = getattr(parent, "moved_keys", {}).get(loc[-1]) if parent else None
        if hint:
            return f"{path}: {hint.format(name=loc[-2] if len(loc) > 1 else '<name>')}"
        return f"{path}: unknown key{did_you_mean(loc[-1], known)}; known keys: {', '.join(known)}"
    if kind in ERROR_TYPES:
        return f"{path}: expected {TYPE_NAMES[ERROR_TYPES[kind]]}, got {value!r}"
    if kind == "literal_error":
        choices = _literal_choices(model, loc)
        return f"{path}: {value!r} is not one of {', '.join(map(str, choices))}{did_you_mean(value, choices)}"
    if kind in BOUNDS:
        op, key = BOUNDS[kind]
        bound = ctx[key]
        shown = float(value) if isinstance(bound, float) and isinstance(value, int) else value
        return f"{path}: {shown!r} is out of range; it must be {op} {bound}"
    if kind == "finite_number":
        return f"{path}: NaN and infinity are not allowed"
    if kind == "too_short":
        count = ctx.get("min_length", 1)
        return f"{path}: needs at least {count} item{'s' if count != 1 else ''}"
    message = str(error.get("msg", kind))
    return f"{path}: {message.removeprefix('Value error, ')}"


def _fields_by_key(model: type[BaseModel]) -> dict:
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def _accepts_none(annotation: Any) -> bool:
    return annotation is None or type(None) in typing.get_args(annotation) or annotation is Any


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _unwrap(args[0])
    return annotation


def _annotation_at(model: type[BaseModel], loc: list) -> Any:
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = _fields_by_key(current).get(part)
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        else:
            return None
    return _unwrap(current)


def _model_at(model: type[BaseModel], loc: list) -> type[BaseModel] | None:
    found = _annotation_at(model, loc)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _literal_choices(model: type[BaseModel], loc: list) -> tuple:
    found = _annotation_at(model, loc)
    return typing.get_args(found) if typing.get_origin(found) is Literal else ()


OBJECTIVES = ("rl", "sft", "dpo")


def Checked(value_type: Any, check: Callable[[Any], str | None], before: bool = False) -> Any:
    """`value_type`, with a check that returns a problem (a message) or None."""

    def run(value: Any) -> Any:
        problem = check(value)
        if problem:
            raise ValueError(problem)
        return value

    return Annotated[value_type, BeforeValidator(run) if before else AfterValidator(run)]


def _check_url(value: Any) -> str | None:
    urls = value if isinstance(value, list) else [value]
    if not urls:
        return "give at least one URL, or 'embedded'"
    for url in urls:
        if not isinstance(url, str):
            return f"expected a URL string, got {url!r}"
        if url != "embedded" and not re.match(r"^https?://[^\s/]+", url):
            return f"{url!r} is not an http(s) URL or 'embedded'"
    if "embedded" in urls and len(urls) > 1:
        return "'embedded' cannot be mixed with other URLs"
    return None


def _check_verifier(value: str) -> str | None:
    if value in ("math", "exact") or re.match(r"^https?://", value) or re.match(r"^[\w.]+:\w+$", value):
        return None
    return f"{value!r} is not a verifier; use math, exact, a /verify URL or module:function{did_you_mean(value, ['math', 'exact'])}"


def validated_verifier(value: str) -> str:
    """A verifier named on a command line, checked as params.yaml's `verifier` is."""
    problem = _check_verifier(value)
    if problem:
        raise UserError(f"--verifier: {problem}")
    return value


def _check_env_name(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return None
    return "must be the NAME of an environment variable (the key itself never goes in params.yaml)"


# ---- fetch: how rollouts are fetched (no stage declares it, so a change here re-runs nothing) -------------


class FetchSettings(Strict):
    """How rollouts are fetched: parallelism, timeouts, retries, limits. They never change what a rollout is."""

    num_samples_in_parallel: int | None = Field(
        None,
        ge=1,
        description=(
            "concurrent requests (null = the connection pool's cap, 1024, which the adaptive limit backs off from)"
        ),
    )
    max_failure_rate: float = Field(
        0.0, ge=0, le=1, description="fraction of rollouts allowed to fail before the run fails"
    )
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout in seconds")
    connect_timeout_s: float = Field(10.0, gt=0, description="seconds to open a connection")
    max_retries: int = Field(
        20,
        ge=0,
        description=("retries per rollout on connection errors, timeouts and 5xx; waiting out a 429 does not count"),
    )
    give_up_after_s: float = Field(
        300.0, gt=0, description="a rollout gives up when no request succeeded for this long"
    )
    retry_backoff_s: float = Field(0.5, ge=0, description="first backoff in seconds; doubles per retry, with jitter")
    verify_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "a verifier running longer than this on one rollout is stopped (cause verifier_timeout; not retried)"
        ),
    )
    max_reply_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        le=24 * 1024 * 1024,
        description=(
            "replies over this are refused as they stream in (not retried); <= 24 MiB so records stay readable"
        ),
    )


FETCH_KEYS = tuple(FetchSettings.model_fields)


class Fetch(FetchSettings):
    """The defaults above, then per-agent and per-objective overrides (an objective's win over its agent's)."""

    agents: NamedMap(FetchSettings) = Field(default_factory=dict, description="per-agent overrides")
    objectives: NamedMap(FetchSettings) = Field(
        default_factory=dict,
        description=(
            f"per-objective overrides; the RL loop's iterations read `{RL_LOOP_FETCH}`, its evaluations `{RL_EVAL_FETCH}`"
        ),
    )


def _moved(section: str) -> dict[str, str]:
    return {
        key: (
            f"moved to fetch.{key} (or fetch.{section}.{{name}}.{key}): how rollouts are fetched is not a "
            "DVC param, so changing it re-runs nothing"
        )
        for key in FETCH_KEYS
    }


# ---- agents, sampling, objectives, prompt sets -------------------------------------------------------------


class Agent(Strict):
    """A model or agent server: what `agent_name` (or the seed syntax's +agent_name=) refers to."""

    moved_keys: ClassVar[dict[str, str]] = _moved("agents")

    protocol: Literal["chat", "responses", "agent"] = Field(
        "chat",
        description=("chat: POST /v1/chat/completions; responses: POST /v1/responses; agent: NeMo Gym POST /run"),
    )
    url: Checked(str | list[str], _check_url, before=True) = Field(
        "embedded",
        description=("'embedded' = start the bundled reference server; or a URL; or a list of URLs (load-balanced)"),
    )
    model: str = Field("reference", description="model name sent to the server")
    api_key_env: Checked(str, _check_env_name) | None = Field(
        None, description=("NAME of the environment variable holding the API key (never the key itself)")
    )
    verifier: Checked(str, _check_verifier) = Field(
        "math",
        description=("math | exact | a resources server's /verify URL | module:function (ignored for protocol: agent)"),
    )
    repeat_mode: Literal["separate", "n"] = Field(
        "separate", description=("separate: one request per repeat; n: chat only, one request with n choices")
    )
    checkpoint_dir: str | None = None
    embedded_args: list[str] = Field(default_factory=list, description="flags for the embedded server")
    # Ask for token data, the way each protocol documents it: logprobs (chat `logprobs`, Responses `include`),
    # or ids too (chat `return_token_ids`: vLLM >= 0.10.2 and SGLang). Kept under NeMo Gym's names.
    token_data: Literal["logprobs", "ids"] | None = Field(
        None,
        description=(
            "ask for token logprobs (and ids); kept as generation_log_probs / generation_token_ids / prompt_token_ids"
        ),
    )
    # What the server's logprobs are, recorded beside them (generation_log_probs_mode): a trainer at temperature != 1
    # needs to know. The server decides (vLLM: --logprobs-mode); this says what it decided.
    logprobs_mode: Literal["raw_logprobs", "processed_logprobs"] | None = Field(
        None,
        description=(
            "what the server's logprobs are: raw_logprobs (before temperature and top_p; vLLM's default) or "
            "processed_logprobs (of the distribution sampled from: vLLM --logprobs-mode processed_logprobs); "
            "null = raw_logprobs, or processed_logprobs for url: embedded"
        ),
    )


class Sampling(Open):
    """responses_create_params: sampling settings; other keys pass through to the server."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_output_tokens: int | None = Field(None, ge=1)


class Objective(Strict):
    """One objective's data: which prompts, how many rollouts, sampled how. Each key is a DVC param."""

    moved_keys: ClassVar[dict[str, str]] = _moved("objectives")

    agent_name: str
    prompts: str = Field(description="the prompt JSONL file")
    num_repeats: int = Field(1, ge=1, description="rollouts per prompt")
    limit: int | None = Field(None, ge=1, description="max prompts (null = all)")
    seed: int | None = Field(None, description="per-rollout sampling seeds derive from it (null = fresh draws)")
    responses_create_params: Sampling = Field(default_factory=Sampling)


class PromptSet(Strict):
    """A sample prompt set written by the `prompts` stage to data/prompts/<name>.jsonl."""

    count: int = Field(ge=1)
    difficulty: Literal["tiny", "easy", "hard", "mixed"] = "mixed"
    seed: int = 0


class PromptSets(Strict):
    """The `prompts` section."""

    sets: NamedMap(PromptSet) = Field(default_factory=dict)


# ---- rl: the online RL loop (see rl/loop.py and the README's "The RL loop") -------------------------

ITERATION_KEY_RE = re.compile(r"\d{3}")
DEFAULT_TRAIN_CMD = "python scripts/train.py --rollouts {rollouts} --init {init} --out {out} --lr {lr} --steps {steps}"
TRAIN_PLACEHOLDERS = (
    "rollouts",
    "init",
    "out",
    "iteration",
    "prev",
    "lr",
    "steps",
    "python",
    "metrics",
    "base",
    "clip",
    "lora_rank",
    "lora_alpha",
    "divide_by_std",
    "seed",
    "max_token_mult_prob_error",
)
UPDATE_PLACEHOLDERS = ("checkpoint", "model", "iteration")


def _check_iteration_key(value: str) -> str | None:
    if ITERATION_KEY_RE.fullmatch(value):
        return None
    return f'iterations are three digits in quotes, like "004" (got {value!r})'


def _template(*allowed: str) -> Callable[[str], str | None]:
    """A check for a str.format template that may only use the `allowed` placeholders."""

    def check(value: str) -> str | None:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            return f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        for name in names:
            if name not in allowed:
                return (
                    f"unknown placeholder {{{name}}}{did_you_mean(name, allowed)}; "
                    f"placeholders: {', '.join('{' + a + '}' for a in allowed)}"
                )
        return None

    return check


def _check_http_url(value: str) -> str | None:
    return None if re.match(r"^https?://[^\s/]+", value) else f"{value!r} is not an http(s) URL"


def _check_update_body(value: dict) -> str | None:
    check = _template(*UPDATE_PLACEHOLDERS)
    for key, item in value.items():
        problem = check(item) if isinstance(item, str) else None
        if problem:
            return f"{key}: {problem}"
    return None


class DynamicSampling(Strict):
    """rl.collect.dynamic_sampling (rl/dynamic_sampling.py)."""

    groups: int = Field(ge=1, description="groups with reward variance each iteration keeps")
    max_prompts: int = Field(ge=1, description="the cap: prompts drawn at most to find them")


class RlCollect(Strict):
    """What every RL iteration collects (the temperature is per iteration)."""

    moved_keys: ClassVar[dict[str, str]] = {
        key: (
            f"moved to fetch.{key} (or fetch.objectives.{RL_LOOP_FETCH}.{key}): how rollouts are fetched is not "
            "a DVC param, so changing it re-runs nothing"
        )
        for key in FETCH_KEYS
    }

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


def _check_band(value: list[float]) -> str | None:
    if len(value) != 2 or not 0 <= value[0] < value[1] <= 1:
        return f"expected [low, high] with 0 <= low < high <= 1, got {value!r}"
    return None


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
    band: Checked(list[float], _check_band) = Field(
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

    prev: Checked(str, _check_iteration_key)
    pool: str
    measured: str = Field(
        description="the rollouts whose pass rates choose (iteration 001: the pool, nothing measured)"
    )
    state: str = Field(description="the previous selection's state (iteration 001: the pool)")
    size: int = Field(ge=1)
    band: Checked(list[float], _check_band)
    seed: int | None = None


class Train(Strict):
    """The trainer command and its settings (each one a placeholder of `cmd`; the LoRA trainer takes them all)."""

    cmd: Checked(str, _template(*TRAIN_PLACEHOLDERS)) = DEFAULT_TRAIN_CMD
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

    model: Checked(str, _template("iteration")) = "iter_{iteration}"
    init_model: str | None = Field(
        None,
        description=(
            "the name the server serves checkpoint 000 under (a real server: the base model's); null = model's"
        ),
    )
    cmd: Checked(str, _template(*UPDATE_PLACEHOLDERS)) | None = None
    url: Checked(str, _check_http_url) | None = None
    body: Checked(dict, _check_update_body) | None = None
    timeout_s: float = Field(60.0, gt=0)


class Iteration(Strict):
    """One RL iteration: which checkpoint collects, at which temperature, on which prompts."""

    prev: Checked(str, _check_iteration_key)
    temperature: float = Field(ge=0, le=2)
    prompts: str
    seed: int | None = None


class RlEval(Strict):
    """Each iteration's checkpoint evaluated at one fixed temperature on one held-out prompt set, so the eval
    reward moves only when the policy does (the collection reward also moves with the annealed temperature)."""

    moved_keys: ClassVar[dict[str, str]] = {
        key: (
            f"moved to fetch.{key} (or fetch.objectives.{RL_EVAL_FETCH}.{key}): how rollouts are fetched is not "
            "a DVC param, so changing it re-runs nothing"
        )
        for key in FETCH_KEYS
    }

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


# ---- the stages after collection ------------------------------------------------------------------------


class Filter(Strict):
    """The `filter` stage (SFT data)."""

    objective: str = Field("sft", description="the objective whose rollouts the SFT data is filtered from")
    min_reward: float = Field(0.8, description="SFT keeps rollouts with reward >= this")
    where: str | None = Field(None, description="an optional jq expression over a rollout record")
    dedupe: bool = Field(True, description="drop exact duplicate outputs for the same prompt")
    keep_reasoning: bool = Field(True, description="the model's reasoning as the assistant's reasoning_content")
    format: Literal["messages", "prompt_completion"] = Field(
        "messages",
        description=(
            "TRL's conversational language modeling (messages) or prompt-completion (completion-only loss by default)"
        ),
    )
    drop_unhealthy: bool = Field(False, description="drop rollouts the health checks find unhealthy (`health`)")
    where_timeout_s: float = Field(10.0, gt=0, description="seconds one record's `where` may take")
    where_stage_timeout_s: float = Field(3600.0, gt=0, description="seconds the whole stage's `where` may take")


class Pair(Strict):
    """The `pair` stage (DPO data)."""

    objective: str = Field("dpo", description="the objective whose rollouts the DPO pairs are made from")
    min_margin: float = Field(0.0, ge=0, description="pairs need chosen_reward - rejected_reward > 0 and >= this")
    pairs_per_prompt: int | None = Field(1, ge=1, description="pairs per prompt (null: no cap)")
    strategy: Literal["best_vs_worst", "all_pairs"] = Field(
        "best_vs_worst",
        description=(
            "best_vs_worst: i-th best against i-th worst, each rollout in one pair at most; all_pairs: every pair above "
            "the margin, largest margin first"
        ),
    )


class Metrics(Strict):
    """The `metrics` stage."""

    pass_threshold: float = Field(1.0, description="a rollout passes when reward >= this (pass@k counts passes)")


class Health(Strict):
    """The rollout health checks (stages/health.py): metrics count them, filter may drop, pair never chooses them."""

    repetition_ngram: int = Field(4, ge=1, description="words per n-gram of the repetition checks")
    repetition_min_ngrams: int = Field(16, ge=1, description="outputs with fewer n-grams are never called repetitive")
    repetition_ratio: float = Field(
        0.5, gt=0, le=1, description="output_repetition: the share of repeated n-grams above this"
    )
    runaway_repetition_ratio: float = Field(
        0.2, gt=0, le=1, description="output_runaway_repetition: cut off at max_output_tokens and repeating above this"
    )
    script_mismatch_ratio: float = Field(
        0.5, gt=0, le=1, description="output_script_mismatch: the share of letters in scripts the input never uses"
    )
    script_min_letters: int = Field(20, ge=1, description="outputs with fewer letters are never called a mismatch")


class Profile(Strict):
    """The `profile` stage: per-prompt pass rates, and prompts by pass-rate band."""

    band: Checked(list[float], _check_band) = Field(
        default_factory=lambda: [0.1, 0.9], description="the learnable band [low, high] of pass rates"
    )
    group_by: str | None = Field("difficulty", description="an input field to count bands by, when records carry it")


class Report(Strict):
    """The HTML report (reports/index.html)."""

    browser_prompts: int = Field(40, ge=1, description="prompts the rollout browser shows per objective")
    random_per_prompt: int = Field(1, ge=0, description="random rollouts shown per prompt, besides the best and worst")
    seed: int = Field(0, description="which prompts and rollouts the browser samples")


class Params(Strict):
    """params.yaml."""

    prompts: PromptSets = Field(default_factory=PromptSets)
    agents: NamedMap(Agent)
    objectives: NamedMap(Objective)
    fetch: Fetch = Field(default_factory=Fetch)
    filter: Filter = Field(default_factory=Filter)
    pair: Pair = Field(default_factory=Pair)
    metrics: Metrics = Field(default_factory=Metrics)
    health: Health = Field(default_factory=Health)
    profile: Profile = Field(default_factory=Profile)
    report: Report = Field(default_factory=Report)
    rl: Rl = Field(default_factory=Rl)


def params_json_schema() -> dict:
    """The JSON Schema of params.yaml (params.schema.json), generated from the models above."""
    schema = Params.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "params.yaml of the rollout-data pipeline"
    return schema


def _check_rl(rl: dict, agents: dict, source: str) -> None:
    """Cross-checks the schema cannot express: references between keys."""
    where = f"{source}: rl"
    for key in rl["iterations"]:
        problem = _check_iteration_key(key) or (
            "iteration 000 is the initial checkpoint (rl.init)" if key == "000" else None
        )
        if problem:
            raise UserError(f"{where}.iterations.{key}: {problem}")
    agent = rl["collect"]["agent_name"]
    if agent is not None and agent not in agents:
        raise UserError(
            f"{where}.collect.agent_name: unknown agent {agent!r}{did_you_mean(agent, agents)}; "
            f"known agents: {', '.join(agents) or '(none)'}"
        )
    if rl["collect"]["responses_create_params"].get("temperature") is not None:
        raise UserError(
            f"{where}.collect.responses_create_params.temperature: the temperature is set per iteration "
            "(rl.iterations.NNN.temperature, filled from rl.schedule.temperature); remove it here"
        )
    temperature = rl["schedule"]["temperature"]
    if temperature["shape"] == "exponential" and min(temperature["start"], temperature["end"]) <= 0:
        raise UserError(f"{where}.schedule.temperature: the exponential shape needs start > 0 and end > 0")
    phases = [phase["from"] for phase in rl["schedule"]["curriculum"]]
    if phases and phases[0] != 1:
        raise UserError(
            f"{where}.schedule.curriculum[0].from: the first phase must start at iteration 1, got {phases[0]}"
        )
    for index in range(1, len(phases)):
        if phases[index] <= phases[index - 1]:
            raise UserError(
                f"{where}.schedule.curriculum[{index}].from: phases must start at increasing iterations "
                f"({phases[index]} does not come after {phases[index - 1]})"
            )
    iterations = rl["iterations"]
    for key, entry in iterations.items():
        prev = entry["prev"]
        if prev >= key:
            raise UserError(f"{where}.iterations.{key}.prev: must be an earlier iteration than {key}, got {prev!r}")
        if prev != "000" and prev not in iterations:
            raise UserError(
                f"{where}.iterations.{key}.prev: no iteration {prev!r} in rl.iterations "
                f'(use "000" for the initial checkpoint)'
            )


def _check_fetch(fetch: dict, params: dict, source: str) -> None:
    """Overrides must name an agent or objective that exists: a typo would silently change nothing."""
    for section, known in (
        ("agents", list(params["agents"])),
        ("objectives", [*params["objectives"], RL_LOOP_FETCH, RL_EVAL_FETCH]),
    ):
        for name in fetch[section]:
            if name not in known:
                raise UserError(
                    f"{source}: fetch.{section}.{name}: no such {section[:-1]}{did_you_mean(name, known)}; "
                    f"known: {', '.join(known)}"
                )


def load_yaml(path: str | os.PathLike) -> Any:
    """Load a YAML file with the safe loader only; syntax errors name the file and line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a YAML file such as params.yaml") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_yaml(data, path)


def parse_yaml(data: bytes, path: str | os.PathLike) -> Any:
    """A YAML file's bytes, read with the safe loader only; errors name the file and line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text_line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{text_line}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{line}: invalid YAML ({problem})") from None


def validate_params(raw: Any, source: str = PARAMS_FILE) -> dict:
    """Validate the whole params mapping (defaults filled in), then the references between keys."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping at the top level")
    model = parse_section(Params, raw, source)
    params = model.model_dump(by_alias=True)
    # Overrides keep only the keys written in params.yaml: the others fall through to the defaults.
    for section in ("agents", "objectives"):
        params["fetch"][section] = {
            name: override.model_dump(exclude_unset=True) for name, override in getattr(model.fetch, section).items()
        }
    agents = params["agents"]
    for name, objective in params["objectives"].items():
        agent = objective["agent_name"]
        if agent not in agents:
            raise UserError(
                f"{source}: objectives.{name}.agent_name: unknown agent {agent!r}{did_you_mean(agent, agents)}; "
                f"known agents: {', '.join(agents) or '(none)'}"
            )
    _check_fetch(params["fetch"], params, source)
    # A stage's objective written in params.yaml must exist; left to its default, it is checked when the stage runs
    # (a params.yaml for the collector alone need not have an sft or dpo objective).
    for stage in ("filter", "pair"):
        if "objective" in getattr(model, stage).model_fields_set:
            stage_objective(params, stage, source)
    _check_rl(params["rl"], agents, source)
    return params


# The agent keys that decide a verdict and not a generation: the score stages track these, the collect stages the
# rest, so a verifier change re-scores and never asks the model again.
SCORING_KEYS = ("verifier",)


def generation_settings(agent: dict) -> dict:
    """What of an agent's settings decides its generations: all but the verifier (an agent's own reward comes with
    the generation, so protocol: agent's verdicts are covered here too)."""
    return {key: value for key, value in agent.items() if key not in SCORING_KEYS}


def scoring_settings(agent: dict) -> dict:
    """What of an agent's settings decides its verdicts: the verifier (none for protocol: agent: the agent's)."""
    if agent["protocol"] == "agent":
        return {"protocol": "agent"}
    return {"protocol": agent["protocol"], **{key: agent[key] for key in SCORING_KEYS}}


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict:
    """Load and validate params.yaml."""
    return validate_params(load_yaml(path), str(path))


def parse_params(data: bytes, path: str | os.PathLike = PARAMS_FILE) -> dict:
    """params.yaml's bytes, validated (errors name `path`)."""
    return validate_params(parse_yaml(data, path), str(path))
