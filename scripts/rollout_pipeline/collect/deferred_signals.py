"""SIGINT and SIGTERM held back across a fork, and deferred while a forked child's frames are handled, so that they
take effect between two frames, never halfway through one."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DeferredSignals:
    """While active, SIGINT and SIGTERM are noted, not acted on, so that they never land halfway through
    on_frame (a record appended to a file but not yet counted). `act_on_pending()` then runs, at a point
    between frames, the handler that was there before: KeyboardInterrupt for a Ctrl-C, say. A signal that was
    ignored stays ignored; one whose handler Python cannot restore (set from C) is left alone."""

    def __init__(self, signums: tuple[int, ...]) -> None:
        self.signums = signums
        self.previous: dict[int, Any] = {}
        self.pending: list[int] = []

    def __enter__(self) -> DeferredSignals:
        with signals_blocked(self.signums), contextlib.suppress(ValueError):  # ValueError: not the main thread
            for signum in self.signums:
                current = signal.getsignal(signum)
                if current is not None and current != signal.SIG_IGN:
                    self.previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        with signals_blocked(self.signums):
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)

    def _note(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def act_on_pending(self) -> None:
        if not self.pending:
            return
        signum = self.pending.pop(0)
        handler = self.previous.get(signum, signal.SIG_DFL)
        if callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:  # what would have happened: the default action (usually death)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


@contextlib.contextmanager
def signals_blocked(signums: tuple[int, ...]) -> Iterator[None]:
    """Hold these signals back (they stay pending) for the length of the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
