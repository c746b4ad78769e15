"""Fault and latency injection for the embedded server (tests and benchmarks; all off by default).

Each generation request draws at most one fault from a seeded RNG. Kinds:

    500            HTTP 500, OpenAI-style JSON error
    502, 503       HTTP 502 / 503 with an HTML body (what a proxy or load balancer sends)
    429            HTTP 429 with `Retry-After: <seconds>` (and `retry-after-ms`)
    429-date       HTTP 429 with `Retry-After` as an HTTP date
    reset          headers and half the body, then a TCP reset
    hang           no answer for `hang_s` seconds (then the normal answer, if anyone still listens)
    trickle        a 200 whose body arrives in small pieces spread over `hang_s` seconds
    malformed      a 200 whose body is cut-off JSON
    missing-fields a 200 with valid JSON that lacks the expected fields

Replies shaped like real servers' (tests/conformance/fixtures cites the source of each shape):

    abort          chat: vLLM/SGLang's finish_reason "abort" with half the text; Responses: status "cancelled"
    context-length chat/Responses: vLLM's HTTP 400 "maximum context length" body; /run: NeMo Gym's vllm_model
                   reply to an over-long prompt (200, status incomplete, usage null, empty message)
    tool-call      chat: content null and a tool_calls entry (finish_reason "tool_calls"); Responses and /run:
                   the output ends in a function_call item
    quota          HTTP 429 with OpenAI's insufficient_quota body (not transient)
    ng-transient   /run: NeMo Gym 0.7.0's `_ng_failure_class: transient` with reward 0 and its failure fields
                   (`_ng_failure_type`, `_ng_failure_message`, `_ng_failure_http_status`)
    ng-mask        /run: NeMo Gym 0.7.0's judge failsafe: `mask_sample: true`, `failure_kind: judge_failed`,
                   `failure_reason`, `instance_config.mask_sample`, reward 0
    ng-verify-mask /verify: the same masked reply from a resources server, with `reward_components` (only this
                   kind is drawn on /verify, and only when it is on)
    refusal        chat: OpenAI's refusal (content null, message.refusal set): a finished answer, scored

Degenerate generations, finished and scored, that the rollout health checks (stages/health.py) find:

    empty          chat and Responses: an empty answer with zero completion tokens
    repetition     chat and Responses: one phrase over and over, cut off at the length limit

`--fail-rate R` spreads R evenly over the classic mix: 500, 429, reset, hang, malformed.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import socket
import struct
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from rollout_pipeline.errors import UserError
from rollout_pipeline.reference.openai_api import error_body

DEGENERATE_KINDS = ("empty", "repetition")  # finished, scored replies the rollout health checks find
FAULT_KINDS = (
    "500",
    "502",
    "503",
    "429",
    "429-date",
    "reset",
    "hang",
    "trickle",
    "malformed",
    "missing-fields",
    "abort",
    "context-length",
    "tool-call",
    "quota",
    "ng-transient",
    "ng-mask",
    "ng-verify-mask",
    "refusal",
    *DEGENERATE_KINDS,
)
MIXED_KINDS = ("500", "429", "reset", "hang", "malformed")
FAULT_HELP = {
    "500": "HTTP 500 with a JSON error",
    "502": "HTTP 502 with an HTML body",
    "503": "HTTP 503 with an HTML body",
    "429": "HTTP 429 with Retry-After in seconds (--retry-after)",
    "429-date": "HTTP 429 with Retry-After as an HTTP date",
    "reset": "a TCP reset halfway through the body",
    "hang": "no answer for --hang-s seconds",
    "trickle": "a 200 body sent in small pieces over --hang-s seconds",
    "malformed": "a 200 with cut-off JSON",
    "missing-fields": "a 200 with valid JSON lacking the expected fields",
    "abort": "vLLM/SGLang's finish_reason abort (chat) or status cancelled (Responses)",
    "context-length": "vLLM's 400 for a prompt over the context (chat, Responses); NeMo Gym's 200 incomplete (/run)",
    "tool-call": "a turn that ends in a tool call",
    "quota": "HTTP 429 insufficient_quota (OpenAI)",
    "ng-transient": "/run: NeMo Gym failure class transient",
    "ng-mask": "/run: NeMo Gym mask_sample (failure_kind judge_failed)",
    "ng-verify-mask": "/verify: NeMo Gym mask_sample (failure_kind judge_failed) with reward_components",
    "refusal": "chat: an OpenAI-style refusal (content null, message.refusal)",
    "empty": "an empty answer with zero completion tokens (chat, Responses)",
    "repetition": "one phrase repeated until the length limit cuts it off (chat, Responses)",
}
_REPEATED = "so the answer is the answer is".split()
_LENGTH_KEYS = ("max_output_tokens", "max_completion_tokens", "max_tokens")
_CONTEXT_MESSAGE = (
    "This model's maximum context length is 2048 tokens. However, your request has 4101 input tokens. "
    "Please reduce the length of the input messages. (parameter=input_tokens, value=4101)"
)
_TOOL_CALL = {
    "id": "call-reference-0",
    "type": "function",
    "function": {"name": "calculator", "arguments": '{"expression": "2 + 2"}'},
}

# NeMo Gym 0.7.0's shapes (its nemo_gym/judge.py; tests/conformance/fixtures/nemo_gym/*_070.json cite it): the judge failsafe's
# masked reply, and a failure row's fields.
_NG_JUDGE_FAILED = {
    "mask_sample": True,
    "failure_kind": "judge_failed",
    "failure_reason": "JudgeError: ClientResponseError: 500, message='Internal Server Error'",
    "instance_config": {"mask_sample": True},
    "_ng_failure_class": "judge_failed",
    "_ng_failure_judge_error": "ClientResponseError: 500, message='Internal Server Error'",
}
_NG_TRANSIENT = {
    "_ng_failure_class": "transient",
    "_ng_failure_type": "ClientResponseError",
    "_ng_failure_message": "503, message='Service Unavailable'",
    "_ng_failure_http_status": 503,
}

_HTML = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def format_retry_after(seconds: float) -> str:
    """HTTP wants integer seconds; fractional values are a test knob and are written as such."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


