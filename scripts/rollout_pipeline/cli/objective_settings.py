"""`scripts/objective_settings.py` (stage objective_settings@<objective>): one JSON file saying what, beyond the
objective's generation settings, chooses which rollouts its collect stage keeps. With dynamic sampling its rounds keep the groups to which the agent's
verifier gives reward variance, so the verifier chooses them: the file holds the verifier's fingerprint (its name, and
a hash of its code and packages), and an edit to the verifier collects that objective again. Without it the verifier
chooses nothing there and the file says so, so the edit re-scores the generations and never asks the model again."""

from __future__ import annotations

import argparse
from pathlib import Path

from rollout_pipeline import paths
from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.collect.fingerprint import verifier_fingerprint
from rollout_pipeline.errors import run_cli
from rollout_pipeline.jsonl import write_json
from rollout_pipeline.params import PARAMS_FILE, load_params
from rollout_pipeline.settings import objective_settings


def main() -> int:
    parser = argparse.ArgumentParser(prog="objective_settings.py", description=__doc__)
    parser.add_argument("--objective", required=True, help="the objective (a key of params.yaml's objectives)")
    parser.add_argument("--out", help="the file to write (default data/settings/objectives/<objective>.json)")
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: params.yaml)")
    options = parser.parse_args()
    params = load_params(options.params)
    objective = objective_settings(params, options.objective, options.params)
    chosen_by = None
    if objective["dynamic_sampling"] is not None:
        agent = AgentSettings.named(params, objective["agent_name"], options.params)
        chosen_by = verifier_fingerprint(agent.protocol, agent.verifier)
    out = Path(options.out or paths.OBJECTIVE_SETTINGS_DIR / f"{options.objective}.json")
    write_json(out, {"rollouts_chosen_by_verifier": chosen_by})
    return 0


def script_main() -> None:
    """Entry point of `python scripts/objective_settings.py`."""
    run_cli(main, "objective_settings.py")
