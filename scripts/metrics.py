"""metrics stage: one objective's rollouts -> metrics/<objective>.json and a pass@k curve for `dvc plots`.

    python scripts/metrics.py --objective rl --in data/rollouts/rl.jsonl --out metrics/rl.json \
        --curve metrics/pass_at_k/rl.json

The collector's run stats are read from beside the input (data/rollouts/rl.stats.json) unless --stats
is given; without them failures and throughput are null. pass_threshold comes from params.yaml.
"""

from __future__ import annotations

import argparse
import sys

from rollout_pipeline.cli.stage_args import load_params, stage_parser
from rollout_pipeline.errors import run_cli
from rollout_pipeline.settings import objective_settings
from rollout_pipeline.stages.health import HealthConfig
from rollout_pipeline.stages.rollout_metrics import run_metrics


def parse_args() -> argparse.Namespace:
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
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    params = load_params(args.params)
    objective_settings(params, args.objective, args.params)  # an unknown objective is an error, with a suggestion
    threshold = params["metrics"]["pass_threshold"] if args.pass_threshold is None else args.pass_threshold
    output = args.output or f"metrics/{args.objective}.json"
    result = run_metrics(
        args.input or f"data/rollouts/{args.objective}.jsonl",
        output,
        threshold,
        curve_path=args.curve or f"metrics/pass_at_k/{args.objective}.json",
        stats_path=args.stats,
        health=HealthConfig.from_params(params["health"]),
    )
    print("\n".join(result.lines(output)))
    for note in result.notes:
        print(f"metrics: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, "metrics")
