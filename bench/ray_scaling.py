#!/usr/bin/env python3
"""Benchmark 9 — the Ray executor: against the local one, the second node's speed-up, and what one driver can take.

A real Ray cluster on this machine (tests/ray_testkit.py: `ray start --block` nodes, one CPU each, on free ports).
(a) The instant server (bench/instant_server.py), parallelism 256: the local executor (`--processes auto`) and the
Ray executor on a two-node cluster (two workers), one after the other; the ratio of their rollouts/s. (b) A CPU-heavy
verifier (bench/cpu_verifier.py: 5 ms of CPU per rollout, run by the workers) against the instant server: rollouts/s
on the head node alone (one worker), then after a second node joins (two workers); the speed-up. (c) The driver's
cost: its CPU per rollout in (a) (the whole driver process, os.wait4, less a 4-rollout run's fixed cost), hence the
rollouts/s one driver can write, and the bytes per rollout it writes; then the same with 1,000-token replies whose
token ids the records keep (`token_data: ids`), for the cost of a large record. This machine has 2 cores that the driver, the
server and both nodes share, so (b)'s speed-up is below what two machines would give.

    python bench/ray_scaling.py [--smoke]
"""

from __future__ import annotations

import sys

from benchlib import BENCH, ROOT, Figure, instant_server, print_figures, run_collector, scratch, shell

sys.path.insert(0, str(ROOT / "tests"))
from ray_testkit import ray_cluster  # noqa: E402  (the tests' cluster kit: one way to start a local cluster)

NAME = "ray_scaling"
REPEATS = 4
# Parallelism and rollouts of each case: the instant server, the CPU-heavy verifier, the large records.
PARALLEL, CPU_PARALLEL, LARGE_PARALLEL = 256, 32, 64
SIZES = {False: (20_000, 1_600, 2_000), True: (400, 80, 80)}  # by --smoke


def run(smoke: bool = False) -> list[Figure]:
    rollouts, cpu_rollouts, large_rollouts = SIZES[smoke]
    cpu_agent = {"verifier": "cpu_verifier:busy"}
    with instant_server() as server, scratch(NAME) as work, ray_cluster(nodes=1) as cluster:
        env = {**cluster.env, "PYTHONPATH": str(BENCH)}  # the verifier's module, for the driver and (via Ray) workers
        ray_flags = ["--executor", "ray"]
        # (b) first, while the cluster has one node.
        one = run_collector(
            work,
            server.url,
            cpu_rollouts // REPEATS,
            REPEATS,
            CPU_PARALLEL,
            cpu_agent,
            tag="cpu1",
            flags=ray_flags,
            env=env,
        )
        cluster.add_node()
        two = run_collector(
            work,
            server.url,
            cpu_rollouts // REPEATS,
            REPEATS,
            CPU_PARALLEL,
            cpu_agent,
            tag="cpu2",
            flags=ray_flags,
            env=env,
        )
        # (a) and (c) on the two-node cluster.
        local = run_collector(work, server.url, rollouts // REPEATS, REPEATS, PARALLEL, tag="local")
        ray = run_collector(
            work, server.url, rollouts // REPEATS, REPEATS, PARALLEL, tag="ray", flags=ray_flags, env=env
        )
        tiny = run_collector(work, server.url, 1, REPEATS, PARALLEL, tag="tiny", flags=ray_flags, env=env)
        # (c) again with large records: 1,000-token replies whose token ids the records keep.
        with instant_server(reply_tokens=1000) as long_server:
            large = run_collector(
                work,
                long_server.url,
                large_rollouts // REPEATS,
                REPEATS,
                LARGE_PARALLEL,
                {"token_data": "ids"},
                tag="large",
                flags=ray_flags,
                env=env,
            )
    driver_ms = 1000 * (ray.measured.cpu_s - tiny.measured.cpu_s) / max(1, ray.rollouts - tiny.rollouts)
    large_ms = 1000 * (large.measured.cpu_s - tiny.measured.cpu_s) / max(1, large.rollouts - tiny.rollouts)
    bytes_per_rollout = ray.stats["output"]["bytes"] / ray.rollouts
    large_bytes = large.stats["output"]["bytes"] / large.rollouts
    ray_command = shell(ray.measured.command) + "  (RAY_ADDRESS=<2-node cluster>)"
    cpu_note = f"{cpu_rollouts:,} rollouts, parallelism {CPU_PARALLEL}, 5 ms CPU each in the verifier"
    return [
        Figure(
            NAME,
            f"instant server, parallel {PARALLEL}",
            "local executor rollouts/s",
            round(local.rollouts_per_s),
            "/s",
            command=shell(local.measured.command),
            note=f"{rollouts:,} rollouts, {local.processes} process(es)",
        ),
        Figure(
            NAME,
            f"instant server, parallel {PARALLEL}",
            "Ray executor rollouts/s",
            round(ray.rollouts_per_s),
            "/s",
            command=ray_command,
            note=f"{ray.stats['ray']['workers']} workers on {ray.stats['ray']['nodes']} nodes",
        ),
        Figure(
            NAME,
            f"instant server, parallel {PARALLEL}",
            "ratio Ray / local",
            round(ray.rollouts_per_s / local.rollouts_per_s, 3),
            "",
            command="python bench/ray_scaling.py",
        ),
        Figure(
            NAME,
            "5 ms CPU verifier",
            "rollouts/s, one node (1 worker)",
            round(one.rollouts_per_s, 1),
            "/s",
            command=shell(one.measured.command),
            note=cpu_note,
        ),
        Figure(
            NAME,
            "5 ms CPU verifier",
            "rollouts/s, two nodes (2 workers)",
            round(two.rollouts_per_s, 1),
            "/s",
            command=shell(two.measured.command),
            note="rollouts by node: " + ", ".join(map(str, two.stats["ray"]["rollouts_by_node"].values())),
        ),
        Figure(
            NAME,
            "5 ms CPU verifier",
            "speed-up from the second node",
            round(two.rollouts_per_s / one.rollouts_per_s, 3),
            "",
            command="python bench/ray_scaling.py",
            note="2 cores shared by the driver, the server and both nodes",
        ),
        Figure(
            NAME,
            "driver",
            "driver CPU per rollout",
            round(driver_ms, 4),
            "ms",
            command=ray_command,
            note="whole driver process less a 4-rollout run's",
        ),
        Figure(
            NAME,
            "driver",
            "driver write rate (1 / CPU per rollout)",
            round(1000 / driver_ms),
            "/s",
            command=ray_command,
            note="one driver core, saturated",
        ),
        Figure(
            NAME,
            "driver",
            "bytes per rollout written",
            round(bytes_per_rollout),
            "B",
            command=ray_command,
            note="the instant server's short replies; the embedded server's records are ~1.2 KB",
        ),
        Figure(
            NAME,
            "driver, 1,000-token records",
            "driver CPU per rollout",
            round(large_ms, 4),
            "ms",
            command=shell(large.measured.command),
            note=f"{large_rollouts:,} rollouts, token_data: ids",
        ),
        Figure(
            NAME,
            "driver, 1,000-token records",
            "driver write rate (1 / CPU per rollout)",
            round(1000 / large_ms),
            "/s",
            command=shell(large.measured.command),
        ),
        Figure(
            NAME,
            "driver, 1,000-token records",
            "bytes per rollout written",
            round(large_bytes),
            "B",
            command=shell(large.measured.command),
        ),
    ]


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
