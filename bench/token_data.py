#!/usr/bin/env python3
"""Benchmark 7 — replies that carry token data: 1,000-token chat replies with vLLM's logprobs (5 alternatives
per token), token_ids and prompt_token_ids, about 330 KB each (the plain reply is 250 bytes).

The same instant server (bench/instant_server.py --reply-tokens 1000 --top-logprobs 5) serves, one after the other,
the bare aiohttp loop decoding every reply with orjson (bench/bare_client.py), and the collector's real CLI with
`token_data: ids`, which parses each reply, keeps generation_log_probs / generation_token_ids / prompt_token_ids
on the last output item, verifies the 1,000-token output and writes the record. Reported: both rates and their
ratio (target >= 0.85), and the collector's peak RSS at two run sizes (target: flat, within 10%). The server
shares the 2 cores with the client and 330 KB replies cost it real CPU, so the loop and the collector alternate
over ROUNDS rounds and the rates are the means over the rounds.

    python bench/token_data.py [--smoke]
"""

from __future__ import annotations

import sys

from benchlib import Figure, instant_server, print_figures, run_bare_client, run_collector, scratch, shell
from rollout_pipeline.collect.run_loop import GC_YOUNG_THRESHOLD

NAME = "token_data"
PARALLEL = 64
REPEATS = 4
SIZES = (1_000, 4_000)
TARGET_RATIO = 0.85
TARGET_RSS_GROWTH = 1.10
ROUNDS = 2


def run(smoke: bool = False) -> list[Figure]:
    sizes = (80, 160) if smoke else SIZES
    figures: list[Figure] = []
    agent = {"token_data": "ids"}
    with instant_server(reply_tokens=1000, top_logprobs=5) as server, scratch(NAME) as work:
        loop_rates, collector_rates = [], []
        for _ in range(1 if smoke else ROUNDS):
            bare, loop = run_bare_client(server.url, sizes[-1], PARALLEL, GC_YOUNG_THRESHOLD)
            large = run_collector(
                work, server.url, sizes[-1] // REPEATS, REPEATS, PARALLEL, agent=agent, tag=f"n{sizes[-1]}", processes=1
            )
            loop_rates.append(loop["requests_per_s"])
            collector_rates.append(large.rollouts_per_s)
        small = run_collector(
            work, server.url, sizes[0] // REPEATS, REPEATS, PARALLEL, agent=agent, tag=f"n{sizes[0]}", processes=1
        )
        loop_rate, collector_rate = sum(loop_rates) / len(loop_rates), sum(collector_rates) / len(collector_rates)
        command = shell(large.measured.command)
        figures += [
            Figure(
                NAME,
                "1,000-token replies",
                "bare loop requests/s",
                round(loop_rate, 1),
                "/s",
                command=shell(bare.command),
                note=f"{sizes[-1]:,} requests, parallelism {PARALLEL}; "
                f"rounds: {', '.join(f'{r:.0f}' for r in loop_rates)}",
            ),
            Figure(
                NAME,
                "1,000-token replies",
                "collector rollouts/s",
                round(collector_rate, 1),
                "/s",
                command=command,
                note=f"{sizes[-1]:,} rollouts, one process, token_data: ids; "
                f"rounds: {', '.join(f'{r:.0f}' for r in collector_rates)}",
            ),
            Figure(
                NAME,
                "1,000-token replies",
                "ratio collector / bare loop",
                round(collector_rate / loop_rate, 3),
                "",
                target=(">=", TARGET_RATIO),
                command="python bench/token_data.py",
            ),
            Figure(
                NAME,
                "1,000-token replies",
                f"collector peak RSS at {sizes[0]:,} rollouts",
                round(small.stats["peak_rss_mb"]["collector"], 1),
                "MB",
                command=shell(small.measured.command),
            ),
            Figure(
                NAME,
                "1,000-token replies",
                f"collector peak RSS at {sizes[-1]:,} rollouts",
                round(large.stats["peak_rss_mb"]["collector"], 1),
                "MB",
                command=command,
            ),
            Figure(
                NAME,
                "1,000-token replies",
                "peak RSS growth (large / small run)",
                round(large.stats["peak_rss_mb"]["collector"] / small.stats["peak_rss_mb"]["collector"], 3),
                "",
                target=("<=", TARGET_RSS_GROWTH),
                command="python bench/token_data.py",
            ),
        ]
    return figures


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
