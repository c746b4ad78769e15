#!/usr/bin/env python3
"""Benchmark 2 — concurrency efficiency against a fixed-latency server (100 ms), at parallelism 64, 256, 1024.

Little's law: with P requests always in flight and a latency of L seconds, throughput is at most P / L.
Efficiency = achieved rollouts/s (the collector's stats.json, while collecting) / (P / L). The collector runs
as a user runs it (`--processes auto`: one process per 128 slots, at most one per CPU) and held to one process.
The bare aiohttp loop (one process) runs against the same server in the same run (with Python's default GC,
and with the collector's GC setting), so a shortfall can be told apart from the machine's own ceiling (when
P / L exceeds what the machine's processes can do at all, none of them reaches it).
Target: efficiency >= 0.95 at parallelism 256 and 1024.

    python bench/concurrency.py [--smoke]
"""

from __future__ import annotations

import sys

from benchlib import Figure, instant_server, print_figures, run_bare_client, run_collector, scratch, shell
from rollout_pipeline.collect.run_loop import GC_YOUNG_THRESHOLD

NAME = "concurrency"
LATENCY_S = 0.100
PARALLELISM = (64, 256, 1024)
ROUNDS = 60  # requests per slot: the run lasts about ROUNDS * LATENCY_S at full efficiency
REPEATS = 4
TARGET = 0.95


def run(smoke: bool = False) -> list[Figure]:
    latency_s = 0.02 if smoke else LATENCY_S
    levels = (16,) if smoke else PARALLELISM
    rounds = 5 if smoke else ROUNDS
    figures: list[Figure] = []
    with instant_server(latency_ms=latency_s * 1000) as server, scratch(NAME) as work:
        for parallel in levels:
            rollouts = parallel * rounds
            limit = parallel / latency_s
            collected = run_collector(work, server.url, rollouts // REPEATS, REPEATS, parallel, tag=f"p{parallel}")
            single = run_collector(
                work, server.url, rollouts // REPEATS, REPEATS, parallel, tag=f"p{parallel}", processes=1
            )
            bare, ceiling = run_bare_client(server.url, rollouts, parallel)
            bare_gc, tuned = run_bare_client(server.url, rollouts, parallel, GC_YOUNG_THRESHOLD)
            efficiency = collected.rollouts_per_s / limit
            targeted = parallel in (256, 1024)
            case = f"parallel {parallel}, {latency_s * 1000:g} ms"
            figures += [
                Figure(NAME, case, "Little's-law limit P/L", round(limit), "/s", command="python bench/concurrency.py"),
                Figure(
                    NAME,
                    case,
                    "collector rollouts/s",
                    round(collected.rollouts_per_s),
                    "/s",
                    command=shell(collected.measured.command),
                    note=f"{rollouts:,} rollouts, {collected.processes} process(es) (auto)",
                ),
                Figure(
                    NAME,
                    case,
                    "collector efficiency",
                    round(efficiency, 3),
                    "",
                    target=(">=", TARGET) if targeted else None,
                    command=shell(collected.measured.command),
                ),
                Figure(
                    NAME,
                    case,
                    "collector efficiency, one process",
                    round(single.rollouts_per_s / limit, 3),
                    "",
                    command=shell(single.measured.command),
                ),
                Figure(
                    NAME,
                    case,
                    "bare loop efficiency (default GC)",
                    round(ceiling["requests_per_s"] / limit, 3),
                    "",
                    command=shell(bare.command),
                ),
                Figure(
                    NAME,
                    case,
                    "bare loop efficiency (collector's GC)",
                    round(tuned["requests_per_s"] / limit, 3),
                    "",
                    command=shell(bare_gc.command),
                ),
            ]
    return figures


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
