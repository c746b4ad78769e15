"""A run's connection to a Ray cluster: the one at an address, or a local instance it starts and shuts down."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator

from rollout_pipeline.errors import UserError

CONNECT_TIMEOUT_S = 5.0
DEFAULT_GCS_PORT = 6379


class RayCluster:
    """A connection to a Ray cluster for one run: the one at `address` (host:port or `auto`, Ray's conventions),
    or with no address a local instance that this run starts and shuts down."""

    def __init__(self, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(
                "--executor ray needs Ray, an optional extra: pip install -c requirements.lock "
                "-e '.[ray]' (or make setup-ray)"
            ) from None
        self.ray = ray
        self.address = address
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home from a collection run
        with _own_signal_handlers():
            self._connect(address)

    def _connect(self, address: str | None) -> None:
        ray = self.ray
        if address is None:
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            return
        if address.startswith("ray://"):
            raise UserError(
                f"Ray address {address}: Ray Client (ray://) is not supported; give the cluster's GCS "
                f"address, host:{DEFAULT_GCS_PORT}, or run on a cluster node with RAY_ADDRESS=auto"
            )
        if address != "auto":
            _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise UserError(f"cannot connect to the Ray cluster at {address} ({reason})") from None

    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def shutdown(self) -> None:
        """Disconnect (and stop the local instance, when this run started it); the workers end with the job."""
        self.ray.shutdown()


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """Keep the collector's SIGINT and SIGTERM handlers: ray.init installs its own (the SIGTERM one kills the process
    outright), which would skip the collector's clean stop and its line saying what was kept."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                with contextlib.suppress(ValueError):  # not the main thread: nothing was ours to keep
                    signal.signal(signum, handler)


def _check_reachable(address: str) -> None:
    """One line naming the address when nothing answers there: Ray itself would retry for minutes."""
    host, _, port = address.rpartition(":") if ":" in address else (address, "", str(DEFAULT_GCS_PORT))
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except ValueError:
        raise UserError(f"Ray address {address!r}: expected host:port or auto") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, (socket.timeout, TimeoutError)):
            reason = f"no answer within {CONNECT_TIMEOUT_S:g} s"
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({reason}); start it with `ray start --head`, "
            "or fix RAY_ADDRESS / --ray-address"
        ) from None
