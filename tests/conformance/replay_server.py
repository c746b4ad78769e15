"""A loopback HTTP server that answers with the conformance fixtures: POST /<server>/<case>/<any path> gets that
fixture's status, headers and body, exactly as the real server sends them. It counts the requests per case and
keeps the last request body, so a test can see whether the collector asked again and what it sent.

    python replay_server.py --fixtures DIR      (prints "listening on http://127.0.0.1:PORT"; stops when stdin closes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from aiohttp import web


def make_app(fixtures: Path) -> web.Application:
    counts: dict[str, int] = {}
    last: dict[str, object] = {}

    async def replay(request: web.Request) -> web.Response:
        key = f"{request.match_info['server']}/{request.match_info['case']}"
        path = fixtures / f"{key}.json"
        if not path.is_file():
            return web.json_response({"error": {"message": f"no fixture {key}"}}, status=404)
        counts[key] = counts.get(key, 0) + 1
        raw = await request.read()
        last[key] = json.loads(raw) if raw else None
        fixture = json.loads(path.read_text())
        headers = dict(fixture.get("headers") or {})
        if "body_text" in fixture:
            text = fixture["body_text"]
            headers.setdefault("Content-Type", "text/event-stream")
        else:
            text = json.dumps(fixture["body"])
            headers.setdefault("Content-Type", "application/json")
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        return web.Response(status=fixture["http_status"], text=text, headers=headers)

    async def count(request: web.Request) -> web.Response:
        key = f"{request.match_info['server']}/{request.match_info['case']}"
        return web.json_response({"requests": counts.get(key, 0), "last_body": last.get(key)})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/_count/{server}/{case}", count)
    app.router.add_post("/{server}/{case}/{tail:.*}", replay)
    return app


async def serve(fixtures: Path, port: int) -> None:
    runner = web.AppRunner(make_app(fixtures), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"listening on http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    asyncio.run(serve(options.fixtures, options.port))
