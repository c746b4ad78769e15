"""Run one function in several forked processes and stream their messages back to this one.

Why: one Python process tops out at a few thousand HTTP requests a second (aiohttp's own cost per request
is most of it), so a fast agent needs more than one. The children only compute and send; this process reads
their messages and stays the only one that writes files, so a message takes effect only once it is read here.

Messages are frames (collect/frames: one kind byte, a 4-byte length, the payload). A child stops when this process closes the
stop pipe: on purpose (stop), on Ctrl-C or SIGTERM, or because this process died (the kernel closes the pipe
then), so no child outlives its parent. Children ignore SIGINT and SIGTERM: a Ctrl-C at the terminal reaches
the whole process group, and the children must finish sending what they have rather than die mid-frame.
In this process, SIGINT and SIGTERM are held back across each fork and deferred while frames are handled
(collect/deferred_signals): they take effect between two frames, never halfway through one.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from rollout_pipeline.collect.deferred_signals import STOP_SIGNALS, DeferredSignals, signals_blocked
from rollout_pipeline.collect.frames import FrameWriter, take_frames

# A crashed child's traceback, sent as its last frame.
CRASH = b"!"
_READ_SIZE = 1 << 20
_SIGNAL_CHECK_S = 0.2


@dataclass
class Child:
    index: int
    pid: int
    fd: int
    buffer: bytearray = field(default_factory=bytearray)
    status: int | None = None  # wait status once reaped

    def describe_exit(self) -> str | None:
        """None for a clean exit; otherwise how the child ended, in words."""
        if self.status is None or os.WIFEXITED(self.status) and os.WEXITSTATUS(self.status) == 0:
            return None
        if os.WIFSIGNALED(self.status):
            return f"was killed by signal {signal.Signals(os.WTERMSIG(self.status)).name}"
        return f"exited with status {os.WEXITSTATUS(self.status)}"


class ChildCrashed(Exception):
    """A child raised: its traceback is the message."""


class ForkFailed(OSError):
    """No pipe or no process for a child (EMFILE, EAGAIN, ENOMEM): said in one line."""


def fan_out(
    count: int,
    child_main: Callable[[int, FrameWriter, int], int],
    on_frame: Callable[[int, bytes, bytes], None],
    should_stop: Callable[[], bool],
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
    forked: Callable[[], None] = lambda: None,
) -> list[Child]:
    """Fork `count` children running child_main(index, writer, stop_fd) -> exit code; call on_frame(index, kind,
    payload) here for every frame they send, in the order each child sent them; return the reaped children.
    `forked()` runs here once every child exists: the place to start threads (a progress bar's, say), which a
    fork must not copy.

    When should_stop() turns true (checked after each batch of frames) the children are told to stop, and
    their last frames are still read. On one of `interrupts` here (Ctrl-C, say), the same, then it goes on. If
    on_frame raises, the children are stopped, their remaining frames dropped, and the exception goes on."""
    stop_read, stop_write = os.pipe()
    children: list[Child] = []
    stop = _Stopper(stop_write)
    try:
        # Signals wait for a point between frames from before the first fork on: a Ctrl-C can then neither
        # leave a child untracked nor land halfway through storing a record.
        with DeferredSignals(STOP_SIGNALS) as signals:
            try:
                for index in range(count):
                    children.append(_fork_child(index, child_main, stop_read, stop_write, children))
            finally:
                os.close(stop_read)
            forked()
            _pump(children, on_frame, lambda: (should_stop() and stop(), signals.act_on_pending()))
            signals.act_on_pending()  # one that came with the last frames
    except interrupts:
        stop()
        # Drain what the children finished; a second Ctrl-C (or SIGTERM) kills them instead of waiting.
        with DeferredSignals(STOP_SIGNALS) as again:
            _pump(children, on_frame, lambda: again.pending and _kill(children))
            _reap(children)
        raise
    except BaseException:
        stop()
        _reap(children, kill=True)
        raise
    finally:
        stop()
    _reap(children)
    return children


class _Stopper:
    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def __call__(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _fork_child(
    index: int,
    child_main: Callable[[int, FrameWriter, int], int],
    stop_read: int,
    stop_write: int,
    siblings: list[Child],
) -> Child:
    try:
        read_end, write_end = os.pipe()
    except OSError as exc:
        raise ForkFailed(f"cannot start collector process {index}: no pipe ({exc.strerror})") from None
    # Blocked across the fork: a signal reaching the child before it ignores them would run the parent's
    # handler on a copy of the parent's stack (cleanup code deleting the parent's files, say).
    with signals_blocked(STOP_SIGNALS):
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            raise ForkFailed(f"cannot start collector process {index} ({exc.strerror})") from None
        if pid == 0:  # the child: never returns
            _child(index, child_main, read_end, write_end, stop_read, stop_write, siblings)
    os.close(write_end)
    return Child(index, pid, read_end)


def _child(
    index: int,
    child_main: Callable[[int, FrameWriter, int], int],
    read_end: int,
    write_end: int,
    stop_read: int,
    stop_write: int,
    siblings: list[Child],
) -> NoReturn:
    code = 1
    try:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        os.close(read_end)
        os.close(stop_write)
        for sibling in siblings:
            os.close(sibling.fd)
        writer = FrameWriter(write_end)
        try:
            code = child_main(index, writer, stop_read)
        except BaseException:
            writer.attach(None)  # its event loop may be closed already: the report goes out by the flush below
            writer.send(CRASH, traceback.format_exc().encode())
            code = 1
        writer.flush()
    finally:
        os._exit(code)  # no atexit handlers, no buffered files of the parent's flushed twice


def _kill(children: list[Child]) -> None:
    for child in children:
        if child.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)


def _pump(children: list[Child], on_frame: Callable[[int, bytes, bytes], None], after_batch: Callable[[], Any]) -> None:
    """Read every child's frames until all of them have closed their pipes."""
    with selectors.DefaultSelector() as selector:
        for child in children:
            if child.fd >= 0:
                selector.register(child.fd, selectors.EVENT_READ, child)
        while selector.get_map():
            # A timeout, so that a deferred Ctrl-C is acted on even while no child has anything to send.
            for key, _ in selector.select(timeout=_SIGNAL_CHECK_S):
                child: Child = key.data
                data = os.read(child.fd, _READ_SIZE)
                if not data:
                    selector.unregister(child.fd)
                    os.close(child.fd)
                    child.fd = -1
                    continue
                child.buffer += data
                _dispatch(child, on_frame)
            after_batch()


def _dispatch(child: Child, on_frame: Callable[[int, bytes, bytes], None]) -> None:
    for kind, payload in take_frames(child.buffer):
        if kind == CRASH:
            raise ChildCrashed(f"collector process {child.index} raised:\n{payload.decode(errors='replace')}")
        on_frame(child.index, kind, payload)


def _reap(children: list[Child], kill: bool = False) -> None:
    if kill:
        _kill(children)
    for child in children:
        if child.fd >= 0:
            os.close(child.fd)
            child.fd = -1
        if child.status is None:
            _, child.status = os.waitpid(child.pid, 0)
