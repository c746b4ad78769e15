#!/usr/bin/env python3
"""Benchmark 8 — a rate-limited server: the adaptive concurrency limit against a fixed, hand-tuned parallelism.

bench/rate_limited_server.py serves at most K = 16 requests at a time (20 ms each) and answers 429 beyond: its
capacity is K / 20 ms = 800 requests/s. The collector runs against it twice, side by side: with
num_samples_in_parallel 256 (a ceiling 16x too high, which the adaptive limit must back off from), and with 16
(the best fixed setting, which only a user who knows K can choose). Reported: each run's rate as a share of the
capacity and its 429s per rollout. Targets for the adaptive run: >= 0.67 of capacity (within 1.5x of the ideal
wall time) and < 0.2 429s per rollout.

    python bench/rate_limits.py [--smoke]
"""
from __future__ import annotations

import re
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import orjson

from benchlib import BENCH, PY, Figure, Server, print_figures, run_collector, scratch, shell

NAME = "rate_limits"
CAPACITY = 16
SERVICE_MS = 20.0
ROLLOUTS = 8_000
REPEATS = 8


@contextmanager
def rate_limited_server() -> Iterator[Server]:
    command = [PY, str(BENCH / "rate_limited_server.py"), "--capacity", str(CAPACITY), "--service-ms", str(SERVICE_MS)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"listening on (\S+)", process.stdout.readline()).group(1)  # type: ignore[union-attr]
        yield Server(url, process.pid, command)
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        process.wait(timeout=10)


def _rejected(url: str) -> int:
    from urllib.request import urlopen
    with urlopen(f"{url}/stats", timeout=5) as reply:
        return orjson.loads(reply.read())["rejected"]


def run(smoke: bool = False) -> list[Figure]:
    rollouts = 400 if smoke else ROLLOUTS
    capacity_per_s = CAPACITY / (SERVICE_MS / 1000)
    figures: list[Figure] = []
    with rate_limited_server() as server, scratch(NAME) as work:
        for parallel, label in ((256, "adaptive, ceiling 256"), (CAPACITY, f"fixed parallelism {CAPACITY}")):
            before = _rejected(server.url)
            collected = run_collector(work, server.url, rollouts // REPEATS, REPEATS, parallel,
                                      agent={"retry_backoff_s": 0.01}, tag=f"p{parallel}", processes=1)
            rejected = _rejected(server.url) - before
            adaptive = parallel == 256
            command = shell(collected.measured.command)
            figures += [
                Figure(NAME, label, "rate / server capacity", round(collected.rollouts_per_s / capacity_per_s, 3), "",
                       target=(">=", 0.67) if adaptive else None, command=command,
                       note=f"{rollouts:,} rollouts at {collected.rollouts_per_s:.0f}/s; capacity "
                            f"{capacity_per_s:.0f}/s"),
                Figure(NAME, label, "429s per rollout", round(rejected / rollouts, 3), "",
                       target=("<", 0.2) if adaptive else None, command=command),
            ]
    return figures


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
