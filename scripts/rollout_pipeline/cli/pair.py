"""`python scripts/pair.py` (stage pair): rollouts -> DPO preference pairs (best vs worst per prompt, or every pair
above the margin).

    python scripts/pair.py --in data/rollouts/dpo.jsonl --out data/dpo/pairs.jsonl

Pairs written and prompts skipped by reason go to --summary (the stage: metrics/dpo_pairs.json), for `dvc metrics` and the report.

Settings come from params.yaml's `pair` section (its `objective` names the rollouts read by default); the flags
override them for ad-hoc runs.
"""

from __future__ import annotations

import argparse
import sys

from rollout_pipeline import paths
from rollout_pipeline.cli.stage_args import load_params, objective_input, stage_parser, with_flags
from rollout_pipeline.errors import run_cli
from rollout_pipeline.jsonl import write_json
from rollout_pipeline.stages.dpo_pairs import STRATEGIES, PairConfig, run_pair
from rollout_pipeline.stages.rollout_metrics import scored_of


def pairs_cap(text: str) -> int | str | None:
    """A --pairs-per-prompt value as params.yaml would give it: a number, or none (null) for no cap; the `pair`
    model checks it (with_flags)."""
    return None if text.lower() in ("none", "null") else int(text) if text.removeprefix("-").isdigit() else text


# The flags that override keys (not given: absent, so params.yaml's value stays) of params.yaml's `pair` section.
FLAGS = ("min_margin", "pairs_per_prompt", "strategy")


def _parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "pair",
        __doc__,
        None,
        str(paths.DPO_PAIRS),
        input_help="rollout JSONL (default: the rollouts of pair.objective)",
        output_help="DPO JSONL to write",
    )
    parser.add_argument("--min-margin", type=float, default=argparse.SUPPRESS, help="override pair.min_margin")
    parser.add_argument(
        "--summary",
        metavar="PATH",
        help="also write the pairs written and prompts skipped by reason here, as JSON (dvc.yaml: metrics/)",
    )
    parser.add_argument(
        "--pairs-per-prompt",
        type=pairs_cap,
        default=argparse.SUPPRESS,
        metavar="N|none",
        help="override pair.pairs_per_prompt ('none': no cap)",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default=argparse.SUPPRESS, help="override pair.strategy")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    params = with_flags(load_params(args.params), "pair", args, *FLAGS)
    args.input = objective_input(args, params, "pair")
    config = PairConfig.from_params(params)
    summary = run_pair(args.input, args.output, config)
    if args.summary:
        write_json(args.summary, summary.as_dict())
    print("\n".join(summary.lines(config, args.output)))
    if (scored := scored_of(args.input, summary.rollouts)) is not None:
        print(scored)  # "N of M rollouts scored": what this stage's input covers of what was asked for
    if summary.pairs == 0:
        print("pair: warning: no pairs written; see the skip reasons above", file=sys.stderr)
    return 0


def script_main() -> None:
    """Entry point of `python scripts/pair.py`."""
    run_cli(main, "pair")
