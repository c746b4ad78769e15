"""A run's typed settings: built from validated params.yaml, the agent's section and the fetch settings kept apart,
and handed whole to the processes and Ray workers (pickled)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.collect.settings import CollectSettings, RequestOptions
from rollout_pipeline.errors import UserError
from rollout_pipeline.params import FETCH_KEYS, Agent, validate_params
from support import objective_run_settings


def _settings(tmp_path) -> CollectSettings:
    return objective_run_settings(
        {
            "agents": {"math_agent": {"url": "http://127.0.0.1:8000", "verifier": "math"}},
            "objectives": {
                "sft": {"agent_name": "math_agent", "prompts": str(tmp_path / "in.jsonl"), "num_repeats": 4}
            },
            "fetch": {
                "timeout_s": 30.0,
                "agents": {"math_agent": {"max_retries": 3, "timeout_s": 60.0}},
                "objectives": {"sft": {"timeout_s": 90.0, "num_samples_in_parallel": 8}},
            },
        },
        tmp_path / "out.jsonl",
    )


def test_the_fetch_settings_are_typed_apart_from_the_agent_with_the_objectives_overrides_winning(tmp_path):
    settings = _settings(tmp_path)
    agent_keys = {field.name for field in dataclasses.fields(settings.agent)}
    assert not agent_keys & set(FETCH_KEYS)  # the agent's section as params.yaml has it, nothing merged in
    assert settings.fetch.timeout_s == 90.0 and settings.fetch.max_retries == 3  # objective over agent over default
    assert settings.fetch.verify_timeout_s == 10.0  # the FetchSettings model's default
    assert (settings.num_samples_in_parallel, settings.num_repeats) == (8, 4)
    assert set(RequestOptions.__dataclass_fields__) | {"num_samples_in_parallel", "max_failure_rate"} == set(FETCH_KEYS)


def test_the_settings_survive_the_trip_to_another_process_whole(tmp_path):
    settings = _settings(tmp_path)
    again = pickle.loads(pickle.dumps(settings))
    assert again == settings and again.identity("sha") == settings.identity("sha")


def test_the_typed_agent_has_the_params_models_fields_in_its_order_and_none_of_its_defaults():
    """The engine's agent is a plain dataclass (no pydantic at a warm start-up), so its fields are the one thing
    written twice: they must stay the `Agent` model's, and the defaults the model's alone."""
    fields = dataclasses.fields(AgentSettings)
    assert [field.name for field in fields] == list(Agent.model_fields)
    assert all(
        field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING for field in fields
    )


def test_an_agent_left_unset_in_params_yaml_is_the_models_defaults_whichever_way_it_is_built():
    validated = validate_params({"agents": {"bare": {}}, "objectives": {}})
    assert AgentSettings.named(validated, "bare") == AgentSettings.from_model(Agent())
    assert AgentSettings.from_model(Agent()).url == "embedded" and AgentSettings.from_model(Agent()).urls == [
        "embedded"
    ]


def test_an_unknown_agent_name_is_one_line_naming_the_params_file_and_the_known_agents():
    validated = validate_params({"agents": {"math_agent": {}}, "objectives": {}})
    with pytest.raises(
        UserError, match=r"unknown agent_name 'math_agnet' \(did you mean 'math_agent'\?\); agents in p.yaml"
    ):
        AgentSettings.named(validated, "math_agnet", "p.yaml")


def test_the_agent_is_split_into_what_decides_its_generations_and_what_decides_its_verdicts():
    agent = AgentSettings.named(
        validate_params(
            {"agents": {"a": {"url": ["http://h1:8000", "http://h2:8000"], "verifier": "exact"}}, "objectives": {}}
        ),
        "a",
    )
    generation = agent.generation_settings()
    assert list(generation) == [name for name in Agent.model_fields if name != "verifier"]  # the model's order
    assert generation["url"] == ["http://h1:8000", "http://h2:8000"] and generation["model"] == "reference"
    assert agent.scoring_settings() == {"protocol": "chat", "verifier": "exact"}
    gym = dataclasses.replace(agent, protocol="agent")
    assert gym.scoring_settings() == {"protocol": "agent"}  # the agent's own reward: no verifier of ours decides it


def test_the_typed_agent_cannot_be_changed_in_place_only_replaced():
    agent = AgentSettings.from_model(Agent())
    with pytest.raises(dataclasses.FrozenInstanceError):
        agent.model = "other"  # type: ignore[misc]
    assert dataclasses.replace(agent, model="other").model == "other" and agent.model == "reference"
