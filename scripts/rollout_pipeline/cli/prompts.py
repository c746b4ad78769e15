"""`python scripts/prompts.py` (stage prompts@<set>): write deterministic arithmetic prompt sets (params.yaml's
prompts.sets, or one ad-hoc set)."""

from __future__ import annotations

import argparse
import os

from rollout_pipeline import paths
from rollout_pipeline.errors import UserError, did_you_mean, run_cli
from rollout_pipeline.stages.prompt_sets import DIFFICULTIES, write_prompt_set


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prompts",
        description="Write deterministic arithmetic prompt sets. With no options: every set in params.yaml's "
        "prompts.sets, to data/prompts/<name>.jsonl. With --out: one ad-hoc set.",
    )
    parser.add_argument("--params", default=paths.PARAMS_FILE, help="params file (default %(default)s)")
    parser.add_argument(
        "--out-dir", default=str(paths.PROMPTS_DIR), help="where params.yaml's sets go (default %(default)s)"
    )
    parser.add_argument("--set", dest="set_name", metavar="NAME", help="write only this set of params.yaml")
    parser.add_argument("--out", help="write one ad-hoc set to this path instead")
    parser.add_argument("--count", type=int, help="rows in the ad-hoc set")
    # No defaults here: an ad-hoc set is a prompts.sets entry, and its defaults are the PromptSet model's.
    parser.add_argument("--difficulty", choices=DIFFICULTIES, help="ad-hoc set difficulty (default: as in params)")
    parser.add_argument("--seed", type=int, help="ad-hoc set seed (default: as in params)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is not None or args.count is not None:
        if args.out is None or args.count is None:
            raise UserError("an ad-hoc set needs both --count N and --out PATH")
        from rollout_pipeline.params.base import parse_section
        from rollout_pipeline.params.collection import PromptSet

        given = {"count": args.count, "difficulty": args.difficulty, "seed": args.seed}
        spec = parse_section(
            PromptSet, {key: value for key, value in given.items() if value is not None}, "the ad-hoc set"
        )
        written = write_prompt_set(args.out, spec.count, spec.difficulty, spec.seed)
        print(f"wrote {written} {spec.difficulty} prompts (seed {spec.seed}) to {args.out}")
        return 0
    from rollout_pipeline.params import load_params

    sets = load_params(args.params)["prompts"]["sets"]
    if not sets:
        raise UserError(f"{args.params}: prompts.sets is empty; add a set or use --count N --out PATH")
    if args.set_name is not None:
        if args.set_name not in sets:
            raise UserError(
                f"{args.params}: no prompt set {args.set_name!r}{did_you_mean(args.set_name, sets)}; "
                f"sets: {', '.join(sets)}"
            )
        sets = {args.set_name: sets[args.set_name]}
    for name, spec in sets.items():
        path = os.path.join(args.out_dir, f"{name}.jsonl")
        written = write_prompt_set(path, spec["count"], spec["difficulty"], spec["seed"])
        print(f"wrote {written} {spec['difficulty']} prompts (seed {spec['seed']}) to {path}")
    return 0


def script_main() -> None:
    """Entry point of `python scripts/prompts.py`."""
    run_cli(main, "prompts")
