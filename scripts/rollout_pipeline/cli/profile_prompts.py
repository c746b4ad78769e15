"""`python scripts/profile_prompts.py` (stage profile): a rollout file -> per-prompt statistics (pass rate, reward
spread, ties, tokens, truncation, health) and its prompts counted by pass-rate band.

    python scripts/profile_prompts.py --objective rl     # data/rollouts/rl.jsonl -> data/profile/rl.jsonl,
                                                         # metrics/profile/rl.json
    python scripts/profile_prompts.py --in ROLLOUTS.jsonl --out PROFILE.jsonl --summary BANDS.json

Settings come from params.yaml's `profile` (band, group_by), `metrics.pass_threshold` and `health`.
"""

from __future__ import annotations

import argparse

from rollout_pipeline import paths
from rollout_pipeline.cli.stage_args import load_params, stage_parser
from rollout_pipeline.errors import UserError, run_cli
from rollout_pipeline.stages.prompt_profile import ProfileConfig, run_profile


def _parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.objective is None and None in (args.input, args.output, args.summary):
        raise UserError("give --objective, or all of --in, --out and --summary")
    params = load_params(args.params)
    config = ProfileConfig.from_params(params)
    output = args.output or str(paths.prompt_profile(args.objective))
    summary_path = args.summary or str(paths.profile_bands(args.objective))
    summary = run_profile(args.input or str(paths.rollouts(args.objective)), output, summary_path, config)
    bands = ", ".join(f"{band} {count}" for band, count in summary.as_dict()["bands"].items())
    print(f"{summary.prompts} prompts -> {output}; by pass rate (band {list(config.band)}): {bands} -> {summary_path}")
    return 0


def script_main() -> None:
    """Entry point of `python scripts/profile_prompts.py`."""
    run_cli(main, "profile")
