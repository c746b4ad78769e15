#!/usr/bin/env python3
"""A rate-limited chat server: it serves at most `--capacity` requests at a time, each taking `--service-ms`, and
answers 429 (OpenAI's rate_limit_exceeded body) to any request beyond that, as hosted APIs and gateways do.

    python rate_limited_server.py --capacity 16 --service-ms 20 [--retry-after S [--retry-after-every N]]

Prints `listening on http://127.0.0.1:PORT` and stops when stdin closes. GET /stats answers
{"ok": N, "rejected": N, "max_in_flight": N}: what the server saw, so a test or benchmark can check the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiohttp import web

REPLY = {
    "id": "chatcmpl-rate-limited",
    "object": "chat.completion",
    "model": "rate-limited",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "2 + 2 = 4. The answer is \\boxed{4}."},
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 14, "total_tokens": 26},
}
LIMITED = {
    "error": {
        "message": "Rate limit reached for requests. Please try again later.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def make_app(capacity: int, service_s: float, retry_after: str | None, every: int = 1) -> web.Application:
    state = {"in_flight": 0, "ok": 0, "rejected": 0, "max_in_flight": 0}
    body = json.dumps(REPLY).encode()

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        if state["in_flight"] >= capacity:
            state["rejected"] += 1
            # Retry-After on every `every`-th 429 only: gateways send it on some of their 429s, not all.
            headers = {"Retry-After": retry_after} if retry_after and state["rejected"] % every == 1 % every else {}
            return web.json_response(LIMITED, status=429, headers=headers)
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            await asyncio.sleep(service_s)
        finally:
            state["in_flight"] -= 1
        state["ok"] += 1
        return web.Response(body=body, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({k: state[k] for k in ("ok", "rejected", "max_in_flight")})

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/{tail:.*}", chat)
    return app


async def serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(
        make_app(args.capacity, args.service_ms / 1000, args.retry_after, args.retry_after_every), access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
    await site.start()
    print(f"listening on http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, required=True)
    parser.add_argument("--service-ms", type=float, default=20.0)
    parser.add_argument("--retry-after", default=None, help="a Retry-After header value for the 429s")
    parser.add_argument("--retry-after-every", type=int, default=1, help="send it on every N-th 429 only")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))
