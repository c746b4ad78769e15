"""Protocol adapters: build the HTTP request for a rollout and turn the reply into Responses-shaped results.

Three protocols, one result shape, so the rest of the collector never cares which server it talks to:
- ``agent``:     NeMo Gym agent server, ``POST {url}/run`` with the dataset row; the reply carries ``reward``.
- ``responses``: OpenAI Responses API, ``POST {url}/v1/responses``.
- ``chat``:      OpenAI chat completions (vLLM, SGLang, ...), ``POST {url}/v1/chat/completions``;
                 ``max_output_tokens`` becomes ``max_tokens`` and the reply is mapped back to a Responses object.
"""
from __future__ import annotations

from typing import Any

from rollout_pipeline.collect.protocols.agent import build_agent_body, parse_agent_reply
from rollout_pipeline.collect.protocols.chat import build_chat_body, parse_chat_reply
from rollout_pipeline.collect.protocols.common import InvalidReply, Result
from rollout_pipeline.collect.protocols.responses import build_responses_body, parse_responses_reply

__all__ = ["PATHS", "InvalidReply", "Result", "build_body", "parse_reply", "sampling_params"]

PATHS = {"agent": "/run", "responses": "/v1/responses", "chat": "/v1/chat/completions"}


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
        return build_agent_body(row, params, model)
    if protocol == "responses":
        return build_responses_body(params, model)
    return build_chat_body(row, params, model, n)


def parse_reply(protocol: str, reply: Any, n: int = 1) -> list[Result]:
    """Turn a decoded 200 reply into one Result per rollout; raises InvalidReply when fields are missing."""
    if not isinstance(reply, dict):
        raise InvalidReply("reply is not a JSON object")
    if protocol == "agent":
        return parse_agent_reply(reply)
    if protocol == "responses":
        return parse_responses_reply(reply)
    return parse_chat_reply(reply, n)
