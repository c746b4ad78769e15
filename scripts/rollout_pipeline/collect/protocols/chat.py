"""OpenAI chat completions (vLLM, SGLang, llama.cpp, OpenAI): the request body and the reply mapped to Responses objects."""
from __future__ import annotations

from typing import Any

from rollout_pipeline.collect.protocols.common import InvalidReply, Result, checked_usage, require

# Responses-API keys that have a chat-completions counterpart under another name.
_CHAT_RENAMES = {"max_output_tokens": "max_tokens"}
# Responses-API keys that chat completions does not take.
_CHAT_DROPS = {"input", "instructions", "metadata", "text", "reasoning", "truncation", "include", "store", "previous_response_id"}


def build_chat_body(row: dict, params: dict, model: str | None, n: int = 1) -> dict:
    """The chat-completions body for one request (n choices)."""
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
    message = require(choice, "message", "chat choice")
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


def parse_chat_reply(reply: dict, n: int = 1) -> list[Result]:
    """One Result per requested choice of a decoded 200 chat-completions reply."""
    choices = require(reply, "choices", "chat completion")
    if not isinstance(choices, list) or len(choices) < n:
        raise InvalidReply(f"expected {n} choice(s), got {len(choices) if isinstance(choices, list) else 'none'}")
    usage = checked_usage(reply.get("usage"), ("prompt_tokens", "completion_tokens"), "reply")
    texts = [_chat_text(c) for c in choices[:n]]
    total_chars = sum(len(t) for t in texts) or 1
    results = []
    for choice, text in zip(choices[:n], texts):
        response = _chat_choice_to_response(reply, choice, usage, n, len(text) / total_chars)
        results.append(Result(response, text))
    return results
