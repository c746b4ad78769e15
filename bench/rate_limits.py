#!/usr/bin/env python3
"""Benchmark 8 — rate limits and faults: the adaptive concurrency limit against a rate-limited server and a flaky one.

bench/rate_limited_server.py serves at most K = 16 requests at a time and answers 429 beyond.
- Without Retry-After (20 ms each, a capacity of 800 requests/s): the collector runs twice, side by side, with
  num_samples_in_parallel 256 (a ceiling 16x too high, which the adaptive limit must back off from) and with 16
  (the best fixed setting, which only a user who knows K can choose). Targets for the adaptive run: >= 0.67 of
  capacity (within 1.5x of the ideal wall time) and < 0.2 429s per rollout.
- With `Retry-After: 1` on every third 429 (50 ms each, a capacity of 320/s; 800 rollouts): the same two runs.
  A Retry-After answers its own request; pausing the whole endpoint for it cost 4.2x the capacity time.
  Targets for the adaptive run: at most 1.5x the capacity time, at most 0.3 429s per rollout.
The embedded server with a 25 % fault mix (HTML 502 and 503, 429 with `Retry-After: 0.2` or an HTTP date,
cut-off JSON, a reply without choices, a 30 s trickled body, a reset; seeded): 300 rollouts at parallelism 32,
beside the same run fault-free. These are random faults, not congestion: the limit must not collapse. Targets:
at most 45 s (the trickled bodies alone take 30 s), nothing lost.

    python bench/rate_limits.py [--smoke]
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from benchlib import BENCH, PY, Figure, Server, embedded_server, print_figures, run_collector, scratch, shell

NAME = "rate_limits"
CAPACITY = 16
SERVICE_MS = 20.0
ROLLOUTS = 8_000
REPEATS = 8
RETRY_AFTER_SERVICE_MS = 50.0
RETRY_AFTER_ROLLOUTS = 800
FAULT_KINDS = ("502", "503", "429", "429-date", "malformed", "missing-fields", "trickle", "reset")
FAULT_RATE = 0.25
FAULT_ROLLOUTS = 300
FAULT_PARALLEL = 32


@contextmanager
def rate_limited_server(service_ms: float = SERVICE_MS, *flags: str) -> Iterator[Server]:
    command = [
        PY,
        str(BENCH / "rate_limited_server.py"),
        "--capacity",
        str(CAPACITY),
        "--service-ms",
        str(service_ms),
        *flags,
    ]
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


def _against_rate_limit(work, rollouts: int, service_ms: float, *flags: str, label: str) -> list[Figure]:
    capacity_per_s = CAPACITY / (service_ms / 1000)
    figures: list[Figure] = []
    with rate_limited_server(service_ms, *flags) as server:
        for parallel, case in (
            (256, f"adaptive, ceiling 256{label}"),
            (CAPACITY, f"fixed parallelism {CAPACITY}{label}"),
        ):
            before = _rejected(server.url)
            collected = run_collector(
                work,
                server.url,
                rollouts // REPEATS,
                REPEATS,
                parallel,
                agent={"retry_backoff_s": 0.01},
                tag=f"p{parallel}{label.replace(' ', '-')}",
                processes=1,
            )
            rejected = _rejected(server.url) - before
            adaptive = parallel == 256
            command = shell(collected.measured.command)
            share = collected.rollouts_per_s / capacity_per_s
            if flags:  # the figure for this server: wall time over the capacity's
                figures.append(
                    Figure(
                        NAME,
                        case,
                        "collect time / capacity time",
                        round(1 / share, 3),
                        "",
                        target=("<=", 1.5) if adaptive else None,
                        command=command,
                        note=f"{rollouts:,} rollouts in {collected.stats['collect_s']:.2f} s; capacity "
                        f"{capacity_per_s:.0f}/s ({rollouts / capacity_per_s:.2f} s)",
                    )
                )
            else:
                figures.append(
                    Figure(
                        NAME,
                        case,
                        "rate / server capacity",
                        round(share, 3),
                        "",
                        target=(">=", 0.67) if adaptive else None,
                        command=command,
                        note=f"{rollouts:,} rollouts at {collected.rollouts_per_s:.0f}/s; capacity "
                        f"{capacity_per_s:.0f}/s",
                    )
                )
            (endpoint,) = collected.stats["endpoints"]
            figures.append(
                Figure(
                    NAME,
                    case,
                    "429s per rollout",
                    round(rejected / rollouts, 3),
                    "",
                    target=(("<=", 0.3) if flags else ("<", 0.2)) if adaptive else None,
                    command=command,
                    note=f"limit lowest {endpoint['limit_low']}, cut {endpoint['limit_decreases']} times; "
                    f"whole-endpoint pauses {endpoint.get('pauses', 0)}",
                )
            )
    return figures


def _against_faults(work, rollouts: int, smoke: bool) -> list[Figure]:
    fault_flags = ["--fault-seed", "7", "--retry-after", "0.2"] + (["--hang-s", "1"] if smoke else [])
    for kind in FAULT_KINDS:
        fault_flags += [f"--fail-{kind}", f"{FAULT_RATE / len(FAULT_KINDS):g}"]
    figures: list[Figure] = []
    runs = {}
    for case, flags in (("fault-free", []), ("25 % fault mix", fault_flags)):
        with embedded_server(*flags) as server:
            runs[case] = collected = run_collector(
                work,
                server.url,
                rollouts // 4,
                4,
                FAULT_PARALLEL,
                agent={"model": "reference"},
                tag=case.split()[0],
                processes=1,
            )
        (endpoint,) = collected.stats["endpoints"]
        command = shell(collected.measured.command)
        faulty = case != "fault-free"
        figures += [
            Figure(
                NAME,
                case,
                "collect time",
                round(collected.stats["collect_s"], 2),
                "s",
                target=("<=", 45.0) if faulty else None,
                command=command,
                note=f"server: {shell(server.command)}; {sum(collected.stats['retries'].values())} retries; limit "
                f"lowest {endpoint['limit_low']} of {FAULT_PARALLEL}, cut {endpoint['limit_decreases']} times, "
                f"{endpoint.get('tolerated', 0)} overloads tolerated; whole-endpoint pauses "
                f"{endpoint.get('pauses', 0)}",
            ),
            Figure(
                NAME,
                case,
                "rollouts lost",
                rollouts - collected.rollouts,
                "",
                target=("<=", 0) if faulty else None,
                command=command,
            ),
        ]
    figures.append(
        Figure(
            NAME,
            "25 % fault mix",
            "collect time / fault-free",
            round(runs["25 % fault mix"].stats["collect_s"] / max(1e-3, runs["fault-free"].stats["collect_s"]), 1),
            "",
            command="python bench/rate_limits.py",
        )
    )
    return figures


def run(smoke: bool = False) -> list[Figure]:
    with scratch(NAME) as work:
        return (
            _against_rate_limit(work, 400 if smoke else ROLLOUTS, SERVICE_MS, label="")
            + _against_rate_limit(
                work,
                160 if smoke else RETRY_AFTER_ROLLOUTS,
                RETRY_AFTER_SERVICE_MS,
                "--retry-after",
                "1",
                "--retry-after-every",
                "3",
                label=", Retry-After 1 s on a third",
            )
            + _against_faults(work, 40 if smoke else FAULT_ROLLOUTS, smoke)
        )


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
