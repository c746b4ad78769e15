"""Start the embedded reference server as a child process, wait until it serves, stop it.

    with start_embedded_server(["--latency-ms", "5"]) as server:
        requests.post(f"{server.url}/v1/chat/completions", json=...)

The child is `python -m rollout_pipeline.cli.serve --port 0 --exit-with-parent ARGS`, importing this same copy of
the package (its folder goes first on the child's PYTHONPATH). It prints its URL as the first stdout line; we read
it, check /health, and hand back a handle.

The child dies with its parent: it holds the read end of a pipe on its stdin whose only write end
is ours, so when this process exits -- even by SIGKILL -- the child sees EOF and shuts down (it also
notices its parent pid change). `stop()` closes that pipe first (a clean shutdown), then falls back
to SIGTERM and SIGKILL.

The launcher is synchronous (a Popen and a blocking read, about 0.3 s). From asyncio code call
`await start_embedded_server_async(args)`, which runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from rollout_pipeline.errors import UserError

# The server's command line, run as a module in a child process (reference/ imports no front end).
SERVER_MODULE = "rollout_pipeline.cli.serve"
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder that holds this rollout_pipeline package
_LISTENING_RE = re.compile(rb"listening on (http://\S+)")


def server_command(args: Sequence[str], python: str | None = None) -> list[str]:
    """The child's command line: the server's front end, run as a module."""
    args = list(args)
    if not any(a == "--port" or a.startswith("--port=") for a in args):
        args = ["--port", "0", *args]
    if "--exit-with-parent" not in args:
        args.append("--exit-with-parent")
    return [python or sys.executable, "-m", SERVER_MODULE, *args]


def server_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment (`env`, else ours) with this package's folder first on PYTHONPATH, so the server is
    the same code as its parent, whichever copy of the project started it."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    return env


class EmbeddedServer:
    """A running server child process: `.url`, `.pid`, `.stop()`; a context manager."""

    def __init__(self, process: subprocess.Popen, url: str, stderr: IO[bytes]):
        self.process = process
        self.url = url
        self._stderr = stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr_text(self) -> str:
        """What the server wrote to stderr so far (warnings, errors)."""
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            return self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def stop(self, timeout: float = 5.0) -> int | None:
        """Shut the server down and reap it; returns its exit code. Safe to call twice."""
        process = self.process
        if process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()  # EOF: the server's parent watch stops it cleanly
            except OSError:
                pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None and not process.stdout.closed:
            process.stdout.close()
        if not self._stderr.closed:
            self._stderr.close()
        return process.returncode

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedServer(url={self.url!r}, pid={self.pid})"


def _read_first_line(process: subprocess.Popen, deadline: float) -> bytes:
    fd = process.stdout.fileno()
    line = b""
    while b"\n" not in line:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.1))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # the child closed stdout: it exited
            line += chunk
    return line


def _wait_healthy(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            time.sleep(0.02)
    return False


def start_embedded_server(
    args: Sequence[str] = (),
    *,
    startup_timeout: float = 30.0,
    python: str | None = None,
    cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
) -> EmbeddedServer:
    """Start the server with ARGS on a free loopback port and return once it answers /health.

    UserError (with the server's own error message) if it exits or stays silent during startup.
    """
    command = server_command(args, python)
    stderr = tempfile.TemporaryFile()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=cwd, env=server_env(env)
    )
    server = EmbeddedServer(process, "", stderr)
    deadline = time.monotonic() + startup_timeout
    match = _LISTENING_RE.search(_read_first_line(process, deadline))
    if match is None or not _wait_healthy(match.group(1).decode(), deadline):
        detail = server.stderr_text().strip().splitlines()
        server.stop(timeout=1.0)
        reason = detail[-1] if detail else f"no 'listening on' line within {startup_timeout:g} s"
        raise UserError(f"the embedded server did not start: {reason}")
    server.url = match.group(1).decode()
    return server


async def start_embedded_server_async(args: Sequence[str] = (), **kwargs) -> EmbeddedServer:
    """`start_embedded_server` for asyncio code: runs the blocking launcher in a worker thread."""
    return await asyncio.to_thread(start_embedded_server, list(args), **kwargs)
