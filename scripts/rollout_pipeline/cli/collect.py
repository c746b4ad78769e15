"""`scripts/collect.py` / `ng_collect_rollouts`: two front ends onto one collector engine.

- The seed documents' syntax: ``+agent_name=... +input_jsonl_fpath=... +output_jsonl_fpath=... +num_repeats=N
  +num_samples_in_parallel=K +limit=M +responses_create_params.<key>=<value>``, read by Hydra's override parser
  (``++key=value``, nested keys, lists and ``+config_paths=[...]`` too: see cli/seed_args.py).
- ``--objective rl|sft|dpo``: that objective's settings from params.yaml (what dvc.yaml uses).
- ``--rl-iteration NNN``: iteration NNN of the RL loop (params.yaml's rl.iterations.NNN, collecting with the
  previous iteration's checkpoint; what the rl_collect@NNN stages run).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rollout_pipeline.cli.start_guard import guarded_imports

# The engine (aiohttp: about half of a run's start-up) is imported once the arguments and params.yaml have been read:
# a mistake in either, and --help, are answered without it.
with guarded_imports():  # a Ctrl-C during the imports is a clean stop (start_guard)
    from rollout_pipeline import paths
    from rollout_pipeline.cli.seed_args import parse_seed_args
    from rollout_pipeline.cli.stage_args import load_params
    from rollout_pipeline.collect.agent_settings import AgentSettings
    from rollout_pipeline.collect.settings import CollectSettings
    from rollout_pipeline.errors import UserError, did_you_mean, run_cli
    from rollout_pipeline.paths import PARAMS_FILE
    from rollout_pipeline.settings import (
        RL_EVAL_FETCH,
        RL_LOOP_FETCH,
        fetch_settings,
        objective_settings,
    )
    from rollout_pipeline.stages.dynamic_sampling import collect_informative

if TYPE_CHECKING:
    from rollout_pipeline.reference.embedded import EmbeddedServer

EXECUTORS = ("local", "ray")


def settings_from_seed_args(
    argv: list[str], params_path: str = PARAMS_FILE, show_progress: bool = True
) -> CollectSettings:
    run, fetch_overrides = parse_seed_args(argv)
    params = load_params(params_path)
    agent_name = str(run["agent_name"])
    agent = AgentSettings.named(params, agent_name, params_path)
    objective = {
        "agent_name": agent_name,
        "prompts": run["input_jsonl_fpath"],
        **{key: run[key] for key in ("num_repeats", "limit", "seed", "responses_create_params")},
    }
    # No +num_samples_in_parallel: the seed's "unlimited", which is the connection pool's cap (the adaptive limit
    # backs off from it when the server sheds load), unless fetch.agents.<agent> in params.yaml sets one.
    fetch = {
        **fetch_settings(params, agent_name, objective_name=""),
        "num_samples_in_parallel": None,
        **params["fetch"]["agents"].get(agent_name, {}),
        **fetch_overrides,
    }
    return CollectSettings.from_params(
        agent_name, agent, objective, fetch, Path(run["output_jsonl_fpath"]), show_progress
    )


def settings_from_objective(
    objective_name: str, params_path: str, output: str | None, show_progress: bool = True
) -> CollectSettings:
    params = load_params(params_path)
    objective = objective_settings(params, objective_name, params_path)
    agent = AgentSettings.named(params, objective["agent_name"], params_path)
    out = Path(output) if output else paths.rollouts(objective_name)
    fetch = fetch_settings(params, objective["agent_name"], objective_name)
    return CollectSettings.from_params(objective["agent_name"], agent, objective, fetch, out, show_progress)


def settings_from_rl_iteration(
    iteration: str, params_path: str, output: str | None, show_progress: bool = True
) -> CollectSettings:
    """Iteration NNN of the RL loop: its entry in rl.iterations, rl.collect, and the previous checkpoint as model."""
    with guarded_imports():
        from rollout_pipeline.rl.names import checkpoint_fingerprint, checkpoint_path, iteration_key
        from rollout_pipeline.rl.plans import collect_plan
    params = load_params(params_path)
    key = iteration_key(iteration)
    agent_name, agent, objective, out = collect_plan(params, key, params_path)
    prev = params["rl"]["iterations"][key]["prev"]
    fetch = fetch_settings(params, agent_name, RL_LOOP_FETCH)
    return CollectSettings.from_params(
        agent_name,
        agent,
        objective,
        fetch,
        Path(output) if output else out,
        show_progress,
        model_revision=checkpoint_fingerprint(checkpoint_path(prev)),
    )


def settings_from_rl_eval(iteration: str, params_path: str, show_progress: bool = True) -> CollectSettings:
    """The fixed-temperature evaluation of checkpoint NNN (rl.eval), with that checkpoint as model."""
    with guarded_imports():
        from rollout_pipeline.rl.names import checkpoint_fingerprint, checkpoint_path, iteration_key
        from rollout_pipeline.rl.plans import eval_plan
    params = load_params(params_path)
    key = iteration_key(iteration)
    agent_name, agent, objective, out = eval_plan(params, key, params_path)
    return CollectSettings.from_params(
        agent_name,
        agent,
        objective,
        fetch_settings(params, agent_name, RL_EVAL_FETCH),
        out,
        show_progress,
        model_revision=checkpoint_fingerprint(checkpoint_path(key)),
    )


def _argument_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Collect scored rollouts. Either --objective NAME (settings from params.yaml), or the seed "
        "syntax: +agent_name=... +input_jsonl_fpath=... +output_jsonl_fpath=... [+num_repeats=N] "
        "[+num_samples_in_parallel=K] [+limit=M] [+responses_create_params.KEY=VALUE ...]",
    )
    parser.add_argument("--objective", help="rl, sft, dpo (or any objective in params.yaml)")
    parser.add_argument(
        "--rl-iteration", metavar="NNN", help="iteration NNN of the RL loop (rl.iterations in params.yaml)"
    )
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: params.yaml)")
    parser.add_argument("--out", help="output JSONL (default: data/rollouts/<objective>.jsonl)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--force", action="store_true", help="collect again even when the output already holds these settings' rollouts"
    )
    parser.add_argument(
        "--retry-masked",
        action="store_true",
        help="send again the rollouts NeMo Gym masked (mask_sample) in an earlier run of these "
        "settings (as NeMo Gym's retry_invalid_judge_responses); by default they stay not scored",
    )
    parser.add_argument(
        "--generate-only",
        action="store_true",
        help="write the rollouts without a verdict, for a separate scoring step (scripts/score.py, "
        "rescore): the pipeline's collect stages do, so a verifier change never asks the model "
        "again; an agent's own reward (protocol: agent) is kept",
    )
    parser.add_argument(
        "--model-revision",
        metavar="FINGERPRINT",
        help="the fingerprint of the checkpoint the server serves: part of the run's identity and "
        "recorded on every rollout as policy_version (--rl-iteration passes its checkpoint's)",
    )
    parser.add_argument(
        "--processes",
        default="auto",
        type=_processes,
        help="collector processes sharing the parallelism (default auto: one per 128 concurrent "
        "requests, at most one per CPU; more only pays off for agents that answer in "
        "milliseconds)",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help="where rollouts are fetched: local (this host's processes, the default) or ray (actors "
        "on a Ray cluster); default: $COLLECT_EXECUTOR, else local",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="the Ray cluster (host:port or auto); default: $RAY_ADDRESS, else a local Ray instance "
        "started and stopped by the run",
    )
    parser.add_argument(
        "--workers",
        type=_processes,
        default=None,
        help="Ray workers (actors) sharing the parallelism (default: one per CPU of the cluster)",
    )
    return parser


def _apply_run_options(settings: CollectSettings, options: argparse.Namespace) -> None:
    """How this run fetches (processes, executor, Ray cluster, workers) and whether it collects again: none of it
    is part of the run identity or of DVC's params, so switching re-runs nothing."""
    settings.processes, settings.force = options.processes, options.force
    settings.retry_masked = options.retry_masked
    settings.generate_only = options.generate_only
    executor = options.executor or os.environ.get("COLLECT_EXECUTOR") or "local"
    if executor not in EXECUTORS:
        raise UserError(
            f"COLLECT_EXECUTOR={executor!r}: expected one of {', '.join(EXECUTORS)}{did_you_mean(executor, EXECUTORS)}"
        )
    if executor != "ray" and options.workers is not None:
        raise UserError("--workers is for --executor ray; the local executor takes --processes")
    settings.executor, settings.workers = executor, options.workers
    settings.ray_address = options.ray_address or os.environ.get("RAY_ADDRESS") or None


