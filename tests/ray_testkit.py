"""Real Ray clusters on this machine for the tests and the benchmark: `ray start --block` nodes on free ports with
their own temp dir, stopped by the process ids that started them (never `ray stop`, which stops every node here)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from support import PY, free_port

RAY = str(Path(PY).parent / "ray")
NODE_START_TIMEOUT_S = 90
# A cluster on loopback: no usage stats sent, and no token authentication (its token would live in ~/.ray).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
WORKER_PORTS_FROM = 20_000
_worker_blocks: list[range] = []  # worker port blocks handed out by this process


@dataclass
class Node:
    process: subprocess.Popen
    log: Path


@dataclass
class Cluster:
    address: str
    temp_dir: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """What a driver needs to reach this cluster (RAY_ADDRESS, as Ray's own tools read it)."""
        return {"RAY_ADDRESS": self.address, **RAY_ENV}

    def add_node(self, cpus: int = 1) -> Node:
        """Another node on this machine, joined to the head."""
        node = start_node(self.temp_dir, f"node{len(self.nodes)}", [f"--address={self.address}"], cpus)
        self.nodes.append(node)
        return node


def start_node(temp_dir: Path, name: str, args: list[str], cpus: int = 1) -> Node:
    """`ray start --block` as a process of its own session: stopping it (SIGTERM) stops every process of its node,
    and a process-group kill by its pid catches any straggler."""
    log = temp_dir / f"{name}.log"
    ports = [
        f"--{flag}={free_port()}"
        for flag in (
            "node-manager-port",
            "object-manager-port",
            "metrics-export-port",
            "dashboard-agent-grpc-port",
            "dashboard-agent-listen-port",
            "runtime-env-agent-port",
        )
    ]
    worker_ports = _worker_port_block()
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [
                RAY,
                "start",
                "--block",
                f"--num-cpus={cpus}",
                "--node-ip-address=127.0.0.1",
                f"--temp-dir={temp_dir}",
                "--object-store-memory=80000000",
                "--disable-usage-stats",
                *ports,
                f"--min-worker-port={worker_ports.start}",
                f"--max-worker-port={worker_ports.stop - 1}",
                *args,
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **RAY_ENV},
        )
    node = Node(process, log)
    deadline = time.monotonic() + NODE_START_TIMEOUT_S
    while b"Ray runtime started" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_node(node)
            raise AssertionError(f"ray start {name} failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return node


def _worker_port_block(size: int = 100) -> range:
    """Ports for a node's workers: a block below the kernel's ephemeral range (where free_port's picks, and outgoing
    connections, come from), free right now and not handed to another node of this process."""
    low, _ = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    # Each pytest-xdist worker draws from its own share of the range, so two workers' nodes never race for a block.
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = (low - WORKER_PORTS_FROM) // workers
    first = WORKER_PORTS_FROM + worker * share
    for _ in range(200):
        start = random.randrange(first, first + share - size)
        block = range(start, start + size)
        if any(port in block for taken in _worker_blocks for port in (taken.start, taken.stop - 1)):
            continue
        if all(_bindable(port) for port in block):
            _worker_blocks.append(block)
            return block
    raise AssertionError("no free block of worker ports below the ephemeral range")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_node(node: Node) -> None:
    if node.process.poll() is None:
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(node.process.pid, signal.SIGKILL)  # the group of the session started here, nothing else
    except ProcessLookupError:
        pass
    node.process.wait()


@contextmanager
def ray_cluster(nodes: int = 2) -> Iterator[Cluster]:
    """A head node and `nodes - 1` more on this machine, one CPU each. The temp dir's path is short: Ray's Unix
    sockets live under it, and their paths may not exceed 107 bytes."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    port = free_port()
    cluster = Cluster(f"127.0.0.1:{port}", temp_dir)
    try:
        cluster.nodes.append(
            start_node(
                temp_dir,
                "head",
                ["--head", f"--port={port}", "--include-dashboard=false", f"--dashboard-port={free_port()}"],
            )
        )
        for _ in range(nodes - 1):
            cluster.add_node()
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            stop_node(node)
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)
