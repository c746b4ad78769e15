"""params.yaml: its schema, safe loading and validation (run at the start of every stage)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, did_you_mean
from .schema import Field, MapOf, Section, validate

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
    "max_retries": Field((int,), default=5, minimum=0),
    "retry_backoff_s": Field((float,), default=0.5, minimum=0),
    "repeat_mode": Field((str,), default="separate", choices=("separate", "n")),
    "checkpoint_dir": Field((str,), nullable=True),
    "embedded_args": Field((list,), default=[]),
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

SCHEMA = Section({
    "prompts": Section({"sets": MapOf(PROMPT_SET)}),
    "agents": MapOf(AGENT, required=True),
    "objectives": MapOf(OBJECTIVE, required=True),
    "filter": Section({
        "min_reward": Field((float,), default=0.8),
        "where": Field((str,), nullable=True),
        "dedupe": Field((bool,), default=True),
    }),
    "pair": Section({"min_margin": Field((float,), default=0.0, minimum=0)}),
    "metrics": Section({"pass_threshold": Field((float,), default=1.0)}),
    "rl": Section({}, open=True),
})


def load_yaml(path: str | os.PathLike) -> Any:
    """Load a YAML file with the safe loader only; syntax errors name the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
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
