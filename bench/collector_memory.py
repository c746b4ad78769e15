#!/usr/bin/env python3
"""Benchmark 3 — the collector's peak RSS against the number of rollouts (1,000, 100,000, 1,000,000).

An instant server in another process; prompts x 4 repeats at parallelism 256, through the real CLI held to one
process (`--processes 1`, so the series compares like with like); peak RSS of the collector process (os.wait4).
One more run, 100,000 rollouts with `--processes auto`, gives the peaks of the collector and each process it
forked, added up (stats.json; forked processes share their start-up pages, so the sum overstates). Memory must not grow with the input: rows are streamed, live tasks are
bounded, finished rollouts are indexed by 8-byte offsets, latencies go into a fixed-size histogram, and the
sorted output is written by reading the records back. Targets: peak RSS <= 100 MB at 1,000,000 rollouts, and
flat from 1,000 up (issue 3: the peak at 100,000 within 30 MB of the peak at 1,000). To fit `make bench` in
10 minutes, the 1,000,000-rollout run uses `repeat_mode: n` (250,000 requests with 4 choices each: the same
records, index and output, a quarter of the HTTP work); `--separate` runs every size with one request per
rollout (about 4.5 minutes for the million on the 2-core machine).

    python bench/collector_memory.py [--smoke] [--separate] [ROLLOUTS ...]   (default: 1000 100000 1000000)
"""

from __future__ import annotations

import sys

from benchlib import Figure, instant_server, print_figures, run_collector, scratch, shell

NAME = "memory"
SIZES = (1_000, 100_000, 1_000_000)
REPEATS = 4
PARALLEL = 256
TARGET_MB = 100.0
FLAT_MB = 30.0
N_MODE_FROM = 1_000_000
AUTO_SIZE = (
    100_000  # the size also run with --processes auto  # sizes from here on use repeat_mode: n unless --separate
)


def run(smoke: bool = False, sizes: tuple[int, ...] | None = None, separate: bool = False) -> list[Figure]:
    sizes = sizes or ((100, 2_000) if smoke else SIZES)
    figures: list[Figure] = []
    peaks: dict[int, float] = {}
    with instant_server() as server, scratch(NAME) as work:
        for total in sizes:
            mode = "n" if total >= N_MODE_FROM and not separate else "separate"
            collected = run_collector(
                work,
                server.url,
                total // REPEATS,
                REPEATS,
                PARALLEL,
                tag=f"n{total}",
                agent={"repeat_mode": mode},
                processes=1,
            )
            peaks[total] = collected.measured.max_rss_mb
            command = shell(collected.measured.command) + f"  (agent repeat_mode: {mode})"
            big = total >= 1_000_000
            case = f"{total:,} rollouts" + (", repeat_mode: n" if mode == "n" else "")
            figures += [
                Figure(
                    NAME,
                    case,
                    "collector peak RSS",
                    round(peaks[total], 1),
                    "MB",
                    target=("<=", TARGET_MB) if big else None,
                    command=command,
                ),
                Figure(
                    NAME,
                    case,
                    "wall time (whole process)",
                    round(collected.measured.wall_s, 1),
                    "s",
                    command=command,
                    note=f"{collected.rollouts_per_s:,.0f} rollouts/s while collecting",
                ),
            ]
            if total == AUTO_SIZE or smoke and total == sizes[-1]:
                auto = run_collector(work, server.url, total // REPEATS, REPEATS, PARALLEL, tag=f"n{total}")
                figures.append(
                    Figure(
                        NAME,
                        f"{total:,} rollouts, --processes auto",
                        "peak RSS, every process added",
                        round(auto.peak_rss_sum_mb, 1),
                        "MB",
                        command=shell(auto.measured.command),
                        note=f"{auto.processes} process(es): {auto.stats['peak_rss_mb']}",
                    )
                )
            (work / f"n{total}" / "prompts.jsonl").unlink()
    smallest = min(peaks)
    for total in sorted(peaks):
        if total == smallest:
            continue
        growth = peaks[total] - peaks[smallest]
        figures.append(
            Figure(
                NAME,
                f"{smallest:,} -> {total:,} rollouts",
                "peak RSS growth",
                round(growth, 1),
                "MB",
                target=("<=", FLAT_MB),
                command="python bench/collector_memory.py",
            )
        )
    return figures


def main() -> None:
    sizes = tuple(int(a) for a in sys.argv[1:] if not a.startswith("--"))
    print_figures(run("--smoke" in sys.argv, sizes or None, "--separate" in sys.argv))


if __name__ == "__main__":
    main()
