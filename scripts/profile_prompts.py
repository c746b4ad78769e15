"""profile stage: a rollout file -> per-prompt statistics (pass rate, reward spread, ties, tokens, truncation, health)
and its prompts counted by pass-rate band.

    python scripts/profile_prompts.py --objective rl     # data/rollouts/rl.jsonl -> data/profile/rl.jsonl,
                                                         # metrics/profile/rl.json
    python scripts/profile_prompts.py --in ROLLOUTS.jsonl --out PROFILE.jsonl --summary BANDS.json

Settings come from params.yaml's `profile` (band, group_by), `metrics.pass_threshold` and `health`.
"""

from __future__ import annotations

import argparse

from rollout_pipeline.cli.stage_args import load_params, stage_parser
from rollout_pipeline.errors import UserError, run_cli
from rollout_pipeline.stages.health import HealthConfig
from rollout_pipeline.stages.prompt_profile import ProfileConfig, run_profile


def parse_args() -> argparse.Namespace:
    parser = stage_parser(
        "profile",
        __doc__,
        None,
        None,
        input_help="rollout JSONL (default: data/rollouts/<objective>.jsonl)",
        output_help="per-prompt JSONL to write (default: data/profile/<objective>.jsonl)",
    )
    parser.add_argument("--objective", help="objective name in params.yaml: its rollouts and default paths")
    parser.add_argument("--summary", help="band counts JSON to write (default: metrics/profile/<objective>.json)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.objective is None and None in (args.input, args.output, args.summary):
        raise UserError("give --objective, or all of --in, --out and --summary")
    params = load_params(args.params)
    config = ProfileConfig(
        band=tuple(params["profile"]["band"]),
        group_by=params["profile"]["group_by"],
        pass_threshold=params["metrics"]["pass_threshold"],
        health=HealthConfig.from_params(params["health"]),
    )
    output = args.output or f"data/profile/{args.objective}.jsonl"
    summary_path = args.summary or f"metrics/profile/{args.objective}.json"
    summary = run_profile(args.input or f"data/rollouts/{args.objective}.jsonl", output, summary_path, config)
    bands = ", ".join(f"{band} {count}" for band, count in summary.as_dict()["bands"].items())
    print(f"{summary.prompts} prompts -> {output}; by pass rate (band {list(config.band)}): {bands} -> {summary_path}")
    return 0


if __name__ == "__main__":
    run_cli(main, "profile")
