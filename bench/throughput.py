#!/usr/bin/env python3
"""Benchmark 1 — throughput against an instant server: the collector vs a bare aiohttp loop, side by side.

For each parallelism (64, 256, 1024) the same instant server (bench/instant_server.py: a raw asyncio.Protocol
HTTP/1.1 responder on uvloop, its own process, a fixed pre-encoded reply) serves, one after the other:
the bare aiohttp loop (bench/bare_client.py) with Python's default GC; the collector's real CLI (4 seeded repeats
per prompt, math verifier, progress bar on) as a user runs it, `--processes auto`; the same collector held to
one process (`--processes 1`); and the bare loop again with the generation-0 GC threshold the collector uses
while collecting. Reported: rollouts/s while collecting (the collector's stats.json) and the loop's requests/s,
CPU ms per rollout or request (every process of the run, os.wait4), and the ratios.
Target: collector / bare loop >= 0.85 at parallelism 256, against the loop with the same GC setting (the
stricter of the two ceilings; the ratio against the minimal loop is shown too). The bare loop is one process:
the ceiling of one Python process. With auto, the collector uses one process per 128 slots (at most one per
CPU), so from parallelism 256 on it can pass that ceiling; the one-process ratio shows its cost per request.

    python bench/throughput.py [--smoke]
"""

from __future__ import annotations

import sys

from benchlib import Figure, instant_server, print_figures, run_bare_client, run_collector, scratch, shell
from rollout_pipeline.collect.run_loop import GC_YOUNG_THRESHOLD

NAME = "throughput"
PARALLELISM = (64, 256, 1024)
ROLLOUTS = 30_000
REPEATS = 4
TARGET_RATIO = 0.85


def run(smoke: bool = False) -> list[Figure]:
    rollouts = 400 if smoke else ROLLOUTS
    levels = (16,) if smoke else PARALLELISM
    figures: list[Figure] = []
    with instant_server() as server, scratch(NAME) as work:
        for parallel in levels:
            server_cpu = server.cpu_s()
            bare, minimal = run_bare_client(server.url, rollouts, parallel)
            collected = run_collector(work, server.url, rollouts // REPEATS, REPEATS, parallel, tag=f"p{parallel}")
            single = run_collector(
                work, server.url, rollouts // REPEATS, REPEATS, parallel, tag=f"p{parallel}", processes=1
            )
            bare_gc, tuned = run_bare_client(server.url, rollouts, parallel, GC_YOUNG_THRESHOLD)
            server_cpu = server.cpu_s() - server_cpu
            case = f"parallel {parallel}"
            command = shell(collected.measured.command)
            single_command = shell(single.measured.command)
            figures += [
                Figure(
                    NAME,
                    case,
                    "collector rollouts/s",
                    round(collected.rollouts_per_s),
                    "/s",
                    command=command,
                    note=f"{rollouts:,} rollouts, {collected.processes} process(es) (auto)",
                ),
                Figure(
                    NAME,
                    case,
                    "collector CPU per rollout",
                    round(collected.cpu_ms_per_rollout, 3),
                    "ms",
                    command=command,
                ),
                Figure(
                    NAME,
                    case,
                    "collector rollouts/s, one process",
                    round(single.rollouts_per_s),
                    "/s",
                    command=single_command,
                ),
                Figure(
                    NAME,
                    case,
                    "collector CPU per rollout, one process",
                    round(single.cpu_ms_per_rollout, 3),
                    "ms",
                    command=single_command,
                ),
                Figure(
                    NAME,
                    case,
                    "bare loop requests/s (default GC)",
                    round(minimal["requests_per_s"]),
                    "/s",
                    command=shell(bare.command),
                ),
                Figure(
                    NAME,
                    case,
                    "bare loop CPU per request (default GC)",
                    round(1000 * bare.cpu_s / rollouts, 3),
                    "ms",
                    command=shell(bare.command),
                ),
                Figure(
                    NAME,
                    case,
                    "bare loop requests/s (collector's GC)",
                    round(tuned["requests_per_s"]),
                    "/s",
                    command=shell(bare_gc.command),
                ),
                Figure(
                    NAME,
                    case,
                    "bare loop CPU per request (collector's GC)",
                    round(1000 * bare_gc.cpu_s / rollouts, 3),
                    "ms",
                    command=shell(bare_gc.command),
                ),
                Figure(
                    NAME,
                    case,
                    "ratio collector / bare loop (same GC)",
                    round(collected.rollouts_per_s / tuned["requests_per_s"], 3),
                    "",
                    target=(">=", TARGET_RATIO) if parallel == 256 else None,
                    command="python bench/throughput.py",
                ),
                Figure(
                    NAME,
                    case,
                    "ratio collector / bare loop (default GC)",
                    round(collected.rollouts_per_s / minimal["requests_per_s"], 3),
                    "",
                    command="python bench/throughput.py",
                ),
                Figure(
                    NAME,
                    case,
                    "ratio one-process collector / bare loop (same GC)",
                    round(single.rollouts_per_s / tuned["requests_per_s"], 3),
                    "",
                    command="python bench/throughput.py",
                ),
                Figure(
                    NAME,
                    case,
                    "instant server CPU (all four runs)",
                    round(server_cpu, 2),
                    "s",
                    command=shell(server.command),
                ),
            ]
    return figures


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
