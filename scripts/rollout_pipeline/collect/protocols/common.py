"""What every protocol adapter shares: the result shape, the reply error, and checks of Responses objects."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class InvalidReply(Exception):
    """The server answered 200 but not with what the protocol promises (retryable: servers glitch)."""


@dataclass
class Result:
    """One rollout's worth of server reply."""

    response: dict          # Responses-API-shaped object
    output: str             # final assistant text
    reward: float | None = None       # set by the agent protocol (the agent verified it)
    extras: dict | None = None        # verifier extras returned by the agent


def response_text(response: dict) -> str:
    """The assistant's final text: every output_text part of the message items, joined."""
    if isinstance(response.get("output_text"), str):
        return response["output_text"]
    parts = []
    for item in response.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for content in item.get("content") or []:
                if isinstance(content, dict) and content.get("type") == "output_text":
                    parts.append(content.get("text") or "")
    return "".join(parts)


def require(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InvalidReply(f"reply has no '{key}' ({what})")
    return obj[key]


def without_timing(response: dict) -> dict:
    # Timestamps would make a seeded run's records differ byte for byte; timing belongs in the run stats.
    return {k: v for k, v in response.items() if k not in ("created_at", "created")}


def checked_usage(value: Any, keys: tuple[str, ...], where: str) -> dict:
    """`usage` checked: absent or an object whose token counts are non-negative integers (else the reply is broken)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidReply(f"{where} 'usage' is not an object")
    for key in keys:
        count = value.get(key)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise InvalidReply(f"{where} 'usage.{key}' is {count!r}, not a token count")
    return value


# Responses statuses that mean "no finished generation here" (incomplete is a finished, truncated one).
_UNFINISHED = ("failed", "cancelled", "in_progress", "queued")


def check_response(response: dict, where: str) -> None:
    """A Responses object must be a finished generation with well-formed message items: a failed response
    or a malformed message would otherwise become an empty output, and the verifier would score it 0."""
    if response.get("error") or response.get("status") in _UNFINISHED:
        error = response.get("error")
        detail = error.get("message") if isinstance(error, dict) else error
        raise InvalidReply(f"{where} status is {response.get('status')!r}" + (f" ({detail})" if detail else ""))
    output = response.get("output")
    if not isinstance(output, list):
        raise InvalidReply(f"{where} has no 'output' list (Responses API)")
    for item in output:
        if not isinstance(item, dict):
            raise InvalidReply(f"{where} has an output item that is not an object")
        if item.get("type") == "message":
            parts = item.get("content")
            if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts) or any(
                    p.get("type") == "output_text" and not isinstance(p.get("text"), str) for p in parts):
                raise InvalidReply(f"{where} has a message whose 'content' is not a list of output_text parts")
    checked_usage(response.get("usage"), ("input_tokens", "output_tokens"), where)
