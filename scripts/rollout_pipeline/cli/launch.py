"""Start the collector so that a Ctrl-C during its imports is a clean stop, not a traceback or a crash.

Importing the collector (aiohttp, orjson, the verifiers) takes ~0.3 s. A KeyboardInterrupt raised in the middle
of a C extension's initialisation is not safe: one in about fifteen Ctrl-Cs in that window crashed the
interpreter inside orjson's import (SIGSEGV). So `interruptible_start` only notes a Ctrl-C while the imports run,
and acts on it once they are done: one line, exit 130, as a Ctrl-C at any later point. This module imports
nothing heavy itself.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from typing import Iterator, NoReturn


@contextlib.contextmanager
def interruptible_start(prog: str) -> Iterator[None]:
    interrupted = False

    def note(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            raise ValueError("Ctrl-C is ignored or handled elsewhere (a background job): leave it so")
        previous = signal.signal(signal.SIGINT, note)
    except ValueError:  # that, or not the main thread: nothing to guard
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        print(f"{prog}: interrupted during start-up; nothing was written", file=sys.stderr)
        sys.exit(130)


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
