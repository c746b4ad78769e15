"""The reference server over HTTP: its routes, and around each API call the pause, counts, faults and log.

Endpoints:
    POST /v1/chat/completions   messages, model, temperature, top_p, max_tokens | max_completion_tokens, n, seed
    POST /v1/responses          input, instructions, model, temperature, top_p, max_output_tokens, seed | metadata.seed
    POST /run                   NeMo Gym agent: a dataset row in; the row + response + reward (+ extracted_answer) out
    POST /verify                NeMo Gym resources server: {responses_create_params, response, ...row} + reward out
    GET  /v1/models             'reference' plus the *.json files of --checkpoint-dir
    POST /pause                 hold every generation request that arrives until POST /resume (vLLM's
                                 dev-mode /pause with mode=keep; the ones already answering finish)
    POST /resume                release them; GET /is_paused says {"is_paused": bool, "held": requests waiting}
    GET  /health                {"status": "ok"}
    GET  /stats                 {"requests": {path: count}, "statuses": {path: {status: count}}, "total",
                                 "uptime_s", "event_loop"}; a status is the HTTP code ("200", "400", ...) or
                                 "fault:<kind>" for an injected fault. /stats does not count itself.

With --request-log PATH every POST appends {"path", "model", "prompt_sha", "seed", "n", "status"},
where prompt_sha is the first 16 hex digits of sha256 over the canonical input messages (the same
hash rows.prompt_id falls back to), so tests can tell which prompts reached which server.

Latency and faults (see faults.py) apply to the generation endpoints only: /v1/chat/completions,
/v1/responses and /run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from rollout_pipeline.reference.api import ReferenceApi
from rollout_pipeline.reference.faults import FaultPlan, respond_with_fault
from rollout_pipeline.reference.openai_api import RequestError, error_body
from rollout_pipeline.reference.request_log import RequestLog, prompt_sha

_JSON = "application/json"


def _json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=_JSON)


class ReferenceServer:
    """Request handling state: the API, stats, the request log, the fault plan and the pause."""

    def __init__(self, api: ReferenceApi, plan: FaultPlan, request_log: str | None):
        self.api = api
        self.plan = plan
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.started = time.time()
        self.log = RequestLog(request_log) if request_log else None
        self.unpaused = asyncio.Event()
        self.unpaused.set()
        self.held = 0

    def _count(self, path: str, status: str) -> None:
        self.counts[path][status] += 1

    async def handle(
        self,
        request: web.Request,
        path: str,
        produce: Callable[[dict], tuple[dict, dict]],
        object_name: str,
        faultable: bool,
    ) -> web.StreamResponse:
        info: dict[str, Any] = {}
        good: bytes | None = None
        if object_name != "verify" and not self.unpaused.is_set():
            self.held += 1
            try:
                await self.unpaused.wait()
            finally:
                self.held -= 1
        try:
            raw = await request.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise RequestError(f"request body is not valid JSON: {exc}", None, "invalid_json") from None
            if not isinstance(body, dict):
                raise RequestError("request body must be a JSON object", None, "invalid_json")
            payload, info = produce(body)
            good = orjson.dumps(payload)
            response: web.StreamResponse = web.Response(body=good, content_type=_JSON)
            status = "200"
        except RequestError as exc:
            response, status = _json_response(exc.body(), exc.status), str(exc.status)
        except Exception as exc:  # a bug must not take the server down; say what happened
            print(f"serve: error handling {path}: {exc!r}", file=sys.stderr)
            response = _json_response(error_body(f"internal error: {exc}", None, "internal_error", "server_error"), 500)
            status = "500"
        kind = None
        if good is not None and (faultable or (object_name == "verify" and self.plan.on_verify)) and self.plan.active:
            await self.plan.delay()
            kind = self.plan.draw()
            if kind is not None:
                status = f"fault:{kind}"
        # Counted before a fault plays out, so a hang or trickle shows in /stats while it lasts.
        self._count(path, status)
        if self.log is not None:
            self.log.write(
                {
                    "path": path,
                    "model": info.get("model"),
                    "prompt_sha": prompt_sha(info.get("input")),
                    "seed": info.get("seed"),
                    "n": info.get("n"),
                    "status": status,
                }
            )
        if kind is not None:
            faulted = await respond_with_fault(kind, request, self.plan, good, object_name)
            if faulted is not None:
                response = faulted
        return response

    def routes(self) -> list[web.RouteDef]:
        def post(path: str, produce, object_name: str, faultable: bool = True) -> web.RouteDef:
            async def handler(request: web.Request) -> web.StreamResponse:
                return await self.handle(request, path, produce, object_name, faultable)

            return web.post(path, handler)

        async def models(request: web.Request) -> web.Response:
            self._count("/v1/models", "200")
            data = [
                {"id": name, "object": "model", "created": 0, "owned_by": "rollout-pipeline"}
                for name in self.api.store.list_models()
            ]
            return _json_response({"object": "list", "data": data})

        async def pause(request: web.Request) -> web.Response:
            self.unpaused.clear()
            return _json_response({"status": "paused"})

        async def resume(request: web.Request) -> web.Response:
            self.unpaused.set()
            return _json_response({"status": "resumed"})

        async def is_paused(request: web.Request) -> web.Response:
            return _json_response({"is_paused": not self.unpaused.is_set(), "held": self.held})

        async def health(request: web.Request) -> web.Response:
            self._count("/health", "200")
            return _json_response({"status": "ok"})

        async def stats(request: web.Request) -> web.Response:
            statuses = {path: dict(by_status) for path, by_status in self.counts.items()}
            requests = {path: sum(by_status.values()) for path, by_status in statuses.items()}
            return _json_response(
                {
                    "requests": requests,
                    "statuses": statuses,
                    "total": sum(requests.values()),
                    "uptime_s": round(time.time() - self.started, 3),
                    "event_loop": type(asyncio.get_running_loop()).__module__,
                }
            )

        return [
            post("/v1/chat/completions", self.api.chat, "chat.completion"),
            post("/v1/responses", self.api.responses, "response"),
            post("/run", self.api.run, "run"),
            post("/verify", self.api.verify, "verify", faultable=False),
            web.get("/v1/models", models),
            web.post("/pause", pause),
            web.post("/resume", resume),
            web.get("/is_paused", is_paused),
            web.get("/health", health),
            web.get("/stats", stats),
        ]
