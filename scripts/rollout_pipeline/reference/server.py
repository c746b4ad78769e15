"""The embedded default server: OpenAI chat/Responses APIs and NeMo Gym /run and /verify over the reference policy.

It is an offline stand-in for a model server, backed by `policy.py` (a sampler over
candidate answers to arithmetic prompts, not a language model), so the whole pipeline and
its tests run over real sockets without a GPU or a network.

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

Binds 127.0.0.1 unless --host says otherwise; `--port 0` picks a free port. The first stdout
line is `listening on http://HOST:PORT` (flushed); nothing else goes to stdout.
Latency and faults (see faults.py) apply to the generation endpoints only: /v1/chat/completions,
/v1/responses and /run.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from rollout_pipeline.errors import UserError
from rollout_pipeline.reference import arithmetic, policy, tokens
from rollout_pipeline.reference.checkpoints import CheckpointError, CheckpointStore, ModelNotFound
from rollout_pipeline.reference.faults import FaultPlan, respond_with_fault
from rollout_pipeline.reference.openai_api import (
    RequestError,
    Sampling,
    chat_completion,
    error_body,
    new_id,
    parse_chat_request,
    parse_responses_request,
    response_object,
    response_output_text,
    seeded_id,
)
from rollout_pipeline.reference.tokens import count_message_tokens
from rollout_pipeline.rows import input_messages

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MODEL = "reference"
_JSON = "application/json"


@dataclass
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = 0
    checkpoint_dir: str | None = None
    request_log: str | None = None
    verifier: str = "math"
    faults: FaultPlan = field(default_factory=FaultPlan)
    exit_with_parent: bool = False
    shutdown_timeout: float = 1.0
    reasoning: bool = False  # replies carry the policy's working as reasoning (vLLM's message.reasoning)


def reasoning_text(messages: list) -> str:
    """What a reasoning model would think before answering: the expression to work out, and that it will."""
    expression = arithmetic.find_expression(policy.prompt_text(messages))
    if expression is None:
        return "There is no arithmetic expression here, so there is nothing to compute."
    return f"I need to compute {arithmetic.format_expression(expression)}, one operation at a time."


def prompt_sha(source: Any) -> str | None:
    """Short sha256 of the canonical input messages; the same as rows.prompt_id's fallback hash."""
    try:
        canonical = orjson.dumps(input_messages(source), option=orjson.OPT_SORT_KEYS)
    except (ValueError, TypeError):
        return None
    return hashlib.sha256(canonical).hexdigest()[:16]


