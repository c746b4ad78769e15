#!/usr/bin/env python3
"""Benchmark 4 — start-up: wall time, CPU and peak RSS of a 1-row run, start to finish, beside a bare interpreter.

The collector's real CLI (the seed syntax) collects one rollout from the instant server (its own process, already
running), so the figure is the collector's own cost: interpreter, imports, input scan, event loop, one request,
the atomic output write. In the same rounds, interleaved: `python -c pass` and `python -c 'import aiohttp'` (the
floor any aiohttp client pays), so the ratios hold on a shared, noisy machine. The 1-row run is measured with
params.yaml and the command line validated before (the cache of validation results warm: every run after the
first) and as a first run (an empty cache: pydantic imported and the models built). Also: the same 1-row run
with `url: embedded`, where the collector starts the bundled reference server itself, and each stage script's
`--help` (its imports; informational). The median of 7 rounds. Target: the 1-row run under 0.5 s.

    python bench/startup.py [--smoke]
"""

from __future__ import annotations

import statistics
import sys
import tempfile

from benchlib import PY, ROOT, Figure, instant_server, print_figures, run_collector, run_measured, scratch, shell
from rollout_pipeline.settings import CACHE_ENV

NAME = "startup"
RUNS = 7
TARGET_S = 0.5
FLOORS = {"python -c pass": [PY, "-c", "pass"], "python -c 'import aiohttp'": [PY, "-c", "import aiohttp"]}
STAGES = ("prompts", "filter", "pair", "metrics", "report", "rl", "collect")


def run(smoke: bool = False) -> list[Figure]:
    runs = 1 if smoke else RUNS
    figures: list[Figure] = []
    with instant_server() as server, scratch(NAME) as work:
        warm = {CACHE_ENV: str(work / "cache")}
        run_collector(work, server.url, 1, 1, None, tag="warm", env=warm)  # fills the cache
        samples: dict[str, list] = {label: [] for label in (*FLOORS, "warm", "cold", "embedded")}
        for _ in range(runs):
            for label, command in FLOORS.items():
                samples[label].append(run_measured(command, ROOT).check())
            samples["warm"].append(run_collector(work, server.url, 1, 1, None, tag="warm", env=warm).measured)
            with tempfile.TemporaryDirectory(dir=work) as empty:
                samples["cold"].append(
                    run_collector(work, server.url, 1, 1, None, tag="cold", env={CACHE_ENV: empty}).measured
                )
            samples["embedded"].append(
                run_collector(
                    work, "embedded", 1, 1, None, agent={"model": "reference"}, tag="embedded", env=warm
                ).measured
            )
        stage_help = {
            stage: [run_measured([PY, f"scripts/{stage}.py", "--help"], ROOT, warm).check() for _ in range(runs)]
            for stage in STAGES
        }

    def median(label: str, what: str = "wall_s") -> float:
        return statistics.median(getattr(sample, what) for sample in samples[label])

    for label, command in FLOORS.items():
        figures.append(
            Figure(
                NAME,
                label,
                "wall time (median)",
                round(median(label), 3),
                "s",
                command=shell(command),
                note=f"{runs} rounds, interleaved with the runs below",
            )
        )
    cases = (
        ("warm", "1 row, instant server", "params validated before (warm cache)"),
        ("cold", "1 row, instant server, first run", "empty cache: pydantic imported, models built"),
        ("embedded", "1 row, url: embedded", "the collector starts the reference server"),
    )
    for label, case, note in cases:
        command = shell(samples[label][0].command)
        figures += [
            Figure(
                NAME,
                case,
                "wall time (median)",
                round(median(label), 3),
                "s",
                target=("<", TARGET_S) if label == "warm" else None,
                command=command,
                note=f"{runs} runs; {note}",
            ),
            Figure(NAME, case, "CPU time (median)", round(median(label, "cpu_s"), 3), "s", command=command),
            Figure(NAME, case, "peak RSS (median)", round(median(label, "max_rss_mb"), 1), "MB", command=command),
        ]
    for label, case in (("warm", "1 row, instant server"), ("cold", "1 row, instant server, first run")):
        for floor in FLOORS:
            figures.append(
                Figure(
                    NAME,
                    case,
                    f"ratio to {floor}",
                    round(median(label) / median(floor), 2),
                    "x",
                    command="python bench/startup.py",
                    note="medians of the same rounds",
                )
            )
    for stage, measured in stage_help.items():
        figures.append(
            Figure(
                NAME,
                f"scripts/{stage}.py --help",
                "wall time (median)",
                round(statistics.median(m.wall_s for m in measured), 3),
                "s",
                command=shell(measured[0].command),
                note="its imports and argument parsing",
            )
        )
    return figures


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
