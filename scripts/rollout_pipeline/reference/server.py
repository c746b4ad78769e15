"""The embedded default server: its settings, its aiohttp application, and serving until a signal or the parent ends.

An offline stand-in for a model server (OpenAI chat/Responses APIs and NeMo Gym /run and /verify: routes.py),
backed by `policy.py` (a sampler over candidate answers to arithmetic prompts, not a language model), so the whole
pipeline and its tests run over real sockets without a GPU or a network.

Binds 127.0.0.1 unless --host says otherwise; `--port 0` picks a free port. The first stdout
line is `listening on http://HOST:PORT` (flushed); nothing else goes to stdout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field

from aiohttp import web

from rollout_pipeline.errors import UserError
from rollout_pipeline.reference.api import ReferenceApi
from rollout_pipeline.reference.faults import FaultPlan
from rollout_pipeline.reference.routes import ReferenceServer

DEFAULT_HOST = "127.0.0.1"


@dataclass
class ServerConfig:
    """What cli/serve's flags set: where to listen, what to serve, the faults to inject, when to stop."""

    host: str = DEFAULT_HOST
    port: int = 0
    checkpoint_dir: str | None = None
    request_log: str | None = None
    verifier: str = "math"
    faults: FaultPlan = field(default_factory=FaultPlan)
    exit_with_parent: bool = False
    shutdown_timeout: float = 1.0
    reasoning: bool = False  # replies carry the policy's working as reasoning (vLLM's message.reasoning)


def build_app(config: ServerConfig) -> web.Application:
    """The aiohttp application (no middlewares: they cost per request)."""
    server = ReferenceServer(
        ReferenceApi(config.checkpoint_dir, config.verifier, config.reasoning), config.faults, config.request_log
    )
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(server.routes())
    app["server"] = server
    if server.log is not None:

        async def close_log(app: web.Application) -> None:
            server.log.close()

        app.on_cleanup.append(close_log)
    return app


def _watch_parent(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> asyncio.Task:
    """Stop when the parent goes away: EOF on our stdin pipe (immediate) or a changed parent pid (polled)."""
    parent = os.getppid()

    def on_stdin() -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    try:
        loop.add_reader(sys.stdin.fileno(), on_stdin)
    except (OSError, ValueError, NotImplementedError):
        pass  # not a pipe we can watch; the pid poll still works

    async def poll() -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                stop.set()
            await asyncio.sleep(0.5)

    return loop.create_task(poll())


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(config: ServerConfig) -> None:
    """Run until SIGINT/SIGTERM (or the parent's death with exit_with_parent)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    runner = web.AppRunner(
        build_app(config), access_log=None, handle_signals=False, shutdown_timeout=config.shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=2048, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    port = runner.addresses[0][1]
    print(f"listening on {_url(config.host, port)}", flush=True)
    watcher = _watch_parent(loop, stop) if config.exit_with_parent else None
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()


def run(config: ServerConfig) -> None:
    """Serve on uvloop when it is installed (it roughly doubles throughput), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