@dataclass
class FaultPlan:
    rates: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    hang_s: float = 30.0
    retry_after: float = 1.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            if kind not in FAULT_KINDS:
                raise UserError(f"unknown fault kind {kind!r}; kinds: {', '.join(FAULT_KINDS)}")
            if not 0.0 <= rate <= 1.0:
                raise UserError(f"fault rate for {kind} must be in [0, 1], got {rate}")
        total = sum(self.rates.values())
        if total > 1.0 + 1e-9:
            raise UserError(f"fault rates add up to {total:g}; they must add up to at most 1")
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.hang_s < 0 or self.retry_after < 0:
            raise UserError("--latency-ms, --jitter-ms, --hang-s and --retry-after must be >= 0")
        self._rng = random.Random(self.seed)
        cumulative, mass = [], 0.0
        for kind in FAULT_KINDS:
            if self.rates.get(kind, 0.0) > 0:
                mass += self.rates[kind]
                cumulative.append((mass, kind))
        self._cumulative = cumulative

    @classmethod
    def from_flags(cls, fail_rate: float, per_kind: dict[str, float], **kwargs) -> FaultPlan:
        if not 0.0 <= fail_rate <= 1.0:
            raise UserError(f"--fail-rate must be in [0, 1], got {fail_rate}")
        rates = {k: v for k, v in per_kind.items() if v}
        for kind in MIXED_KINDS:
            if fail_rate:
                rates[kind] = rates.get(kind, 0.0) + fail_rate / len(MIXED_KINDS)
        return cls(rates, **kwargs)

    @property
    def on_verify(self) -> bool:
        """Whether /verify draws faults: only for its own kind, so every other plan leaves /verify alone."""
        return self.rates.get("ng-verify-mask", 0.0) > 0

    @property
    def active(self) -> bool:
        return bool(self._cumulative) or self.latency_ms > 0 or self.jitter_ms > 0

    def draw(self) -> str | None:
        """The fault for this request, or None."""
        if not self._cumulative:
            return None
        u = self._rng.random()
        for bound, kind in self._cumulative:
            if u < bound:
                return kind
        return None

    async def delay(self) -> None:
        """Injected latency: latency_ms +- jitter_ms (uniform), never negative."""
        if self.latency_ms <= 0 and self.jitter_ms <= 0:
            return
        ms = self.latency_ms + self._rng.uniform(-self.jitter_ms, self.jitter_ms)
        if ms > 0:
            await asyncio.sleep(ms / 1000.0)


