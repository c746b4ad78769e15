"""How a run meets its event loop and stop signals: uvloop, a higher young-GC threshold, and Ctrl-C / SIGTERM raised
as exceptions, never a kill mid-write."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterator

try:  # imported with the module, under launch.py's Ctrl-C guard: a C extension's import must not be interrupted
    import uvloop
except ImportError:
    uvloop = None

# Generation-0 GC threshold while collecting (Python's default is 700): see young_gc_threshold().
GC_YOUNG_THRESHOLD = 10_000


class Terminated(Exception):
    """SIGTERM arrived; stop like Ctrl-C."""


# What stops a run from outside, as exceptions: Ctrl-C and SIGTERM.
INTERRUPTS = (KeyboardInterrupt, Terminated)


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, outside the event loop, SIGTERM raises Terminated (as Ctrl-C raises KeyboardInterrupt)
    instead of killing the process mid-write; the previous handler comes back after (nothing is installed when
    not on the main thread)."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def young_gc_threshold(threshold: int) -> Iterator[None]:
    """Run a block with a higher generation-0 GC threshold, then restore the previous one.

    aiohttp allocates container objects in bursts (hundreds of replies handled in one event-loop pass), so
    at Python's default threshold (700) a generation-0 collection ran every ~75 requests, each traversing
    all in-flight request state: 12-17% of the collector's CPU, and of a bare aiohttp loop's (see
    bench/RESULTS.md). Garbage is still collected, just in larger batches; memory stays bounded."""
    previous = gc.get_threshold()
    gc.set_threshold(max(threshold, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def run_async(coro, handle_sigterm: bool = True) -> None:
    """Run the event loop (uvloop when available). Ctrl-C raises KeyboardInterrupt; SIGTERM raises Terminated
    (unless handle_sigterm is false: a child collector process leaves signals to its parent)."""
    loop_factory = uvloop.new_event_loop if uvloop is not None else None
    with young_gc_threshold(GC_YOUNG_THRESHOLD), asyncio.Runner(loop_factory=loop_factory) as runner:
        loop = runner.get_loop()
        terminated = False

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            for task in asyncio.all_tasks(loop):
                task.cancel()

        outside_loop = signal.getsignal(signal.SIGTERM)
        if handle_sigterm:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGTERM, on_term)
        try:
            runner.run(coro)
        except asyncio.CancelledError:
            if terminated:
                raise Terminated() from None
            raise
        finally:
            # The loop's handler resets SIGTERM to the default (kill) when removed: put back the one from before.
            if handle_sigterm:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signal.SIGTERM)
                    if outside_loop is not None:
                        signal.signal(signal.SIGTERM, outside_loop)
