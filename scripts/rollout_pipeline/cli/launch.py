"""The console commands (`ng_collect_rollouts`, `gym`), started so that a Ctrl-C during their imports is a clean
stop (cli/start_guard.py)."""

from __future__ import annotations

from typing import NoReturn

from rollout_pipeline.cli.start_guard import interruptible_start


def ng_collect_rollouts() -> NoReturn:
    """The `ng_collect_rollouts` command."""
    with interruptible_start("ng_collect_rollouts"):
        from rollout_pipeline.cli.collect import seed_main
    seed_main()


def gym() -> NoReturn:
    """The `gym` command (`gym eval run ...`, NeMo Gym 0.7.0's flags)."""
    with interruptible_start("gym"):
        from rollout_pipeline.cli.gym_eval import main
        from rollout_pipeline.errors import run_cli
    run_cli(main, "gym")


def rescore() -> NoReturn:
    """The `rescore` command: score a rollout file again, without the model server."""
    with interruptible_start("rescore"):
        from rollout_pipeline.cli.score import rescore_main
    rescore_main()