def _reset(request: web.Request) -> None:
    """Abort with RST (SO_LINGER 0) rather than a clean FIN, like a crashed upstream."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def respond_with_fault(
    kind: str, request: web.Request, plan: FaultPlan, good_body: bytes, object_name: str
) -> web.StreamResponse | None:
    """Send the fault's response. Returns None for `hang`: the caller then answers normally."""
    if kind == "500":
        body = error_body("injected fault: internal server error", None, "injected_fault", "server_error")
        return web.Response(status=500, body=orjson.dumps(body), content_type="application/json")
    if kind in ("502", "503"):
        reason = "Bad Gateway" if kind == "502" else "Service Temporarily Unavailable"
        return web.Response(status=int(kind), text=_HTML.format(code=kind, reason=reason), content_type="text/html")
    if kind in ("429", "429-date"):
        if kind == "429":
            headers = {
                "Retry-After": format_retry_after(plan.retry_after),
                "retry-after-ms": str(int(plan.retry_after * 1000)),
            }
        else:
            headers = {"Retry-After": email.utils.formatdate(time.time() + plan.retry_after, usegmt=True)}
        body = error_body("injected fault: rate limit reached, retry later", None, "rate_limit_exceeded", "requests")
        return web.Response(status=429, body=orjson.dumps(body), content_type="application/json", headers=headers)
    if kind == "hang":
        await asyncio.sleep(plan.hang_s)
        return None
    if kind == "malformed":
        return web.Response(status=200, body=good_body[: max(1, len(good_body) // 2)], content_type="application/json")
    if kind == "missing-fields":
        body = orjson.dumps({"id": "fault-missing-fields", "object": object_name})
        return web.Response(status=200, body=body, content_type="application/json")
    if kind in ("reset", "trickle"):
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = len(good_body)
        await response.prepare(request)
        try:
            if kind == "reset":
                await response.write(good_body[: len(good_body) // 2])
                _reset(request)
            else:
                pieces = [good_body[i : i + 16] for i in range(0, len(good_body), 16)]
                pause = plan.hang_s / max(1, len(pieces))
                for piece in pieces:
                    await response.write(piece)
                    await asyncio.sleep(pause)
                await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client gave up, which is the point
        return response
    if kind in DEGENERATE_KINDS and object_name in ("chat.completion", "response"):
        asked = orjson.loads(await request.read())  # aiohttp keeps the body it read
        limit = next((asked[key] for key in _LENGTH_KEYS if isinstance(asked.get(key), int)), None)
        body = _degenerate(kind, orjson.loads(good_body), object_name, limit)
        return web.Response(status=200, body=orjson.dumps(body), content_type="application/json")
    shaped = _real_server_shape(kind, orjson.loads(good_body), object_name)
    if shaped is not None:
        status, body = shaped
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
    raise ValueError(f"unknown fault kind {kind!r}")


def _items_before_answer(response: dict) -> list:
    """The output items that are not the final message (reasoning, earlier calls)."""
    return [item for item in response.get("output") or [] if item.get("type") != "message"]


def _real_server_shape(kind: str, good: dict, object_name: str) -> tuple[int, dict] | None:
    """(status, body) of a reply shaped like a real server's, made from the good reply; None for other kinds."""
    if kind == "quota":
        return 429, error_body(
            "You exceeded your current quota, please check your plan and billing details.",
            None,
            "insufficient_quota",
            "insufficient_quota",
        )
    if kind == "context-length" and object_name != "run":
        return 400, {
            "error": {"message": _CONTEXT_MESSAGE, "type": "BadRequestError", "param": "input_tokens", "code": 400}
        }
    if object_name == "chat.completion" and kind in ("abort", "tool-call", "refusal"):
        for choice in good["choices"]:
            if kind == "refusal":
                choice["message"].update(content=None, refusal="I'm sorry, I can't help with that.")
            elif kind == "abort":
                content = choice["message"]["content"] or ""
                choice["message"]["content"] = content[: len(content) // 2]
                choice["finish_reason"] = "abort"
            else:
                choice["message"].update(content=None, tool_calls=[_TOOL_CALL])
                choice["finish_reason"] = "tool_calls"
        return 200, good
    response = good.get("response", good) if object_name == "run" else good
    if object_name in ("response", "run") and kind == "abort":
        response["status"] = "cancelled"
        return 200, good
    if object_name in ("response", "run") and kind == "tool-call":
        response["output"] = _items_before_answer(response) + [
            {
                "type": "function_call",
                "id": "fc-reference-0",
                "call_id": _TOOL_CALL["id"],
                "status": "completed",
                "name": _TOOL_CALL["function"]["name"],
                "arguments": _TOOL_CALL["function"]["arguments"],
            }
        ]
        return 200, good
    if object_name == "run" and kind == "context-length":
        response.update(
            status="incomplete",
            incomplete_details={"reason": "max_output_tokens"},
            usage=None,
            output=[
                {
                    "type": "message",
                    "id": "msg-empty",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "", "annotations": []}],
                }
            ],
        )
        return 200, {**good, "reward": 0.0}
    if object_name == "run" and kind == "ng-transient":
        return 200, {**good, "reward": 0.0, **_NG_TRANSIENT}
    if (object_name, kind) in (("run", "ng-mask"), ("verify", "ng-verify-mask")):
        components = {"reward_components": {"correct": 0.0, "format": 1.0}} if object_name == "verify" else {}
        return 200, {**good, "reward": 0.0, **components, **_NG_JUDGE_FAILED}
    shaped = ("abort", "context-length", "tool-call", "ng-transient", "ng-mask", "ng-verify-mask", "refusal")
    if kind in shaped or kind in DEGENERATE_KINDS:
        return 200, good  # no such shape on this endpoint: the normal reply
    return None


def _degenerate(kind: str, good: dict, object_name: str, limit: int | None) -> dict:
    """The good reply with its answer replaced by nothing (`empty`) or a repetition that runs until the request's
    length limit (`limit` tokens, a word each; 280 without one) cuts it off (`repetition`)."""
    tokens = 0 if kind == "empty" else limit or 280
    text = " ".join(_REPEATED[i % len(_REPEATED)] for i in range(tokens))
    if object_name == "chat.completion":
        for choice in good["choices"]:
            choice["message"]["content"] = text
            choice["finish_reason"] = "stop" if kind == "empty" else "length"
        usage = good["usage"]
        usage.update(completion_tokens=tokens, total_tokens=usage["prompt_tokens"] + tokens)
        return good
    for item in good["output"]:
        for part in item.get("content") or []:
            if part.get("type") == "output_text":
                part["text"] = text
    if kind == "repetition":
        good.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    usage = good["usage"]
    usage.update(output_tokens=tokens, total_tokens=usage["input_tokens"] + tokens)
    return good
