"""Run one function in several forked processes and stream their messages back to this one.

Why: one Python process tops out at a few thousand HTTP requests a second (aiohttp's own cost per request
is most of it), so a fast agent needs more than one. The children only compute and send; this process reads
their messages and stays the only one that writes files, so a message takes effect only once it is read here.

Messages are frames: one kind byte, a 4-byte length, the payload. A child stops when this process closes the
stop pipe: on purpose (stop), on Ctrl-C or SIGTERM, or because this process died (the kernel closes the pipe
then), so no child outlives its parent. Children ignore SIGINT and SIGTERM: a Ctrl-C at the terminal reaches
the whole process group, and the children must finish sending what they have rather than die mid-frame.
In this process, SIGINT and SIGTERM are held back across each fork and deferred while frames are handled:
they take effect between two frames, never halfway through one.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import struct
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

FRAME_HEADER = struct.Struct("<cI")
# A crashed child's traceback, sent as its last frame.
CRASH = b"!"
_READ_SIZE = 1 << 20
_SIGNAL_CHECK_S = 0.2
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_FLUSH_AT = 1 << 20


class FrameWriter:
    """A child's end of its pipe. Frames are buffered and written together, once per event-loop pass when a
    loop is attached (a write per frame would cost a system call per rollout), and always by `flush()`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._parts: list[bytes] = []
        self._size = 0
        self._loop: Any = None
        self._scheduled = False

    def attach(self, loop: Any) -> None:
        self._loop = loop

    def send(self, kind: bytes, payload: bytes) -> None:
        self._parts.append(FRAME_HEADER.pack(kind, len(payload)))
        self._parts.append(payload)
        self._size += len(payload)
        if self._size >= _FLUSH_AT:
            self.flush()
        elif self._loop is not None and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._parts:
            return
        data = memoryview(b"".join(self._parts))
        self._parts.clear()
        self._size = 0
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except BrokenPipeError:
            os._exit(1)  # the parent is gone: nothing this process holds can be kept anyway


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
        with _DeferredSignals(_STOP_SIGNALS) as signals:
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
        with _DeferredSignals(_STOP_SIGNALS) as again:
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


class _DeferredSignals:
    """While active, SIGINT and SIGTERM are noted, not acted on, so that they never land halfway through
    on_frame (a record appended to a file but not yet counted). `act_on_pending()` then runs, at a point
    between frames, the handler that was there before: KeyboardInterrupt for a Ctrl-C, say. A signal that was
    ignored stays ignored; one whose handler Python cannot restore (set from C) is left alone."""

    def __init__(self, signums: tuple[int, ...]) -> None:
        self.signums = signums
        self.previous: dict[int, Any] = {}
        self.pending: list[int] = []

    def __enter__(self) -> _DeferredSignals:
        with _signals_blocked(self.signums), contextlib.suppress(ValueError):  # ValueError: not the main thread
            for signum in self.signums:
                current = signal.getsignal(signum)
                if current is not None and current != signal.SIG_IGN:
                    self.previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        with _signals_blocked(self.signums):
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
def _signals_blocked(signums: tuple[int, ...]) -> Iterator[None]:
    """Hold these signals back (they stay pending) for the length of the block."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
    with _signals_blocked(_STOP_SIGNALS):
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
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
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
    buffer = child.buffer
    position = 0
    header = FRAME_HEADER.size
    while len(buffer) - position >= header:
        kind, length = FRAME_HEADER.unpack_from(buffer, position)
        end = position + header + length
        if end > len(buffer):
            break
        payload = bytes(buffer[position + header : end])
        position = end
        if kind == CRASH:
            del buffer[:position]
            raise ChildCrashed(f"collector process {child.index} raised:\n{payload.decode(errors='replace')}")
        on_frame(child.index, kind, payload)
    del buffer[:position]


def _reap(children: list[Child], kill: bool = False) -> None:
    if kill:
        _kill(children)
    for child in children:
        if child.fd >= 0:
            os.close(child.fd)
            child.fd = -1
        if child.status is None:
            _, child.status = os.waitpid(child.pid, 0)
