"""params.yaml as a whole: the `Params` model, its cross-checks (references between keys), loading, the schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from rollout_pipeline.errors import UserError, did_you_mean
from rollout_pipeline.params.base import NamedMap, Strict, parse_section
from rollout_pipeline.params.collection import Agent, Fetch, Objective, PromptSets
from rollout_pipeline.params.describe import describe
from rollout_pipeline.params.rl_loop import Rl, rl_problem
from rollout_pipeline.params.stages import Filter, Health, Metrics, Pair, Profile, Report
from rollout_pipeline.settings import PARAMS_FILE, RL_EVAL_FETCH, RL_LOOP_FETCH, stage_objective_problem


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

    @model_validator(mode="after")
    def _references_exist(self) -> Params:
        """Cross-checks the schema cannot express: references between keys (a typo would silently change nothing)."""
        problem = (
            self._unknown_agent()
            or self._groups_of_one()
            or self._unknown_fetch_override()
            or self._unknown_stage_objective()
            or rl_problem(self.rl, list(self.agents))
        )
        if problem:
            raise ValueError(problem)
        return self

    def _unknown_agent(self) -> str | None:
        agents = list(self.agents)
        for name, objective in self.objectives.items():
            if objective.agent_name not in agents:
                return (
                    f"objectives.{name}.agent_name: unknown agent {objective.agent_name!r}"
                    f"{did_you_mean(objective.agent_name, agents)}; known agents: {', '.join(agents) or '(none)'}"
                )
        return None

    def _groups_of_one(self) -> str | None:
        for name, objective in self.objectives.items():
            if objective.dynamic_sampling is not None and objective.num_repeats < 2:
                return (
                    f"objectives.{name}.dynamic_sampling needs num_repeats >= 2 (it is {objective.num_repeats}): "
                    "a group of one rollout never has reward variance"
                )
        return None

    def _unknown_fetch_override(self) -> str | None:
        for section, known in (
            ("agents", list(self.agents)),
            ("objectives", [*self.objectives, RL_LOOP_FETCH, RL_EVAL_FETCH]),
        ):
            for name in getattr(self.fetch, section):
                if name not in known:
                    return (
                        f"fetch.{section}.{name}: no such {section[:-1]}{did_you_mean(name, known)}; "
                        f"known: {', '.join(known)}"
                    )
        return None

    def _unknown_stage_objective(self) -> str | None:
        # Written in params.yaml, a stage's objective must exist; left to its default, it is checked when the stage
        # runs (a params.yaml for the collector alone need not have an sft or dpo objective).
        for stage in ("filter", "pair"):
            section = getattr(self, stage)
            if "objective" in section.model_fields_set:
                problem = stage_objective_problem(stage, section.objective, list(self.objectives))
                if problem:
                    return problem
        return None


def params_json_schema() -> dict:
    """The JSON Schema of params.yaml (params.schema.json), generated from the models."""
    schema = Params.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "params.yaml of the rollout-data pipeline"
    return schema


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
    """Validate the whole params mapping: defaults filled in, references between keys checked (`Params`)."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping at the top level")
    model = parse_section(Params, raw, source)
    params = model.model_dump(by_alias=True)
    # Overrides keep only the keys written in params.yaml: the others fall through to the defaults.
    for section in ("agents", "objectives"):
        params["fetch"][section] = {
            name: override.model_dump(exclude_unset=True) for name, override in getattr(model.fetch, section).items()
        }
    return params


def apply_flags(params: dict, section: str, flags: dict[str, Any]) -> dict:
    """Validated `params` with keys of one section set from a command line's flags (`min_margin` from
    --min-margin), validated by the section's model as params.yaml is; an error names the flag."""
    model = Params.model_fields[section].annotation
    try:
        validated = model.model_validate({**params[section], **flags})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0])
        flag = "--" + key.replace("_", "-")
        raise UserError(f"{flag}: {describe(model, error, '').removeprefix(f'{key}: ')}") from None
    return {**params, section: validated.model_dump(by_alias=True)}


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict:
    """Load and validate params.yaml."""
    return validate_params(load_yaml(path), str(path))


def parse_params(data: bytes, path: str | os.PathLike = PARAMS_FILE) -> dict:
    """params.yaml's bytes, validated (errors name `path`)."""
    return validate_params(parse_yaml(data, path), str(path))
