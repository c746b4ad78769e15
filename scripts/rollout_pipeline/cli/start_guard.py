"""A Ctrl-C during a command's start-up imports is a clean stop, not a traceback or a crash.

Importing the collector (aiohttp, orjson, the verifiers) takes ~0.3 s. A KeyboardInterrupt raised in the middle
of a C extension's initialisation is not safe: one in about fifteen Ctrl-Cs in that window crashed the
interpreter inside orjson's import (SIGSEGV). So `interruptible_start` only notes a Ctrl-C while the imports run,
and acts on it once they are done: one line, exit 130, as a Ctrl-C at any later point. `guarded_imports` does the
same for what is imported later, at first use, while the command is still starting (pydantic when params.yaml is
validated). This module imports nothing heavy itself.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path


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


@contextlib.contextmanager
def guarded_imports() -> Iterator[None]:
    """`interruptible_start` for what a command imports at first use, still during its start-up (pydantic when
    params.yaml is validated, Hydra's parser for a complex command line), named after the running command."""
    with interruptible_start(Path(sys.argv[0]).name or "python"):
        yield
