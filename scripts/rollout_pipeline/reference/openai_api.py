"""OpenAI-compatible request validation and response shapes (chat completions, Responses, errors).

Validation raises `RequestError` carrying the HTTP status, the offending field (`param`) and an
OpenAI error code, so every bad request becomes
`{"error": {"message", "type": "invalid_request_error", "param", "code"}}` with status 400.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

from rollout_pipeline.rows import input_messages

MAX_N = 128  # the OpenAI API's own cap on `n`


class RequestError(Exception):
    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        type_: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.type = message, param, code, status, type_

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.param, self.code, self.type)


def error_body(
    message: str, param: str | None = None, code: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass(frozen=True)
class Sampling:
    """A validated generation request, whatever API it came from."""

    messages: list[dict[str, Any]]
    model: str
    temperature: float
    top_p: float
    max_tokens: int | None
    n: int
    seed: int | None


def _number(
    body: dict, key: str, default: float, low: float, high: float, low_open: bool = False, param: str | None = None
) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise RequestError(f"'{param or key}' must be a number, got {value!r}", param or key, "invalid_type")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise RequestError(
            f"'{param or key}' must be in {bracket}{low:g}, {high:g}], got {value!r}", param or key, "invalid_value"
        )
    return float(value)


def _integer(value: Any, param: str, minimum: int, maximum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{param}' must be an integer, got {value!r}", param, "invalid_type")
    if value < minimum:
        raise RequestError(f"'{param}' must be >= {minimum}, got {value}", param, "invalid_value")
    if maximum is not None and value > maximum:
        raise RequestError(f"'{param}' must be <= {maximum}, got {value}", param, "invalid_value")
    return value


def _seed(body: dict) -> int | None:
    """`seed`, or `metadata.seed` (Responses metadata values are strings, so '42' is accepted)."""
    if body.get("seed") is not None:
        value, param = body["seed"], "seed"
    else:
        metadata = body.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("seed") is None:
            return None
        value, param = metadata["seed"], "metadata.seed"
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise RequestError(f"'{param}' must be an integer, got {value!r}", param, "invalid_type") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{param}' must be an integer, got {value!r}", param, "invalid_type")
    return value


def _model(body: dict, default: str) -> str:
    model = body.get("model", default)
    if model is None:
        return default
    if not isinstance(model, str) or not model:
        raise RequestError(f"'model' must be a non-empty string, got {model!r}", "model", "invalid_type")
    return model


def _messages(value: Any, param: str) -> list[dict[str, Any]]:
    if value is None:
        raise RequestError(f"'{param}' is required", param, "missing_required_parameter")
    try:
        return input_messages(value)
    except ValueError as exc:
        raise RequestError(f"'{param}': {exc}", param, "invalid_value") from None


def parse_chat_request(body: dict, default_model: str = "reference") -> Sampling:
    """Validate a POST /v1/chat/completions body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        if messages is None:
            raise RequestError("'messages' is required", "messages", "missing_required_parameter")
        raise RequestError(
            "'messages' must be a non-empty list of {role, content} messages", "messages", "invalid_value"
        )
    max_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return Sampling(
        messages=_messages(messages, "messages"),
        model=_model(body, default_model),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        max_tokens=_integer(body.get(max_key), max_key, 1),
        n=_integer(body.get("n"), "n", 1, MAX_N) or 1,
        seed=_seed(body),
    )


def parse_responses_request(body: dict, default_model: str = "reference") -> Sampling:
    """Validate a POST /v1/responses body (also the `responses_create_params` of a NeMo Gym row)."""
    messages = _messages(body.get("input"), "input")
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise RequestError("'instructions' must be a string", "instructions", "invalid_type")
        messages = [{"role": "system", "content": instructions}, *messages]
    return Sampling(
        messages=messages,
        model=_model(body, default_model),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        max_tokens=_integer(body.get("max_output_tokens"), "max_output_tokens", 1),
        n=1,
        seed=_seed(body),
    )


def new_id(prefix: str) -> str:
    return f"{prefix}{os.urandom(12).hex()}"


def seeded_id(prefix: str, *parts: Any) -> str:
    """A deterministic id for seeded requests, so reproducible runs also reproduce ids."""
    return prefix + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def chat_completion(
    request_id: str,
    model: str,
    choices: list[tuple[str, bool]],
    input_tokens: int,
    output_tokens: int,
    created: int | None = None,
) -> dict[str, Any]:
    """A `chat.completion` object; `choices` are (text, truncated)."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if truncated else "stop",
            }
            for i, (text, truncated) in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
        "system_fingerprint": "reference-policy",
    }


def response_object(
    request_id: str,
    sampling: Sampling,
    text: str,
    truncated: bool,
    input_tokens: int,
    output_tokens: int,
    metadata: Any = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A Responses API `response` object with one assistant message."""
    status = "incomplete" if truncated else "completed"
    return {
        "id": request_id,
        "object": "response",
        "created_at": int(time.time()) if created is None else created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": None,
        "max_output_tokens": sampling.max_tokens,
        "model": sampling.model,
        "output": [
            {
                "type": "message",
                "id": "msg_" + request_id.removeprefix("resp_"),
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "temperature": sampling.temperature,
        "tool_choice": "auto",
        "tools": [],
        "top_p": sampling.top_p,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def response_output_text(response: Any) -> str:
    """The assistant text of a Responses object (all output_text parts of message items)."""
    if not isinstance(response, dict) or not isinstance(response.get("output"), list):
        raise RequestError("'response' must be a Responses object with an 'output' list", "response", "invalid_value")
    parts = []
    for item in response["output"]:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    parts.append(str(part.get("text", "")))
    return "".join(parts)
