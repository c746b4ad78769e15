"""Run verifiers in worker processes under a hard time limit: a verifier that overruns is killed, not waited for."""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from rollout_pipeline.collect.transport import RequestFailed
from rollout_pipeline.collect.verifier_kind import verifier_kind

VERIFY_TIMEOUT_S = 10.0
# pebble names its worker processes so; other children of the collector are none of the pool's business.
_POOL_WORKER_NAME = "pebble_pool_worker"
# How long close() waits for a worker still starting up (two seconds is typical on a loaded 2-core machine).
_START_UP_WAIT_S = 30.0


def _warm_up(started_dir: str) -> None:
    # First of all, say this worker is up: it has unpickled the pool's locks, so closing the pool can no longer
    # pull them from under it.
    Path(started_dir, str(os.getpid())).touch()
    # A verifier's prints go to stderr: the collector's stdout carries only its own lines and the final JSON,
    # which a caller may parse.
    os.dup2(2, 1)
    # Import the verifiers (math-verify, sympy: about a second) when the worker starts, not inside the first
    # task, whose time limit would pay for it.
    import rollout_pipeline.verify.verifiers  # noqa: F401


def run_verifier(verifier: str, args: tuple) -> Any:
    """In a worker: `math` / `exact` (our verifiers), or a `module:function`, called with `args`."""
    if verifier_kind(verifier) == "builtin":
        from rollout_pipeline.verify.verifiers import verify

        return verify(verifier, *args)
    module_name, _, function_name = verifier.partition(":")
    return getattr(importlib.import_module(module_name), function_name)(*args)


class VerifyPool:
    """A pool of verifier processes, one per CPU, started on first use (most runs never need it: short outputs
    are verified inline). Workers are spawned, not forked: the collector's event loop and threads stay out of
    them. pebble kills a worker whose task overruns `timeout_s` and starts a new one in its place."""

    def __init__(self, timeout_s: float = VERIFY_TIMEOUT_S, workers: int | None = None) -> None:
        self.timeout_s = timeout_s
        self.workers = workers or os.cpu_count() or 1
        self._pool: Any = None
        self._started_dir: tempfile.TemporaryDirectory | None = None

    async def verify(self, verifier: str, args: tuple, size: int) -> Any:
        """The verifier's verdict, or RequestFailed('verifier_timeout') once it has run `timeout_s`."""
        if self._pool is None:
            from pebble import ProcessPool

            self._started_dir = tempfile.TemporaryDirectory(prefix="verify-pool-")
            self._pool = ProcessPool(
                max_workers=self.workers,
                initializer=_warm_up,
                initargs=(self._started_dir.name,),
                context=multiprocessing.get_context("spawn"),
            )
        future = self._pool.schedule(run_verifier, args=(verifier, args), timeout=self.timeout_s)
        try:
            return await asyncio.wrap_future(future)
        except FutureTimeout:
            raise RequestFailed(
                "verifier_timeout",
                f"the {verifier} verifier ran over {self.timeout_s:g} s on a {size:,}-character output and was stopped",
                False,
            ) from None
        except asyncio.CancelledError:
            future.cancel()  # pebble stops the worker running it
            raise

    def close(self) -> None:
        """Let the workers exit, then stop any that does not. pebble unlinks the pool's locks before it stops the
        workers, so a worker still starting up (on a busy machine, seconds after the pool launched it) failed to
        unpickle them and printed a traceback onto the run's stderr: first wait until every worker is up."""
        if self._pool is not None:
            self._wait_for_workers_to_start()
            self._pool.close()  # every verdict is in (or was cancelled): the workers have nothing left to do
            self._pool.join(timeout=self.timeout_s + 10)
            if self._pool.active:
                self._pool.stop()
                self._pool.join(timeout=10)
            self._pool = None
            self._started_dir.cleanup()

    def _wait_for_workers_to_start(self) -> None:
        deadline = time.monotonic() + _START_UP_WAIT_S
        while time.monotonic() < deadline:
            started = set(os.listdir(self._started_dir.name))
            workers = [p for p in multiprocessing.active_children() if p.name == _POOL_WORKER_NAME]
            if all(str(worker.pid) in started for worker in workers):
                return
            time.sleep(0.02)

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
