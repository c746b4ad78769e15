"""`python scripts/rl.py COMMAND`: the RL loop's commands (what `make rl-iter` / `make rl` and the rl_* stages run).

    extend --to N        add the missing rl.iterations 001..N to params.yaml from rl.schedule (never rewrites)
    targets --to N       the DVC targets that bring the loop up to iteration N (for `dvc repro`)
    init                 stage rl_init: write checkpoint 000 from rl.init
    select --iteration NNN     stage rl_select@NNN (curriculum_mode adaptive): choose iteration NNN's prompts from the
                               pool by the pass rates iteration NNN-1 measured (rl/curriculum.py)
    metrics --iteration NNN    stage rl_metrics@NNN: metrics/rl/iter_NNN.json
    train --iteration NNN      stage rl_train@NNN: run rl.train.cmd, then the update hook
    update --iteration NNN     call the update hook again for checkpoint NNN (after fixing rl.update)
    progress             stage rl_progress: metrics/rl_progress.csv (one row per iteration)
    table [--to N]       print the reward progression table from the metrics written so far
Collecting is `python scripts/collect.py --rl-iteration NNN` (stage rl_collect@NNN); it prints
"=== RL Iteration NNN ===" first and "Iteration NNN: avg_reward=..." last, like the seed's loop.
"""

from __future__ import annotations

import argparse
import sys

from rollout_pipeline.errors import UserError, run_cli
from rollout_pipeline.jsonl import atomic_writer
from rollout_pipeline.params import PARAMS_FILE, load_params
from rollout_pipeline.rl.curriculum import prompts_path, run_select
from rollout_pipeline.rl.hooks import init_checkpoint, run_train, run_update
from rollout_pipeline.rl.loop import extend_params, repro_targets
from rollout_pipeline.rl.names import PROGRESS_CSV, iteration_key, metrics_path, rollouts_path
from rollout_pipeline.rl.progress import format_table, progress_csv, progress_rows
from rollout_pipeline.rl.schedule import iteration_entry
from rollout_pipeline.stages.health import HealthConfig
from rollout_pipeline.stages.rollout_metrics import run_metrics


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rl.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("extend", "targets"):
        sub = commands.add_parser(name)
        sub.add_argument("--to", required=True, metavar="N", help="iteration number (1-999)")
    commands.add_parser("init")
    for name in ("select", "metrics", "train", "update"):
        sub = commands.add_parser(name)
        sub.add_argument("--iteration", required=True, metavar="NNN")
    commands.add_parser("progress")
    table = commands.add_parser("table")
    table.add_argument("--to", metavar="N", help="last iteration to show (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    source = args.params
    if args.command == "extend":
        to = int(iteration_key(args.to))
        added = extend_params(source, to)
        if added:
            print(f"{source}: added rl.iterations {', '.join(added)} from rl.schedule")
        else:
            print(f"{source}: rl.iterations 001-{to:03d} already present (existing entries are never rewritten)")
        return 0
    params = load_params(source)
    if args.command == "targets":
        print(" ".join(repro_targets(params, iteration_key(args.to))))
    elif args.command == "init":
        print(f"rl.init {params['rl']['init']!r} -> {init_checkpoint(params)}")
    elif args.command == "select":
        key = iteration_key(args.iteration)
        entry = params["rl"]["selections"].get(key)
        if entry is None:
            raise UserError(
                f"{source}: no rl.selections entry {key!r}; with rl.schedule.curriculum_mode: adaptive, "
                f"`make rl-iter N={int(key)}` adds it"
            )
        selection = run_select(entry, key, params["metrics"]["pass_threshold"])
        counts = ", ".join(f"{name} {count}" for name, count in selection.counts.items())
        print(f"Iteration {key}: {len(selection.chosen)} prompts -> {prompts_path(key)} ({counts})")
    elif args.command == "metrics":
        key = iteration_key(args.iteration)
        iteration_entry(params, key, source)
        result = run_metrics(
            rollouts_path(key),
            metrics_path(key),
            params["metrics"]["pass_threshold"],
            health=HealthConfig.from_params(params["health"]),
        )
        print("\n".join(result.lines(metrics_path(key))))
        for note in result.notes:
            print(f"metrics: {note}", file=sys.stderr)
    elif args.command == "train":
        run_train(params, iteration_key(args.iteration))
    elif args.command == "update":
        key = iteration_key(args.iteration)
        iteration_entry(params, key, source)
        if params["rl"]["update"]["cmd"] is None and params["rl"]["update"]["url"] is None:
            raise UserError(f"{source}: rl.update.cmd and rl.update.url are both null; nothing to call")
        run_update(params, key)
    elif args.command == "progress":
        rows = progress_rows(params)
        with atomic_writer(PROGRESS_CSV) as handle:
            handle.write(progress_csv(rows).encode())
        print(f"{len(rows)} iterations -> {PROGRESS_CSV} (`dvc plots show`; `python scripts/rl.py table` prints it)")
    elif args.command == "table":
        upto = iteration_key(args.to) if args.to else None
        print(format_table(progress_rows(params, upto, missing_ok=True)))
    return 0


def script_main() -> None:
    """Entry point of `python scripts/rl.py`."""
    run_cli(main, "rl.py")