class RequestLog:
    """One JSON line per handled POST request, appended and flushed so tests can read it at once."""

    def __init__(self, path: str):
        self._handle = open(path, "ab")

    def write(self, entry: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(entry) + b"\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=_JSON)


class ReferenceServer:
    """Request handling state: checkpoints, stats, the request log and the fault plan."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.store = CheckpointStore(config.checkpoint_dir)
        self.plan = config.faults
        self.reasoning = config.reasoning
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.started = time.time()
        self.log = RequestLog(config.request_log) if config.request_log else None
        self.unpaused = asyncio.Event()
        self.unpaused.set()
        self.held = 0

    # ---- generation ---------------------------------------------------------------------------

    def _checkpoint(self, model: str, param: str = "model"):
        try:
            return self.store.get(model)
        except ModelNotFound:
            raise RequestError(
                f"The model '{model}' does not exist (use 'reference' or a checkpoint file "
                "inside the server's --checkpoint-dir)",
                param,
                "model_not_found",
                404,
            ) from None
        except CheckpointError as exc:
            raise RequestError(
                f"checkpoint for model '{model}' is invalid: {exc}", param, "invalid_checkpoint", 500, "server_error"
            ) from None

    def _generate(self, sampling: Sampling) -> tuple[list[policy.Sample], int]:
        checkpoint = self._checkpoint(sampling.model)
        samples = policy.sample(
            policy.prompt_text(sampling.messages),
            checkpoint,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            n=sampling.n,
            seed=sampling.seed,
            max_tokens=sampling.max_tokens,
        )
        return samples, count_message_tokens(m["content"] for m in sampling.messages)

    def _response(self, sampling: Sampling, metadata: Any) -> dict[str, Any]:
        (one,), input_tokens = self._generate(sampling)
        if sampling.seed is None:
            request_id = new_id("resp_")
        else:
            request_id = seeded_id(
                "resp_",
                sampling.model,
                sampling.seed,
                sampling.temperature,
                sampling.top_p,
                sampling.max_tokens,
                orjson.dumps(sampling.messages),
            )
        response = response_object(
            request_id, sampling, one.text, one.truncated, input_tokens, one.output_tokens, metadata
        )
        if self.reasoning:
            response["output"].insert(
                0,
                {
                    "type": "reasoning",
                    "id": "rs_" + request_id.removeprefix("resp_"),
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": reasoning_text(sampling.messages)}],
                },
            )
        return response

    def chat(self, body: dict) -> tuple[dict, dict]:
        if body.get("stream"):
            raise RequestError(
                "streaming is not supported by the reference server; omit 'stream'", "stream", "unsupported_value"
            )
        sampling = parse_chat_request(body, DEFAULT_MODEL)
        samples, input_tokens = self._generate(sampling)
        if sampling.seed is None:
            request_id = new_id("chatcmpl-")
        else:
            request_id = seeded_id(
                "chatcmpl-",
                sampling.model,
                sampling.seed,
                sampling.temperature,
                sampling.top_p,
                sampling.max_tokens,
                sampling.n,
                orjson.dumps(sampling.messages),
            )
        payload = chat_completion(
            request_id,
            sampling.model,
            [(s.text, s.truncated) for s in samples],
            input_tokens,
            sum(s.output_tokens for s in samples),
        )
        if body.get("logprobs") is True or body.get("return_token_ids") is True:
            self._token_data(payload, body, sampling, samples)
        if self.reasoning:
            for choice in payload["choices"]:
                choice["message"]["reasoning"] = reasoning_text(sampling.messages)
        return payload, {"model": sampling.model, "input": body.get("messages"), "seed": sampling.seed, "n": sampling.n}

    def _token_data(self, payload: dict, body: dict, sampling: Sampling, samples: list) -> None:
        """vLLM's shapes: per-token `logprobs.content` on each choice; with `return_token_ids`, `token_ids` on each
        choice and `prompt_token_ids` on the reply; with `return_tokens_as_token_ids`, each logprobs token is written
        `token_id:<id>` (NeMo Gym's vllm_model reads token ids from there). Honest for this policy: an answer is drawn
        whole, so its first token carries the answer's log-probability and the rest are certain (log-probability 0)."""
        probabilities = policy.candidate_probabilities(
            policy.prompt_text(sampling.messages),
            self._checkpoint(sampling.model),
            sampling.temperature,
            sampling.top_p,
        )
        as_ids = body.get("return_tokens_as_token_ids") is True
        for choice, sample in zip(payload["choices"], samples):
            generated = tokens.tokens(sample.text)
            if body.get("logprobs") is True:
                first = math.log(probabilities[sample.kind]) if probabilities.get(sample.kind) else 0.0
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": f"token_id:{tokens.token_id(token)}" if as_ids else token,
                            "logprob": first if i == 0 else 0.0,
                            "bytes": list(token.encode()),
                            "top_logprobs": [],
                        }
                        for i, token in enumerate(generated)
                    ]
                }
            if body.get("return_token_ids") is True:
                choice["token_ids"] = [tokens.token_id(token) for token in generated]
        if body.get("return_token_ids") is True:
            payload["prompt_token_ids"] = [
                tokens.token_id(token) for m in sampling.messages for token in tokens.tokens(m["content"])
            ]

    def responses(self, body: dict) -> tuple[dict, dict]:
        if body.get("stream"):
            raise RequestError(
                "streaming is not supported by the reference server; omit 'stream'", "stream", "unsupported_value"
            )
        sampling = parse_responses_request(body, DEFAULT_MODEL)
        payload = self._response(sampling, body.get("metadata"))
        return payload, {"model": sampling.model, "input": body.get("input"), "seed": sampling.seed, "n": 1}

    def _row_params(self, body: dict) -> dict:
        params = body.get("responses_create_params")
        if not isinstance(params, dict):
            raise RequestError(
                "'responses_create_params' (an object with 'input') is required",
                "responses_create_params",
                "missing_required_parameter",
            )
        return params

    def _verify(self, response: Any, row: dict) -> dict[str, Any]:
        # Imported on the first /run or /verify: serving completions alone never loads (nor depends on) the verifiers.
        from rollout_pipeline.verify.verifiers import is_truncated, verify

        try:
            return verify(self.config.verifier, response_output_text(response), row, is_truncated(response))
        except UserError as exc:
            raise RequestError(str(exc), "expected_answer", "missing_required_parameter") from None

    def run(self, body: dict) -> tuple[dict, dict]:
        params = self._row_params(body)
        try:
            sampling = parse_responses_request(params, DEFAULT_MODEL)
        except RequestError as exc:
            if exc.param:  # name the field as it appears in the row
                exc.message = exc.message.replace(f"'{exc.param}'", f"'responses_create_params.{exc.param}'", 1)
                exc.param = f"responses_create_params.{exc.param}"
            raise
        if body.get("expected_answer") is None:
            raise RequestError(
                "row has no 'expected_answer'; the verifier needs it to score the output",
                "expected_answer",
                "missing_required_parameter",
            )
        response = self._response(sampling, params.get("metadata"))
        scored = self._verify(response, body)
        payload = {**body, "response": response, **scored}
        return payload, {"model": sampling.model, "input": params.get("input"), "seed": sampling.seed, "n": 1}

    def verify(self, body: dict) -> tuple[dict, dict]:
        params = self._row_params(body)
        if "response" not in body:
            raise RequestError(
                "'response' (the Responses object to score) is required", "response", "missing_required_parameter"
            )
        scored = self._verify(body["response"], body)
        return {**body, **scored}, {"model": params.get("model"), "input": params.get("input"), "seed": None, "n": None}

    # ---- HTTP plumbing ------------------------------------------------------------------------

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
                for name in self.store.list_models()
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
            post("/v1/chat/completions", self.chat, "chat.completion"),
            post("/v1/responses", self.responses, "response"),
            post("/run", self.run, "run"),
            post("/verify", self.verify, "verify", faultable=False),
            web.get("/v1/models", models),
            web.post("/pause", pause),
            web.post("/resume", resume),
            web.get("/is_paused", is_paused),
            web.get("/health", health),
            web.get("/stats", stats),
        ]


def build_app(config: ServerConfig) -> web.Application:
    """The aiohttp application (no middlewares: they cost per request)."""
    server = ReferenceServer(config)
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
