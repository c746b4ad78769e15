"""Run a model server as a child process on a loopback port: start it, wait until it answers, stop it by its PID."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from rollout_pipeline.errors import UserError


def _child_setup() -> None:
    """In the server process before it starts: SIGINT at its default (a server started from a background job
    inherits "ignore"), and a SIGTERM when whoever started it dies, even by SIGKILL, so no server outlives its
    owner (Linux's PR_SET_PDEATHSIG; it is in its own session, out of reach of the owner's terminal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """One server process: `command` must listen on `port`; it is up when GET {url}/v1/models answers 200.

    The process runs in its own session, so stopping it stops every process it started (vLLM's engine core
    runs in a child). Its output goes to a log file, named in every error."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        env: dict[str, str] | None = None,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **(env or {})}
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-{port}-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                preexec_fn=_child_setup,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            if self.process.poll() is not None:
                raise UserError(
                    f"{self.name} exited with status {self.process.returncode} while starting; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise UserError(
                    f"{self.name} did not answer {self.url}/v1/models within {self.start_timeout_s:g} s; "
                    f"see {self.log_path}"
                )
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, not a clean stop."""
        self._signal_group(signal.SIGKILL)

    def stop(self) -> None:
        self._signal_group(signal.SIGTERM)

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # The group may outlive its leader for a moment (vLLM's engine core): wait until none is left.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self.process = None


@contextlib.contextmanager
def running(server: LocalServer) -> Iterator[LocalServer]:
    """Start `server`, yield it, and stop it whatever happens."""
    try:
        server.start()
        yield server
    finally:
        server.stop()
