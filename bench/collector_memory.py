#!/usr/bin/env python3
"""Collector peak RSS against the number of rollouts (an instant server in another process).

Memory must not grow with the input: the input is streamed, live tasks are bounded, finished rollouts are
indexed by 8-byte offsets and the sorted output is written by reading them back.
Usage: python bench/collector_memory.py [ROLLOUTS ...]   (default: 1000 100000)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchlib import collect_command, instant_server, run_measured, write_params, write_prompts

REPEATS = 4


def measure(rollouts: list[int], parallel: int = 256) -> list[dict]:
    rows = []
    with instant_server() as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = write_params(work, url)
        for total in rollouts:
            prompts = write_prompts(work / f"p{total}.jsonl", total // REPEATS)
            out = work / f"o{total}.jsonl"
            run = run_measured(collect_command(params, prompts, out, REPEATS, parallel), work)
            if run.returncode != 0:
                raise SystemExit(f"collector failed:\n{run.stderr[-2000:]}")
            rows.append({"rollouts": total, "peak_rss_mb": round(run.max_rss_mb, 1), "wall_s": round(run.wall_s, 2),
                         "rollouts_per_s": round(total / run.wall_s, 1)})
            out.unlink()
    return rows


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 100000]
    rows = measure(sizes)
    for row in rows:
        print(f"{row['rollouts']:>9} rollouts: peak RSS {row['peak_rss_mb']:7.1f} MB, {row['wall_s']:7.2f} s "
              f"({row['rollouts_per_s']:.0f} rollouts/s)")
    print(f"peak RSS growth from {rows[0]['rollouts']} to {rows[-1]['rollouts']} rollouts: "
          f"{rows[-1]['peak_rss_mb'] - rows[0]['peak_rss_mb']:+.1f} MB")


if __name__ == "__main__":
    main()
