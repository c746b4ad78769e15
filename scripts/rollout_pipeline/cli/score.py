"""`scripts/score.py` and `rescore`: score generated rollouts, or re-score scored ones, without the model server.

- ``--objective NAME``: the pipeline's score stage: data/generations/NAME.jsonl -> data/rollouts/NAME.jsonl, with
  the verifier of the objective's agent (params.yaml).
- ``rescore IN [--out OUT] (--agent NAME | --verifier V)``: any rollout file the collector wrote (scored or not,
  its failures file beside it), scored again; OUT defaults to IN, replaced atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from rollout_pipeline.cli.start_guard import guarded_imports

with guarded_imports():  # the scorer's imports (the verifiers, pydantic): a Ctrl-C meanwhile is a clean stop
    from rollout_pipeline import paths
    from rollout_pipeline.collect.agent_settings import AgentSettings
    from rollout_pipeline.collect.score_run import ScoreRun, ScoreSettings
    from rollout_pipeline.collect.settings import RequestOptions
    from rollout_pipeline.errors import UserError, run_cli
    from rollout_pipeline.params import (
        PARAMS_FILE,
        Agent,
        fetch_settings,
        load_params,
        objective_settings,
        validated_verifier,
    )


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("input", nargs="?", help="a rollout file the collector wrote (.jsonl)")
    parser.add_argument("--objective", help="score that objective's generations (the pipeline's score stage)")
    parser.add_argument("--out", help="the scored rollout file (default: the input, replaced atomically)")
    parser.add_argument("--agent", help="score with this agent's verifier and settings (params.yaml)")
    parser.add_argument(
        "--verifier",
        help="score with this verifier: math | exact | a /verify URL | module:function (overrides the agent's)",
    )
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: params.yaml)")
    return parser


def settings_from_args(options: argparse.Namespace) -> ScoreSettings:
    params = load_params(options.params)
    if options.objective:
        if options.input or options.out:
            raise UserError(
                "--objective reads data/generations/<objective>.jsonl and writes data/rollouts/; give "
                "either --objective or an input file"
            )
        objective = objective_settings(params, options.objective, options.params)
        agent_name = objective["agent_name"]
        source = paths.generations(options.objective)
        target = paths.rollouts(options.objective)
        fetch = fetch_settings(params, agent_name, options.objective)
    elif options.input:
        if not options.agent and not options.verifier:
            raise UserError("give --agent NAME (its verifier, from params.yaml) or --verifier V to score with")
        agent_name = options.agent or "(--verifier)"
        source = Path(options.input)
        target = Path(options.out) if options.out else source
        fetch = fetch_settings(params, agent_name, "")
    else:
        raise UserError("give an input file (rescore FILE --verifier math) or --objective NAME")
    # --verifier alone: no agent's URL or key is involved (a /verify URL gets no Authorization header).
    agent = (
        AgentSettings.named(params, agent_name, options.params)
        if agent_name != "(--verifier)"
        else AgentSettings.from_model(Agent())
    )
    if options.verifier:  # a verifier named here scores whatever the agent's protocol: the reward is ours
        agent = dataclasses.replace(agent, verifier=validated_verifier(options.verifier), protocol="chat")
    return ScoreSettings(
        agent_name=agent_name,
        agent=agent,
        fetch=RequestOptions.from_fetch(fetch),
        input_path=source,
        output_path=target,
        max_failure_rate=fetch["max_failure_rate"],
    )


def main(argv: list[str] | None = None, prog: str = "rescore") -> int:
    options = _parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    return ScoreRun(settings_from_args(options)).run()


def script_main() -> None:
    """Entry point of `python scripts/score.py`."""
    run_cli(lambda: main(prog="score.py"), "score.py")


def rescore_main() -> None:
    """Entry point of the `rescore` command."""
    run_cli(main, "rescore")
