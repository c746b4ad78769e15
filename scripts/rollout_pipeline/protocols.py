"""Protocol adapters: build the HTTP request for a rollout and turn the reply into Responses-shaped results.

Three protocols, one result shape, so the rest of the collector never cares which server it talks to:
- ``agent``:     NeMo Gym agent server, ``POST {url}/run`` with the dataset row; the reply carries ``reward``.
- ``responses``: OpenAI Responses API, ``POST {url}/v1/responses``.
- ``chat``:      OpenAI chat completions (vLLM, SGLang, ...), ``POST {url}/v1/chat/completions``;
                 ``max_output_tokens`` becomes ``max_tokens`` and the reply is mapped back to a Responses object.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PATHS = {"agent": "/run", "responses": "/v1/responses", "chat": "/v1/chat/completions"}

# Responses-API keys that have a chat-completions counterpart under another name.
_CHAT_RENAMES = {"max_output_tokens": "max_tokens"}
# Responses-API keys that chat completions does not take.
_CHAT_DROPS = {"input", "instructions", "metadata", "text", "reasoning", "truncation", "include", "store", "previous_response_id"}


class InvalidReply(Exception):
    """The server answered 200 but not with what the protocol promises (retryable: servers glitch)."""


@dataclass
class Result:
    """One rollout's worth of server reply."""

    response: dict          # Responses-API-shaped object
    output: str             # final assistant text
    reward: float | None = None       # set by the agent protocol (the agent verified it)
    extras: dict | None = None        # verifier extras returned by the agent


def sampling_params(row: dict, overrides: dict, seed: int | None) -> dict:
    """What is actually sent: the row's responses_create_params merged with the objective's overrides (overrides win)."""
    params = dict(row["responses_create_params"])
    params.update({k: v for k, v in overrides.items() if v is not None})
    if seed is not None:
        # The Responses API has no top-level seed; metadata is where it is accepted (values are strings).
        params["metadata"] = {**(params.get("metadata") or {}), "seed": str(seed)}
    return params


def build_body(protocol: str, row: dict, params: dict, model: str | None, n: int = 1) -> dict:
    """The JSON body for one request."""
    if protocol == "agent":
        body = {k: v for k, v in row.items() if not k.startswith("_")}
        body["responses_create_params"] = params
        if model and "model" not in params:
            body["responses_create_params"] = {**params, "model": model}
        return body
    if protocol == "responses":
        body = dict(params)
        if model:
            body.setdefault("model", model)
        return body
    body = {_CHAT_RENAMES.get(k, k): v for k, v in params.items() if k not in _CHAT_DROPS}
    body["messages"] = row["_messages"] if not params.get("instructions") else (
        [{"role": "system", "content": params["instructions"]}] + row["_messages"])
    seed = (params.get("metadata") or {}).get("seed")
    if seed is not None:
        body["seed"] = int(seed)
    if model:
        body.setdefault("model", model)
    if n > 1:
        body["n"] = n
    return body


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


def _require(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InvalidReply(f"reply has no '{key}' ({what})")
    return obj[key]


def _without_timing(response: dict) -> dict:
    # Timestamps would make a seeded run's records differ byte for byte; timing belongs in the run stats.
    return {k: v for k, v in response.items() if k not in ("created_at", "created")}


def _usage(value: Any, keys: tuple[str, ...], where: str) -> dict:
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


def _check_response(response: dict, where: str) -> None:
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
    _usage(response.get("usage"), ("input_tokens", "output_tokens"), where)


def _chat_text(choice: Any) -> str:
    """The assistant text of one chat choice; InvalidReply when the choice is not shaped like one."""
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise InvalidReply("reply has a choice without a 'message' object (chat completion)")
    message = choice["message"]
    if "content" not in message:
        raise InvalidReply("reply has a message without 'content' (chat completion)")
    content = message["content"]
    if content is not None and not isinstance(content, str):
        raise InvalidReply(f"reply has a message whose 'content' is {type(content).__name__}, not a string")
    return content or ""


def _chat_choice_to_response(reply: dict, choice: dict, usage: dict, n: int, text_share: float) -> dict:
    message = _require(choice, "message", "chat choice")
    text = message.get("content") or ""
    truncated = choice.get("finish_reason") == "length"
    output_tokens = usage.get("completion_tokens", 0)
    if n > 1:
        # Chat usage is summed over all n choices; split it by text length and say it is an estimate.
        output_tokens = round(output_tokens * text_share)
    input_tokens = usage.get("prompt_tokens", 0)
    response = {
        "id": f"{reply.get('id', 'chatcmpl')}-{choice.get('index', 0)}",
        "object": "response",
        "model": reply.get("model"),
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "output": [{
            "type": "message", "id": f"msg-{choice.get('index', 0)}", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }],
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "total_tokens": input_tokens + output_tokens},
        "finish_reason": choice.get("finish_reason"),
    }
    if n > 1:
        response["usage"]["output_tokens_estimated"] = True
    return response


def parse_reply(protocol: str, reply: Any, n: int = 1) -> list[Result]:
    """Turn a decoded 200 reply into one Result per rollout; raises InvalidReply when fields are missing."""
    if not isinstance(reply, dict):
        raise InvalidReply("reply is not a JSON object")
    if protocol == "agent":
        response = _require(reply, "response", "agent /run")
        reward = _require(reply, "reward", "agent /run")
        if not isinstance(response, dict) or not isinstance(reward, (int, float)) or isinstance(reward, bool):
            raise InvalidReply("agent reply has a non-object 'response' or a non-numeric 'reward'")
        _check_response(response, "agent reply's 'response'")
        return [Result(_without_timing(response), response_text(response), float(reward), reply)]
    if protocol == "responses":
        _check_response(reply, "reply")
        return [Result(_without_timing(reply), response_text(reply))]
    choices = _require(reply, "choices", "chat completion")
    if not isinstance(choices, list) or len(choices) < n:
        raise InvalidReply(f"expected {n} choice(s), got {len(choices) if isinstance(choices, list) else 'none'}")
    usage = _usage(reply.get("usage"), ("prompt_tokens", "completion_tokens"), "reply")
    texts = [_chat_text(c) for c in choices[:n]]
    total_chars = sum(len(t) for t in texts) or 1
    results = []
    for choice, text in zip(choices[:n], texts):
        response = _chat_choice_to_response(reply, choice, usage, n, len(text) / total_chars)
        results.append(Result(response, text))
    return results
