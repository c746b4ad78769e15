#!/usr/bin/env python3
"""An agent that answers instantly: the fixed reply of a chat completion (or Responses / /run reply).

Benchmarks run it in its own process, so what they measure is the client. `--latency-ms` adds a fixed delay
(for Little's-law efficiency). Prints `listening on http://127.0.0.1:PORT` like the embedded server.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

CHAT = (b'{"id":"c","object":"chat.completion","model":"instant","choices":[{"index":0,"finish_reason":"stop",'
        b'"message":{"role":"assistant","content":"2 + 2 = 4. The answer is \\\\boxed{4}."}}],'
        b'"usage":{"prompt_tokens":12,"completion_tokens":14,"total_tokens":26}}')


def build_app(latency_s: float) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        await request.read()
        if latency_s:
            await asyncio.sleep(latency_s)
        return web.Response(body=CHAT, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    async def serve() -> None:
        runner = web.AppRunner(build_app(args.latency_ms / 1000), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        # Exit when the parent closes our stdin, so no benchmark leaves a server behind.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
