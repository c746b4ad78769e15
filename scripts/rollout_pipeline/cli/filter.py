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
from rollout_pipeline.cli.stage_args import load_params, objective_input, stage_parser
from rollout_pipeline.errors import run_cli
from rollout_pipeline.jsonl import write_json
from rollout_pipeline.stages.health import HealthConfig
from rollout_pipeline.stages.rollout_metrics import scored_of
from rollout_pipeline.stages.sft_filter import FORMATS, FilterConfig, compile_where, run_filter
from rollout_pipeline.stages.watchdog import run_watched


def _parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "filter",
        __doc__,
        None,
        str(paths.SFT_DATA),
        input_help="rollout JSONL (default: the rollouts of filter.objective)",
        output_help="SFT JSONL to write",
    )
    parser.add_argument("--min-reward", type=float, help="override filter.min_reward")
    parser.add_argument("--where", help="override filter.where (a jq expression over a rollout record)")
    parser.add_argument("--dedupe", action=argparse.BooleanOptionalAction, default=None, help="override filter.dedupe")
    parser.add_argument(
        "--summary",
        metavar="PATH",
        help="also write the kept and dropped counts by reason here, as JSON (dvc.yaml: metrics/)",
    )
    parser.add_argument("--format", choices=FORMATS, help="override filter.format")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    params = load_params(args.params)
    section = params["filter"]
    config = FilterConfig(
        min_reward=section["min_reward"] if args.min_reward is None else args.min_reward,
        where=section["where"] if args.where is None else args.where,
        dedupe=section["dedupe"] if args.dedupe is None else args.dedupe,
        keep_reasoning=section["keep_reasoning"],
        format=section["format"] if args.format is None else args.format,
        drop_unhealthy=section["drop_unhealthy"],
        health=HealthConfig.from_params(params["health"]),
        where_source="filter.where" if args.where is None else "--where",
    )
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
        per_record_s=section["where_timeout_s"],
        total_s=section["where_stage_timeout_s"],
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