def _processes(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or auto, got {value!r}")
    return count


def main(argv: list[str] | None = None, prog: str = "collect.py") -> int:
    try:
        return _main(argv, prog)
    except KeyboardInterrupt:  # between the imports and the run (which reports its own): nothing was written yet
        print(f"{prog}: interrupted during start-up; nothing was written", file=sys.stderr)
        return 130


def _main(argv: list[str] | None, prog: str) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _argument_parser(prog)  # --help names the command as it was called
    options, rest = parser.parse_known_args(argv)
    seed_args = [a for a in rest if "=" in a and not a.startswith("-")]
    unknown = [a for a in rest if a not in seed_args]
    if unknown:
        raise UserError(
            f"unrecognized arguments: {' '.join(unknown)}; seed-syntax arguments look like +num_repeats=4 (see --help)"
        )
    if sum(map(bool, (options.objective, options.rl_iteration, seed_args))) > 1:
        raise UserError("give one of --objective, --rl-iteration or +key=value arguments")
    if options.rl_iteration:
        with guarded_imports():
            from rollout_pipeline.rl.names import iteration_key, sampling_metrics_path
            from rollout_pipeline.rl.progress import average_reward, reward_line
        key = iteration_key(options.rl_iteration)
        settings = settings_from_rl_iteration(key, options.params, options.out, not options.no_progress)
        _apply_run_options(settings, options)
        print(f"=== RL Iteration {key} ===", flush=True)
        code = _collect_informative(
            settings, load_params(options.params)["rl"]["collect"]["dynamic_sampling"], sampling_metrics_path(key)
        )
        if code == 0:
            print(reward_line(key, average_reward(settings.output_path)))
        return code
    if options.objective:
        # Generate-only output goes where the score stage reads it.
        out = options.out or (str(paths.generations(options.objective)) if options.generate_only else None)
        settings = settings_from_objective(options.objective, options.params, out, not options.no_progress)
    elif seed_args:
        settings = settings_from_seed_args(seed_args, options.params, not options.no_progress)
    else:
        parser.print_help()
        return 2
    settings.model_revision = options.model_revision or settings.model_revision
    _apply_run_options(settings, options)
    if not options.objective:
        return run_collection(settings)
    spec = load_params(options.params)["objectives"][options.objective]["dynamic_sampling"]
    # Dynamic sampling keeps groups by their verdicts, so its rounds score as they collect (the score stage then
    # scores the kept groups again, with the same verifier: the same verdicts).
    settings.generate_only = settings.generate_only and spec is None
    return _collect_informative(settings, spec, paths.sampling_metrics(options.objective))


def _collect_informative(settings: CollectSettings, spec: dict | None, metrics_path: Path) -> int:
    """The collection, in rounds of DAPO-style dynamic sampling when `spec` asks for it (stages/dynamic_sampling.py)."""
    return collect_informative(settings, run_collection, spec, metrics_path, _discard_progress)


def _discard_progress(output: Path) -> None:
    from rollout_pipeline.collect.progress import progress_path

    progress_path(output).unlink(missing_ok=True)


def run_collection(settings: CollectSettings) -> int:
    """One collection with these settings (the embedded server started for an agent whose url is `embedded`)."""
    with guarded_imports():
        from rollout_pipeline.collect.collector import Collector
    return Collector(settings, start_server=start_embedded).run()


def start_embedded(agent: AgentSettings) -> EmbeddedServer:
    """The embedded reference server for an agent whose url is `embedded` (its flags and checkpoint folder)."""
    from rollout_pipeline.reference.embedded import start_embedded_server

    args = list(agent.embedded_args)
    if agent.checkpoint_dir:
        args += ["--checkpoint-dir", agent.checkpoint_dir]
    return start_embedded_server(args)


def seed_main() -> None:
    """Entry point of the `ng_collect_rollouts` command."""
    run_cli(lambda: main(prog="ng_collect_rollouts"), "ng_collect_rollouts")


def script_main() -> None:
    """Entry point of `python scripts/collect.py`."""
    run_cli(main, "collect.py")
