"""`scripts/agent_settings.py`: each agent's settings split into what decides its generations and what decides its
verdicts, one JSON file each, for DVC to track apart (the collect stages depend on the first, the score stages on
the second)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rollout_pipeline import paths
from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.collect.redact import without_credentials
from rollout_pipeline.errors import run_cli
from rollout_pipeline.jsonl import write_json
from rollout_pipeline.params import PARAMS_FILE, load_params


def main() -> int:
    parser = argparse.ArgumentParser(prog="agent_settings.py", description=__doc__)
    parser.add_argument(
        "--out",
        default=str(paths.AGENT_SETTINGS_DIR),
        help="folder for <agent>.generation.json and <agent>.scoring.json",
    )
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: params.yaml)")
    options = parser.parse_args()
    out = Path(options.out)
    params = load_params(options.params)
    agents = params["agents"]
    suffixes = (".generation.json", ".scoring.json")
    for name in agents:
        agent = AgentSettings.named(params, name, options.params)
        # URL credentials are secrets, and never what a rollout is: masked (DVC tracks these files' content).
        agent = dataclasses.replace(
            agent, url=without_credentials(agent.url), verifier=without_credentials(agent.verifier)
        )
        write_json(out / f"{name}{suffixes[0]}", agent.generation_settings())
        write_json(out / f"{name}{suffixes[1]}", agent.scoring_settings())
    for stale in out.glob("*.json"):  # an agent removed from params.yaml leaves no file behind
        if not any(stale.name.removesuffix(suffix) in agents for suffix in suffixes if stale.name.endswith(suffix)):
            stale.unlink()
    return 0


def script_main() -> None:
    """Entry point of `python scripts/agent_settings.py`."""
    run_cli(main, "agent_settings.py")
