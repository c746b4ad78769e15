#!/usr/bin/env python3
"""Benchmark 4 — start-up: wall time, CPU and peak RSS of a 1-row run, start to finish.

The collector's real CLI collects one rollout from the instant server (its own process, already running),
so the figure is the collector's own cost: interpreter, imports, input scan, event loop, one request, the
atomic output write. The median of 5 runs. Also measured: the same 1-row run with `url: embedded`, where the
collector starts the bundled reference server itself (informational). Target: under 1 s.

    python bench/startup.py [--smoke]
"""
from __future__ import annotations

import statistics
import sys

from benchlib import Figure, instant_server, print_figures, run_collector, scratch, shell

NAME = "startup"
RUNS = 5
TARGET_S = 1.0


def run(smoke: bool = False) -> list[Figure]:
    runs = 1 if smoke else RUNS
    figures: list[Figure] = []
    with instant_server() as server, scratch(NAME) as work:
        for label, url in (("instant server", server.url), ("url: embedded", "embedded")):
            agent = {"model": "reference"} if url == "embedded" else None
            samples = [run_collector(work, url, 1, 1, None, agent=agent, tag=label.replace(" ", "_").replace(":", ""))
                       for _ in range(runs)]
            wall = statistics.median(s.measured.wall_s for s in samples)
            command = shell(samples[0].measured.command)
            targeted = url != "embedded"
            figures += [
                Figure(NAME, f"1 row, {label}", "wall time (median)", round(wall, 3), "s",
                       target=("<", TARGET_S) if targeted else None,
                       command=command, note=f"{runs} runs"),
                Figure(NAME, f"1 row, {label}", "CPU time (median)",
                       round(statistics.median(s.measured.cpu_s for s in samples), 3), "s", command=command),
                Figure(NAME, f"1 row, {label}", "peak RSS (median)",
                       round(statistics.median(s.measured.max_rss_mb for s in samples), 1), "MB", command=command),
            ]
    return figures


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
