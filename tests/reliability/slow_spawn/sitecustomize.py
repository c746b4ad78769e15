"""Test harness: every spawned multiprocessing child but the first stays in start-up until the run's work is done.

On PYTHONPATH, Python runs this in each process it starts, before a spawned child reads what its parent sent it.
The first verifier worker comes up at once and does all the work. The others wait until SLOW_SPAWN_UNTIL (a
file) has SLOW_SPAWN_LINES lines, and one second more, as a worker can on a loaded machine: the run is by then
closing its pool. Meanwhile they ignore SIGTERM, as a process not yet scheduled has not acted on it.
"""

import os
import signal
import sys
import time
from pathlib import Path


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


_markers = os.environ.get("SLOW_SPAWN_MARKER_DIR")
if _markers and any("spawn_main" in arg for arg in sys.orig_argv):
    try:
        os.close(os.open(os.path.join(_markers, "first-child"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        Path(_markers, f"slow-child-{os.getpid()}").touch()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        until, lines = Path(os.environ["SLOW_SPAWN_UNTIL"]), int(os.environ["SLOW_SPAWN_LINES"])
        deadline = time.monotonic() + 60
        while _lines(until) < lines and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
