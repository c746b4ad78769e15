"""params.yaml has one schema: the pydantic models validate it, and params.schema.json (made from them) lets editors
complete and check it."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from rollout_pipeline.cli.params_schema import SCHEMA_FILE, schema_text
from rollout_pipeline.errors import UserError
from rollout_pipeline.params import FETCH_KEYS, fetch_settings, validate_params
from support import ROOT


def committed_schema() -> dict:
    return json.loads((ROOT / SCHEMA_FILE).read_text())


def test_the_committed_json_schema_is_the_one_the_models_generate():
    assert (ROOT / SCHEMA_FILE).read_text() == schema_text(), "params.schema.json is stale: run `make params-schema`"


def test_params_yaml_names_its_schema_for_editors_on_its_first_line():
    first_line = (ROOT / "params.yaml").read_text().splitlines()[0]
    assert first_line == f"# yaml-language-server: $schema={SCHEMA_FILE}"


def test_params_yaml_conforms_to_the_json_schema():
    jsonschema.Draft202012Validator(committed_schema()).validate(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.mark.parametrize(
    "change, path",
    [
        (lambda p: p["agents"]["math_agent"].update(protocl="chat"), ["agents", "math_agent"]),
        (lambda p: p["objectives"]["rl"].update(num_repeats=0), ["objectives", "rl", "num_repeats"]),
        (lambda p: p["fetch"].update(timeout_s="fast"), ["fetch", "timeout_s"]),
        (lambda p: p["objectives"]["sft"].update(num_samples_in_parallel=8), ["objectives", "sft"]),
    ],
)
def test_an_editor_flags_what_the_stages_refuse(change, path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    change(params)
    errors = list(jsonschema.Draft202012Validator(committed_schema()).iter_errors(params))
    flagged = [list(error.absolute_path)[: len(path)] for error in errors]
    assert path in flagged and {tuple(where[:1]) for where in flagged} == {(path[0],)}  # that key, nothing else
    with pytest.raises(UserError):
        validate_params(params)


def test_a_typo_still_gets_a_suggestion_naming_the_key():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["filter"]["min_rewrd"] = 0.5
    with pytest.raises(
        UserError, match=re.escape("params.yaml: filter.min_rewrd: unknown key (did you mean 'min_reward'?)")
    ):
        validate_params(params)


def test_numbers_are_not_read_from_strings_and_true_is_not_a_number():
    for value in ("4", True):
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["objectives"]["rl"]["num_repeats"] = value
        with pytest.raises(
            UserError, match=re.escape(f"objectives.rl.num_repeats: expected an integer, got {value!r}")
        ):
            validate_params(params)


def test_a_fetch_key_left_in_an_objective_says_where_it_moved_and_why():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["objectives"]["rl"]["max_failure_rate"] = 0.1
    with pytest.raises(
        UserError,
        match=re.escape(
            "objectives.rl.max_failure_rate: moved to fetch.max_failure_rate "
            "(or fetch.objectives.rl.max_failure_rate): how rollouts are fetched "
            "is not a DVC param, so changing it re-runs nothing"
        ),
    ):
        validate_params(params)


def test_fetch_settings_come_from_the_defaults_then_the_agent_then_the_objective():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["fetch"].update(
        timeout_s=50,
        max_retries=3,
        agents={"math_agent": {"timeout_s": 60, "num_samples_in_parallel": 8}},
        objectives={"rl": {"num_samples_in_parallel": None}},
    )
    validated = validate_params(params)
    rl = fetch_settings(validated, "math_agent", "rl")
    sft = fetch_settings(validated, "math_agent", "sft")
    assert set(rl) == set(FETCH_KEYS)
    assert (rl["timeout_s"], rl["max_retries"], rl["num_samples_in_parallel"]) == (60, 3, None)  # null: the pool's cap
    assert (sft["timeout_s"], sft["num_samples_in_parallel"]) == (60, 8)


def test_an_override_for_an_agent_that_does_not_exist_is_an_error_not_a_silent_no_op():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["fetch"]["agents"] = {"math_agnt": {"timeout_s": 5}}
    with pytest.raises(
        UserError, match=re.escape("fetch.agents.math_agnt: no such agent (did you mean 'math_agent'?)")
    ):
        validate_params(params)


def test_dynamic_sampling_on_an_objective_of_one_rollout_per_prompt_is_refused_before_any_request():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["objectives"]["sft"]["dynamic_sampling"] = {"groups": 10, "max_prompts": 20}
    with pytest.raises(
        UserError,
        match=re.escape(
            "objectives.sft.dynamic_sampling needs num_repeats >= 2 (it is 1): "
            "a group of one rollout never has reward variance"
        ),
    ):
        validate_params(params)
    params["objectives"]["sft"]["num_repeats"] = 2
    assert validate_params(params)["objectives"]["sft"]["dynamic_sampling"] == {"groups": 10, "max_prompts": 20}
