"""params.yaml's models (pydantic; the one schema: validation and params.schema.json), one module per part of the
file, and its loading; the entry points read the validated result through `settings`, without importing these."""

from rollout_pipeline.params.base import Checked, NamedMap, Open, Strict, parse_section
from rollout_pipeline.params.checks import validated_verifier
from rollout_pipeline.params.collection import (
    FETCH_KEYS,
    Agent,
    Fetch,
    FetchSettings,
    Objective,
    PromptSet,
    PromptSets,
    Sampling,
)
from rollout_pipeline.params.document import (
    Params,
    apply_flags,
    load_params,
    load_yaml,
    params_json_schema,
    parse_params,
    parse_yaml,
    validate_params,
)
from rollout_pipeline.params.rl_loop import Rl
from rollout_pipeline.params.stages import Filter, Health, Metrics, Pair, Profile, Report
from rollout_pipeline.settings import (
    PARAMS_FILE,
    agent_settings,
    fetch_settings,
    objective_settings,
    stage_objective,
)

__all__ = [
    "FETCH_KEYS",
    "PARAMS_FILE",
    "Agent",
    "Checked",
    "Fetch",
    "FetchSettings",
    "Filter",
    "Health",
    "Metrics",
    "NamedMap",
    "Objective",
    "Open",
    "Pair",
    "Params",
    "Profile",
    "PromptSet",
    "PromptSets",
    "Report",
    "Rl",
    "Sampling",
    "Strict",
    "agent_settings",
    "apply_flags",
    "fetch_settings",
    "load_params",
    "load_yaml",
    "objective_settings",
    "params_json_schema",
    "parse_params",
    "parse_section",
    "parse_yaml",
    "stage_objective",
    "validate_params",
    "validated_verifier",
]
