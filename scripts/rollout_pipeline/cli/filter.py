"""`python scripts/filter.py` (stage filter): rollouts -> SFT records (reward >= filter.min_reward, optional jq `where`,
dedupe; TRL's messages or prompt/completion format).

    python scripts/filter.py --in data/rollouts/sft.jsonl --out data/sft/train.jsonl

Kept and dropped counts by reason go to --summary (the stage: metrics/sft_filter.json), for `dvc metrics` and the report.

Settings come from params.yaml's `filter` section (its `objective` names the rollouts read by default); the flags
override them for ad-hoc runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from rollout_pipeline import paths
from rollout_pipeline.cli.stage_args import load_params, objective_input, stage_parser, with_flags
from rollout_pipeline.errors import run_cli
from rollout_pipeline.jsonl import write_json
from rollout_pipeline.stages.rollout_metrics import scored_of
from rollout_pipeline.stages.sft_filter import FORMATS, FilterConfig, compile_where, run_filter
from rollout_pipeline.stages.watchdog import run_watched

# The flags that override keys (not given: absent, so params.yaml's value stays) of params.yaml's `filter` section.
FLAGS = ("min_reward", "where", "dedupe", "format")


def _parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "filter",
        __doc__,
        None,
        str(paths.SFT_DATA),
        input_help="rollout JSONL (default: the rollouts of filter.objective)",
        output_help="SFT JSONL to write",
    )
    parser.add_argument("--min-reward", type=float, default=argparse.SUPPRESS, help="override filter.min_reward")
    parser.add_argument(
        "--where", default=argparse.SUPPRESS, help="override filter.where (a jq expression over a rollout record)"
    )
    parser.add_argument(
        "--dedupe", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help="override filter.dedupe"
    )
    parser.add_argument(
        "--summary",
        metavar="PATH",
        help="also write the kept and dropped counts by reason here, as JSON (dvc.yaml: metrics/)",
    )
    parser.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS, help="override filter.format")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    params = with_flags(load_params(args.params), "filter", args, *FLAGS)
    config = FilterConfig.from_params(params, where_source="--where" if hasattr(args, "where") else "filter.where")
    args.input = objective_input(args, params, "filter")
    if config.where is None:
        return _filter_and_report(config, args)
    compile_where(config.where, config.where_source)  # a bad expression fails here, before anything forks
    # A jq expression may never end, and jq's C code cannot be interrupted: run it where a watchdog can stop it.
    return run_watched(
        lambda beat: _filter_and_report(dataclasses.replace(config, on_record=beat), args),
        prog="filter",
        output=Path(args.output),
        source=args.input,
        what="filter.where",
        per_record_s=params["filter"]["where_timeout_s"],
        total_s=params["filter"]["where_stage_timeout_s"],
    )


def _filter_and_report(config: FilterConfig, args: argparse.Namespace) -> int:
    summary = run_filter(args.input, args.output, config)
    if args.summary:
        write_json(args.summary, summary.as_dict())
    print("\n".join(summary.lines(config, args.output)))
    if (scored := scored_of(args.input, summary.rollouts)) is not None:
        print(scored)  # "N of M rollouts scored": what this stage's input covers of what was asked for
    if summary.kept == 0:
        print(
            "filter: warning: no rollout passed the filter; check filter.min_reward and filter.where", file=sys.stderr
        )
    return 0


def script_main() -> None:
    """Entry point of `python scripts/filter.py`."""
    run_cli(main, "filter")
