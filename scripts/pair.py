"""pair stage: rollouts -> DPO preference pairs (highest vs lowest reward per prompt).

    python scripts/pair.py --in data/rollouts/dpo.jsonl --out data/dpo/pairs.jsonl

Pairs written and prompts skipped by reason go to --summary (the stage: metrics/dpo_pairs.json), for `dvc metrics` and the report.

Settings come from params.yaml's `pair` section; the flags override them for ad-hoc runs.
"""
from __future__ import annotations

import argparse
import sys

from rollout_pipeline.stages.dpo_pairs import PairConfig, run_pair
from rollout_pipeline.cli.stage_args import stage_parser
from rollout_pipeline.errors import run_cli
from rollout_pipeline.jsonl import write_json
from rollout_pipeline.params import load_params


def parse_args() -> argparse.Namespace:
    parser = stage_parser("pair", __doc__, "data/rollouts/dpo.jsonl", "data/dpo/pairs.jsonl", output_help="DPO JSONL to write")
    parser.add_argument("--min-margin", type=float, help="override pair.min_margin")
    parser.add_argument("--summary", metavar="PATH",
                        help="also write the pairs written and prompts skipped by reason here, as JSON (dvc.yaml: metrics/)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    section = load_params(args.params)["pair"]
    config = PairConfig(min_margin=section["min_margin"] if args.min_margin is None else args.min_margin)
    summary = run_pair(args.input, args.output, config)
    if args.summary:
        write_json(args.summary, summary.as_dict())
    print("\n".join(summary.lines(config, args.output)))
    if summary.pairs == 0:
        print("pair: warning: no pairs written; see the skip reasons above", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, "pair")
