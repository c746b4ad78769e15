#!/usr/bin/env python3
"""Benchmark 5 — `repeat_mode: n` against separate requests, on the embedded server with realistic latency.

The embedded reference server (scripts/serve.py, its own process) answers every generation request after
LATENCY_MS (+- JITTER_MS): a model server's time per request, which one request with n choices pays once
(that is what a prefix cache buys on vLLM or SGLang). The collector's real CLI collects PROMPTS x REPEATS
rollouts both ways at the same parallelism. Reported: requests sent (stats.json) and wall time, and the ratio.

    python bench/repeat_mode.py [--smoke]
"""

from __future__ import annotations

import sys

from benchlib import Figure, embedded_server, print_figures, run_collector, scratch, shell

NAME = "repeat_mode"
LATENCY_MS = 200
JITTER_MS = 50
PROMPTS = 256
REPEATS = 8
PARALLEL = 64


def run(smoke: bool = False) -> list[Figure]:
    latency, jitter, prompts = (20, 5, 16) if smoke else (LATENCY_MS, JITTER_MS, PROMPTS)
    figures: list[Figure] = []
    walls = {}
    with (
        embedded_server("--latency-ms", str(latency), "--jitter-ms", str(jitter), "--fault-seed", "1") as server,
        scratch(NAME) as work,
    ):
        for mode in ("separate", "n"):
            collected = run_collector(
                work,
                server.url,
                prompts,
                REPEATS,
                PARALLEL,
                tag=mode,
                agent={"model": "reference", "repeat_mode": mode},
            )
            walls[mode] = collected.measured.wall_s
            case = f"repeat_mode: {mode}"
            command = shell(collected.measured.command)
            note = (
                f"{prompts} prompts x {REPEATS} repeats, parallel {PARALLEL}, server latency "
                f"{latency} +- {jitter} ms ({shell(server.command)})"
            )
            figures += [
                Figure(NAME, case, "requests sent", int(collected.stats["requests"]), "", command=command, note=note),
                Figure(NAME, case, "wall time", round(collected.measured.wall_s, 2), "s", command=command),
                Figure(NAME, case, "rollouts", collected.rollouts, "", command=command),
            ]
    figures.append(
        Figure(
            NAME,
            "n vs separate",
            "wall-time speed-up",
            round(walls["separate"] / walls["n"], 2),
            "x",
            command="python bench/repeat_mode.py",
        )
    )
    return figures


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
