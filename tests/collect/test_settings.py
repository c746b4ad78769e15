"""A run's typed settings: built from validated params.yaml, the agent's section and the fetch settings kept apart,
and handed whole to the processes and Ray workers (pickled)."""

from __future__ import annotations

import pickle

from rollout_pipeline.collect.settings import CollectSettings, RequestOptions
from rollout_pipeline.params import FETCH_KEYS
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
    assert not set(settings.agent) & set(FETCH_KEYS)  # the agent's section as params.yaml has it, nothing merged in
    assert settings.fetch.timeout_s == 90.0 and settings.fetch.max_retries == 3  # objective over agent over default
    assert settings.fetch.verify_timeout_s == 10.0  # the FetchSettings model's default
    assert (settings.num_samples_in_parallel, settings.num_repeats) == (8, 4)
    assert set(RequestOptions.__dataclass_fields__) | {"num_samples_in_parallel", "max_failure_rate"} == set(FETCH_KEYS)


def test_the_settings_survive_the_trip_to_another_process_whole(tmp_path):
    settings = _settings(tmp_path)
    again = pickle.loads(pickle.dumps(settings))
    assert again == settings and again.identity("sha") == settings.identity("sha")
