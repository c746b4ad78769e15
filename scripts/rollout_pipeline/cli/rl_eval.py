"""`python scripts/rl_eval.py --iteration NNN` (stage rl_eval@NNN): checkpoint NNN at the fixed rl.eval temperature.

The collector runs as for any objective (resume, retries, the embedded server), with checkpoint NNN as the model,
rl.eval's temperature, sampling and seed, on rl.eval's held-out prompts; then the metrics stage's code writes
metrics/rl/eval_NNN.json. The same seed for every checkpoint means the same sampling draws: two checkpoints'
eval rewards differ by what training changed, not by the temperature schedule or the luck of the draw.
"""

from __future__ import annotations

import argparse
import sys

from rollout_pipeline.cli.start_guard import guarded_imports

with guarded_imports():  # the collector's imports take ~0.3 s: a Ctrl-C meanwhile is a clean stop (start_guard)
    from rollout_pipeline.cli.collect import settings_from_rl_eval, start_embedded
    from rollout_pipeline.collect.collector import Collector
    from rollout_pipeline.errors import run_cli
    from rollout_pipeline.params import PARAMS_FILE, load_params
    from rollout_pipeline.rl.names import eval_metrics_path, iteration_key
    from rollout_pipeline.stages.health import HealthConfig
    from rollout_pipeline.stages.rollout_metrics import run_metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rl_eval.py", description=__doc__.splitlines()[0])
    parser.add_argument("--iteration", required=True, metavar="NNN", help="the checkpoint to evaluate")
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    key = iteration_key(args.iteration)
    settings = settings_from_rl_eval(key, args.params, not args.no_progress)
    settings.force = True  # DVC runs the stage only when the checkpoint, rl.eval or the code changed
    params = load_params(args.params)
    print(f"=== RL eval of checkpoint {key} at temperature {params['rl']['eval']['temperature']:g} ===", flush=True)
    code = Collector(settings, start_server=start_embedded).run()
    if code != 0:
        return code
    out = eval_metrics_path(key)
    result = run_metrics(
        settings.output_path,
        out,
        params["metrics"]["pass_threshold"],
        health=HealthConfig.from_params(params["health"]),
    )
    print("\n".join(result.lines(out)))
    for note in result.notes:
        print(f"metrics: {note}", file=sys.stderr)
    print(f"Iteration {key}: eval_reward={result.metrics['reward_mean']}")
    return 0


def script_main() -> None:
    """Entry point of `python scripts/rl_eval.py`."""
    run_cli(main, "rl_eval.py")
