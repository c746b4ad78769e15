"""One HTTP exchange with retries: exponential backoff with jitter, Retry-After, a timeout per request.

Retried: connection errors, timeouts, 429 and 5xx, and 200 replies that are not what the protocol promises.
Not retried: any other 4xx (the request itself is wrong; retrying cannot help), whose message is shown.
"""
from __future__ import annotations

import asyncio
import email.utils
import random
import time
from typing import Any, Callable

import aiohttp
import orjson

MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 300.0


class RequestFailed(Exception):
    """A rollout's request failed for good; `cause` is a short machine-readable reason."""

    def __init__(self, cause: str, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.retryable = retryable
        self.retry_after = retry_after  # the server's Retry-After, in seconds, when it sent one


def retry_after_seconds(value: str | None) -> float | None:
    """Parse Retry-After: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER_S))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER_S))


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


async def post_json(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                    timeout: aiohttp.ClientTimeout) -> tuple[Any, float]:
    """POST once; returns (decoded JSON, latency). Raises RequestFailed with a retryable flag and a cause."""
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
            raw = await resp.read()
            status = resp.status
            retry_after = resp.headers.get("Retry-After")
    except aiohttp.ConnectionTimeoutError:
        raise RequestFailed("connect_timeout", f"{url}: no connection within {timeout.sock_connect:g} s (is the host "
                            "reachable? a firewall may be dropping packets)", True) from None
    except asyncio.TimeoutError:
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
            return orjson.loads(raw), latency
        except orjson.JSONDecodeError:
            raise RequestFailed("malformed_json", f"{url}: HTTP 200 with a body that is not JSON", True) from None
    message = f"{url}: {_error_message(status, raw)}"
    if status == 429 or status >= 500:
        raise RequestFailed(f"http_{status}", message, True, retry_after_seconds(retry_after))
    raise RequestFailed(f"http_{status}", message, False)


def backoff_seconds(attempt: int, base: float, failure: RequestFailed) -> float:
    """Full-jitter exponential backoff, or the server's Retry-After when it gave one."""
    if failure.retry_after is not None:
        return failure.retry_after
    return random.uniform(0, min(MAX_BACKOFF_S, base * (2 ** attempt)))


async def with_retries(call: Callable[[], Any], max_retries: int, backoff_base_s: float,
                       on_retry: Callable[[RequestFailed], None]) -> Any:
    """Run `call` (an async callable that raises RequestFailed) with up to `max_retries` retries."""
    attempt = 0
    while True:
        try:
            return await call()
        except RequestFailed as failure:
            if not failure.retryable or attempt >= max_retries:
                raise
            on_retry(failure)
            await asyncio.sleep(backoff_seconds(attempt, backoff_base_s, failure))
            attempt += 1
