"""Run a stage's work in a forked child that a watchdog can stop: jq's C code never returns to Python, so a
`where` like `until(false; .)` can be stopped only from outside, and so can Ctrl-C and SIGTERM reach it.

The child reports each record it starts on through a shared page (a heartbeat). The parent stops it when one
record takes longer than `per_record_s`, or the whole run longer than `total_s`, or on SIGINT / SIGTERM, and then
removes the temp files the child's atomic writes left (`.<name>.<random>.tmp` beside the output), so nothing is
half-written and the old output stays as it was.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rollout_pipeline.errors import UserError

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_BEAT = struct.Struct("qq")  # records started, line of the current one
POLL_S = 0.05


class Heartbeat:
    """What the child calls for every record; two stores into a shared page."""

    def __init__(self, page: mmap.mmap) -> None:
        self.page = page
        self.count = 0

    def __call__(self, line: int) -> None:
        self.count += 1
        _BEAT.pack_into(self.page, 0, self.count, line)


def run_watched(
    work: Callable[[Heartbeat], int],
    *,
    prog: str,
    output: Path,
    source: str,
    what: str,
    per_record_s: float,
    total_s: float,
) -> int:
    """Run `work(heartbeat)` in a child; return its exit code, or raise UserError when the watchdog stopped it.
    `prog` prefixes the child's own error line, as run_cli would; `what` names the limits' keys in messages."""
    page = mmap.mmap(-1, _BEAT.size)
    started = time.monotonic()
    parent = os.getpid()
    stopped: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopped.append(signum)

    # Installed before the fork: a Ctrl-C or SIGTERM while the child starts is acted on, not the default death.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        pid = os.fork()
        if pid == 0:  # the child: do the work, report through the exit code
            code = 1
            try:
                _die_with(parent)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = work(Heartbeat(page)) or 0
            except UserError as exc:
                print(f"{prog}: error: {exc}", file=sys.stderr)
                code = 2
            except BaseException:  # a bug: show it, as the stage would have
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        last_count, last_change = 0, started
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done and os.WIFSIGNALED(status):
                _remove_temp_files(output, started)
                name = signal.Signals(os.WTERMSIG(status)).name
                count, line = _BEAT.unpack_from(page, 0)
                where = f" at {source}:{line}" if count else ""
                raise UserError(
                    f"{what}: the worker process was killed by signal {name}{where} (SIGKILL is often "
                    "the out-of-memory killer); nothing was written"
                )
            if done:
                return os.waitstatus_to_exitcode(status)
            now = time.monotonic()
            count, line = _BEAT.unpack_from(page, 0)
            if count != last_count:
                last_count, last_change = count, now
            problem = None
            if stopped:
                problem = "interrupted" if stopped[0] == signal.SIGINT else "terminated"
            elif now - last_change > per_record_s:
                problem = (
                    f"{what}: no record finished within {per_record_s:g} s (stuck at {source}:{line}); the "
                    f"expression may never end (a loop such as until(false; .)): fix it, or raise "
                    f"{what}_timeout_s"
                )
            elif now - started > total_s:
                problem = f"{what}: the stage ran over {total_s:g} s ({what}_stage_timeout_s); stopped"
            if problem is not None:
                _stop(pid)
                _remove_temp_files(output, started)
                if stopped:
                    print(f"{prog}: {problem}; nothing was written", file=sys.stderr)
                    return 130 if stopped[0] == signal.SIGINT else 143
                raise UserError(problem + "; nothing was written")
            time.sleep(POLL_S)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        page.close()


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this child when its parent dies (Linux's PR_SET_PDEATHSIG): a SIGKILLed stage never
    leaves its jq work running, nor writing the output after the stage was stopped."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _remove_temp_files(output: Path, since: float) -> None:
    """The temp files of the child's atomic writes beside `output` (created after `since`)."""
    wall_since = time.time() - (time.monotonic() - since)
    for path in output.parent.glob(f".{output.name}.*.tmp"):
        try:
            if path.stat().st_mtime >= wall_since - 1:
                path.unlink()
        except OSError:
            pass
