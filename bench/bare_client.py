#!/usr/bin/env python3
"""The ceiling: a bare aiohttp client loop, the least a Python process can do per request.

One ClientSession with the collector's connector settings, the same event loop (uvloop when installed),
PARALLEL workers each POSTing the same pre-encoded chat body, reading the reply and decoding it with orjson,
until TOTAL requests are done. No verifier, no records, no files. Prints one JSON line:
{"requests": N, "wall_s": seconds spent in the loop, "requests_per_s": ...}.

    python bench/bare_client.py URL TOTAL PARALLEL [--gc-threshold N] [--bodies FILE]

`--bodies FILE` (JSONL, one chat body a line) sends those bodies, in order, instead of one fixed body: against a
real model server the loop then asks for exactly the generations the collector asks for (bench/vllm_server.py).

`--gc-threshold N` sets Python's generation-0 GC threshold as the collector does while collecting
(rollout_pipeline.collect.run_loop.GC_YOUNG_THRESHOLD); without it the loop runs with Python's default (700).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

import aiohttp
import orjson

BODY = orjson.dumps(
    {
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "model": "instant",
        "temperature": 0.8,
        "top_p": 0.95,
        "max_tokens": 512,
    }
)


async def run(url: str, total: int, parallel: int, bodies: list[bytes] | None = None) -> dict:
    connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0)
    headers = {"Content-Type": "application/json"}
    remaining = total

    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                body = BODY if bodies is None else bodies[total - remaining - 1]
                async with session.post(url, data=body, headers=headers) as reply:
                    orjson.loads(await reply.read())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        wall = time.perf_counter() - started
    return {"requests": total, "wall_s": round(wall, 4), "requests_per_s": round(total / wall, 1)}


def main() -> None:
    url, total, parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if "--gc-threshold" in sys.argv:
        gc.set_threshold(int(sys.argv[sys.argv.index("--gc-threshold") + 1]), *gc.get_threshold()[1:])
    bodies = None
    if "--bodies" in sys.argv:
        with open(sys.argv[sys.argv.index("--bodies") + 1], "rb") as handle:
            bodies = [line.rstrip(b"\n") for line in handle if line.strip()]
    try:
        import uvloop

        result = uvloop.run(run(url + "/v1/chat/completions", total, parallel, bodies))
    except ImportError:
        result = asyncio.run(run(url + "/v1/chat/completions", total, parallel, bodies))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
