"""params.yaml: its schema, safe loading and validation (run at the start of every stage)."""
from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Any

import yaml

from rollout_pipeline.errors import UserError, did_you_mean
from rollout_pipeline.schema import Field, ListOf, MapOf, Section, validate

PARAMS_FILE = "params.yaml"
OBJECTIVES = ("rl", "sft", "dpo")


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


def _check_env_name(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return None
    return "must be the NAME of an environment variable (the key itself never goes in params.yaml)"


AGENT = Section({
    "protocol": Field((str,), default="chat", choices=("chat", "responses", "agent"),
                      help="chat: POST /v1/chat/completions; responses: POST /v1/responses; agent: NeMo Gym POST /run"),
    "url": Field((str, list), default="embedded", check=_check_url),
    "model": Field((str,), default="reference"),
    "api_key_env": Field((str,), nullable=True, check=_check_env_name),
    "verifier": Field((str,), default="math", check=_check_verifier),
    "timeout_s": Field((float,), default=120.0, minimum=0, exclusive_minimum=True),
    "connect_timeout_s": Field((float,), default=10.0, minimum=0, exclusive_minimum=True),
    "max_retries": Field((int,), default=20, minimum=0),
    "give_up_after_s": Field((float,), default=300.0, minimum=0, exclusive_minimum=True),
    "retry_backoff_s": Field((float,), default=0.5, minimum=0),
    "repeat_mode": Field((str,), default="separate", choices=("separate", "n")),
    "checkpoint_dir": Field((str,), nullable=True),
    "embedded_args": Field((list,), default=[]),
    # Ask for token data, the way each protocol documents it: logprobs (chat `logprobs`, Responses `include`),
    # or ids too (chat `return_token_ids`: vLLM >= 0.10.2 and SGLang). Kept under NeMo Gym's names.
    "token_data": Field((str,), nullable=True, choices=("logprobs", "ids")),
    # Replies over this size are refused while they stream in (not retried): a record holds the text twice, and
    # the stages read lines of up to 64 MB.
    "max_reply_bytes": Field((int,), default=16 * 1024 * 1024, minimum=1024, maximum=24 * 1024 * 1024),
})

SAMPLING = Section({
    "temperature": Field((float,), nullable=True, minimum=0, maximum=2),
    "top_p": Field((float,), nullable=True, minimum=0, exclusive_minimum=True, maximum=1),
    "max_output_tokens": Field((int,), nullable=True, minimum=1),
}, open=True)

OBJECTIVE = Section({
    "agent_name": Field((str,), required=True),
    "prompts": Field((str,), required=True),
    "num_repeats": Field((int,), default=1, minimum=1),
    "num_samples_in_parallel": Field((int,), nullable=True, minimum=1),
    "limit": Field((int,), nullable=True, minimum=1),
    "seed": Field((int,), nullable=True),
    "max_failure_rate": Field((float,), default=0.0, minimum=0, maximum=1),
    "responses_create_params": SAMPLING,
})

PROMPT_SET = Section({
    "count": Field((int,), required=True, minimum=1),
    "difficulty": Field((str,), default="mixed", choices=("easy", "hard", "mixed")),
    "seed": Field((int,), default=0),
})

# ---- rl: the online RL loop (see rl/loop.py and the README's "The RL loop") -------------------------

ITERATION_KEY_RE = re.compile(r"\d{3}")
DEFAULT_TRAIN_CMD = "python scripts/train.py --rollouts {rollouts} --init {init} --out {out} --lr {lr} --steps {steps}"
TRAIN_PLACEHOLDERS = ("rollouts", "init", "out", "iteration", "prev", "lr", "steps", "python")
UPDATE_PLACEHOLDERS = ("checkpoint", "model", "iteration")


def _check_iteration_key(value: str) -> str | None:
    if ITERATION_KEY_RE.fullmatch(value):
        return None
    return f'iterations are three digits in quotes, like "004" (got {value!r})'


def _template(*allowed: str):
    """A check for a str.format template that may only use the `allowed` placeholders."""
    def check(value: str) -> str | None:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            return f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        for name in names:
            if name not in allowed:
                return (f"unknown placeholder {{{name}}}{did_you_mean(name, allowed)}; "
                        f"placeholders: {', '.join('{' + a + '}' for a in allowed)}")
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


RL_SCHEMA = Section({
    "collect": Section({
        "agent_name": Field((str,), nullable=True),
        "num_repeats": Field((int,), default=8, minimum=1),
        **{key: OBJECTIVE.fields[key] for key in ("num_samples_in_parallel", "limit", "max_failure_rate",
                                                 "responses_create_params")},
    }),
    "schedule": Section({
        "temperature": Section({
            "start": Field((float,), default=0.9, minimum=0, maximum=2),
            "end": Field((float,), default=0.3, minimum=0, maximum=2),
            "over": Field((int,), default=10, minimum=1),
            "shape": Field((str,), default="linear", choices=("linear", "cosine", "exponential")),
        }),
        "curriculum": ListOf(Section({
            "from": Field((int,), required=True, minimum=1),
            "prompts": Field((str,), required=True),
        })),
        "seed": Field((int,), nullable=True),
    }),
    "init": Field((str,), default="reference"),
    "train": Section({
        "cmd": Field((str,), default=DEFAULT_TRAIN_CMD, check=_template(*TRAIN_PLACEHOLDERS)),
        "lr": Field((float,), default=0.15, minimum=0, exclusive_minimum=True),
        "steps": Field((int,), default=10, minimum=1),
    }),
    "update": Section({
        "model": Field((str,), default="iter_{iteration}", check=_template("iteration")),
        "cmd": Field((str,), nullable=True, check=_template(*UPDATE_PLACEHOLDERS)),
        "url": Field((str,), nullable=True, check=_check_http_url),
        "body": Field((dict,), nullable=True, check=_check_update_body),
        "timeout_s": Field((float,), default=60.0, minimum=0, exclusive_minimum=True),
    }),
    "iterations": MapOf(Section({
        "prev": Field((str,), required=True, check=_check_iteration_key),
        "temperature": Field((float,), required=True, minimum=0, maximum=2),
        "prompts": Field((str,), required=True),
        "seed": Field((int,), nullable=True),
    }), key_pattern=lambda key: _check_iteration_key(key) or ("iteration 000 is the initial checkpoint (rl.init)"
                                                              if key == "000" else None)),
})


def _check_rl(rl: dict, agents: dict, source: str) -> None:
    """Cross-checks the schema cannot express: references between keys."""
    where = f"{source}: rl"
    agent = rl["collect"]["agent_name"]
    if agent is not None and agent not in agents:
        raise UserError(f"{where}.collect.agent_name: unknown agent {agent!r}{did_you_mean(agent, agents)}; "
                        f"known agents: {', '.join(agents) or '(none)'}")
    if rl["collect"]["responses_create_params"].get("temperature") is not None:
        raise UserError(f"{where}.collect.responses_create_params.temperature: the temperature is set per iteration "
                        "(rl.iterations.NNN.temperature, filled from rl.schedule.temperature); remove it here")
    temperature = rl["schedule"]["temperature"]
    if temperature["shape"] == "exponential" and min(temperature["start"], temperature["end"]) <= 0:
        raise UserError(f"{where}.schedule.temperature: the exponential shape needs start > 0 and end > 0")
    phases = [phase["from"] for phase in rl["schedule"]["curriculum"]]
    if phases and phases[0] != 1:
        raise UserError(f"{where}.schedule.curriculum[0].from: the first phase must start at iteration 1, got {phases[0]}")
    for index in range(1, len(phases)):
        if phases[index] <= phases[index - 1]:
            raise UserError(f"{where}.schedule.curriculum[{index}].from: phases must start at increasing iterations "
                            f"({phases[index]} does not come after {phases[index - 1]})")
    iterations = rl["iterations"]
    for key, entry in iterations.items():
        prev = entry["prev"]
        if prev >= key:
            raise UserError(f"{where}.iterations.{key}.prev: must be an earlier iteration than {key}, got {prev!r}")
        if prev != "000" and prev not in iterations:
            raise UserError(f"{where}.iterations.{key}.prev: no iteration {prev!r} in rl.iterations "
                            f"(use \"000\" for the initial checkpoint)")


SCHEMA = Section({
    "prompts": Section({"sets": MapOf(PROMPT_SET)}),
    "agents": MapOf(AGENT, required=True),
    "objectives": MapOf(OBJECTIVE, required=True),
    "filter": Section({
        "min_reward": Field((float,), default=0.8),
        "where": Field((str,), nullable=True),
        "dedupe": Field((bool,), default=True),
        # The model's reasoning as the assistant's reasoning_content in SFT records (false: the answer alone).
        "keep_reasoning": Field((bool,), default=True),
        # TRL's conversational language modeling (messages) or prompt-completion (completion-only loss by default).
        "format": Field((str,), default="messages", choices=("messages", "prompt_completion")),
        # `where` runs under a watchdog: seconds one record may take, and the whole stage.
        "where_timeout_s": Field((float,), default=10.0, minimum=0, exclusive_minimum=True),
        "where_stage_timeout_s": Field((float,), default=3600.0, minimum=0, exclusive_minimum=True),
    }),
    "pair": Section({
        "min_margin": Field((float,), default=0.0, minimum=0),
        # Pairs per prompt (null: no cap) and how they are picked: best_vs_worst (i-th best against i-th worst, each
        # rollout in one pair at most) or all_pairs (every pair above the margin, largest margin first).
        "pairs_per_prompt": Field((int,), default=1, nullable=True, minimum=1),
        "strategy": Field((str,), default="best_vs_worst", choices=("best_vs_worst", "all_pairs")),
    }),
    "metrics": Section({"pass_threshold": Field((float,), default=1.0)}),
    "rl": RL_SCHEMA,
})


def load_yaml(path: str | os.PathLike) -> Any:
    """Load a YAML file with the safe loader only; syntax errors name the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a YAML file such as params.yaml") from None
    except UnicodeDecodeError as exc:
        text_line = exc.object[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{text_line}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{line}: invalid YAML ({problem})") from None


def validate_params(raw: Any, source: str = PARAMS_FILE) -> dict:
    """Validate the whole params mapping; cross-checks agent references."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping at the top level")
    params = validate(SCHEMA, raw, source)
    agents = params["agents"]
    for name, objective in params["objectives"].items():
        agent = objective["agent_name"]
        if agent not in agents:
            raise UserError(f"{source}: objectives.{name}.agent_name: unknown agent {agent!r}{did_you_mean(agent, agents)}; "
                            f"known agents: {', '.join(agents) or '(none)'}")
    _check_rl(params["rl"], agents, source)
    return params


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict:
    """Load and validate params.yaml."""
    return validate_params(load_yaml(path), str(path))


def objective_settings(params: dict, objective: str, source: str = PARAMS_FILE) -> dict:
    """One objective's validated settings; an unknown name lists the known ones."""
    objectives = params["objectives"]
    if objective not in objectives:
        raise UserError(f"{source}: unknown objective {objective!r}{did_you_mean(objective, objectives)}; "
                        f"known objectives: {', '.join(objectives)}")
    return objectives[objective]


def agent_settings(params: dict, name: str, source: str = PARAMS_FILE) -> dict:
    """One agent's validated settings; an unknown name lists the known ones."""
    agents = params["agents"]
    if name not in agents:
        raise UserError(f"unknown agent_name {name!r}{did_you_mean(name, agents)}; agents in {source}: {', '.join(agents)}")
    return agents[name]
