"""OpenAI chat completions (vLLM, SGLang, llama.cpp, OpenAI), the request: Responses-API sampling params mapped to
their chat names, or refused before the first request when they have no chat counterpart (a silently dropped
`include` or `tools` would change what comes back). The reply is chat_reply.py's.
"""

from __future__ import annotations

from typing import Any

from rollout_pipeline.collect.protocols.common import LOGPROBS_INCLUDE
from rollout_pipeline.errors import UserError

# Responses-API keys that chat completions takes under another name.
_RENAMES = {"max_output_tokens": "max_tokens"}
# Keys with no effect on what a chat server generates (or handled elsewhere): not sent.
_NOT_SENT = {"input", "instructions", "metadata", "store", "include", "reasoning", "text", "truncation", "extra_body"}


def _map_include(include: Any, body: dict) -> None:
    if include is None:
        return
    if not isinstance(include, list) or any(value != LOGPROBS_INCLUDE for value in include):
        raise UserError(
            f"responses_create_params.include: {include!r} cannot be sent to a chat-completions server; "
            f"only {LOGPROBS_INCLUDE!r} has a chat counterpart (logprobs)"
        )
    if include:
        body["logprobs"] = True
        # The sampled token's logprob is in every entry; llama-cpp-python's server sends none without top_logprobs.
        body.setdefault("top_logprobs", 0)


def _map_reasoning(reasoning: Any, body: dict) -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, dict) or set(reasoning) - {"effort", "summary"} or reasoning.get("summary"):
        raise UserError(
            f"responses_create_params.reasoning: {reasoning!r} cannot be sent to a chat-completions "
            "server; only reasoning.effort has a chat counterpart (reasoning_effort)"
        )
    if reasoning.get("effort") is not None:
        body["reasoning_effort"] = reasoning["effort"]


def _map_text(text: Any, body: dict) -> None:
    if text is None:
        return
    if not isinstance(text, dict) or set(text) - {"format", "verbosity"}:
        raise UserError(
            f"responses_create_params.text: {text!r} cannot be sent to a chat-completions server; "
            "text.format and text.verbosity have chat counterparts"
        )
    if text.get("verbosity") is not None:
        body["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None or fmt == {"type": "text"}:
        return
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt},
        }
    else:
        raise UserError(f"responses_create_params.text.format: {fmt!r} has no chat-completions counterpart")


def _map_tools(tools: Any) -> list:
    if not isinstance(tools, list):
        raise UserError(f"responses_create_params.tools: expected a list, got {type(tools).__name__}")
    mapped = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
            mapped.append(tool)  # already chat-shaped
        elif isinstance(tool, dict) and tool.get("type") == "function" and "name" in tool:
            mapped.append(
                {
                    "type": "function",
                    "function": {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool},
                }
            )
        else:
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise UserError(
                f"responses_create_params.tools: a {kind!r} tool is a Responses-API built-in with no "
                "chat-completions counterpart; only function tools can be sent"
            )
    return mapped


def _map_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def build_chat_body(
    messages: list[dict], params: dict, model: str | None, n: int = 1, token_data: str | None = None
) -> dict:
    """The chat-completions body for one request (n choices). Raises UserError for params it cannot map."""
    if params.get("truncation") not in (None, "disabled"):
        raise UserError(
            f"responses_create_params.truncation: {params['truncation']!r} has no chat-completions "
            "counterpart (the server refuses an over-long prompt instead)"
        )
    if params.get("previous_response_id") is not None:
        raise UserError(
            "responses_create_params.previous_response_id: chat completions keep no server-side state; "
            "put the whole conversation in the input"
        )
    body = {_RENAMES.get(k, k): v for k, v in params.items() if k not in _NOT_SENT and k != "previous_response_id"}
    if "tools" in body:
        body["tools"] = _map_tools(body["tools"])
    if "tool_choice" in body:
        body["tool_choice"] = _map_tool_choice(body["tool_choice"])
    _map_include(params.get("include"), body)
    _map_reasoning(params.get("reasoning"), body)
    _map_text(params.get("text"), body)
    if token_data in ("logprobs", "ids"):
        body["logprobs"] = True
        # The sampled token's logprob is in every entry; alternatives only bloat the reply. (llama-cpp-python's
        # server sends no logprobs at all without a top_logprobs.)
        body.setdefault("top_logprobs", 0)
    if token_data == "ids":
        body["return_token_ids"] = True  # vLLM >= 0.10.2 and SGLang; other servers ignore or refuse it
    body["messages"] = (
        messages
        if not params.get("instructions")
        else ([{"role": "system", "content": params["instructions"]}] + messages)
    )
    seed = (params.get("metadata") or {}).get("seed")
    if seed is not None and "seed" not in body:  # a row's own metadata.seed: chat servers read a top-level seed
        body["seed"] = int(seed)
    if model:
        body.setdefault("model", model)
    if n > 1:
        body["n"] = n
    return body
