"""`python scripts/metrics.py` (stage metrics): one objective's rollouts -> metrics/<objective>.json and a pass@k
curve for `dvc plots`.

    python scripts/metrics.py --objective rl --in data/rollouts/rl.jsonl --out metrics/rl.json \
        --curve metrics/pass_at_k/rl.json

The collector's run stats are read from beside the input (data/rollouts/rl.stats.json) unless --stats
is given; without them failures and throughput are null. pass_threshold comes from params.yaml.
"""

from __future__ import annotations

import argparse
import sys

from rollout_pipeline import paths
from rollout_pipeline.cli.stage_args import load_params, stage_parser
from rollout_pipeline.errors import run_cli
from rollout_pipeline.settings import objective_settings
from rollout_pipeline.stages.health import HealthConfig
from rollout_pipeline.stages.rollout_metrics import run_metrics


def _parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "metrics",
        __doc__,
        None,
        None,
        input_help="rollout JSONL (default: data/rollouts/<objective>.jsonl)",
        output_help="metrics JSON to write (default: metrics/<objective>.json)",
    )
    parser.add_argument("--objective", required=True, help="objective name in params.yaml (rl, sft, dpo)")
    parser.add_argument("--curve", help="pass@k curve JSON to write (default: metrics/pass_at_k/<objective>.json)")
    parser.add_argument("--stats", help="collector run stats (default: <input stem>.stats.json beside the input)")
    parser.add_argument("--pass-threshold", type=float, help="override metrics.pass_threshold")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    params = load_params(args.params)
    objective_settings(params, args.objective, args.params)  # an unknown objective is an error, with a suggestion
    threshold = params["metrics"]["pass_threshold"] if args.pass_threshold is None else args.pass_threshold
    output = args.output or str(paths.objective_metrics(args.objective))
    result = run_metrics(
        args.input or str(paths.rollouts(args.objective)),
        output,
        threshold,
        curve_path=args.curve or str(paths.pass_at_k_curve(args.objective)),
        stats_path=args.stats,
        health=HealthConfig.from_params(params["health"]),
    )
    print("\n".join(result.lines(output)))
    for note in result.notes:
        print(f"metrics: {note}", file=sys.stderr)
    return 0


def script_main() -> None:
    """Entry point of `python scripts/metrics.py`."""
    run_cli(main, "metrics")
