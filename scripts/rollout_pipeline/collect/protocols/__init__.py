"""Protocol adapters: build the HTTP request for a rollout and turn the reply into Responses-shaped results.

Three protocols, one result shape, so the rest of the collector never cares which server it talks to:
- ``agent``:     NeMo Gym agent server, ``POST {url}/run`` with the dataset row; the reply carries ``reward``.
- ``responses``: OpenAI Responses API, ``POST {url}/v1/responses``.
- ``chat``:      OpenAI chat completions (vLLM, SGLang, ...), ``POST {url}/v1/chat/completions``;
                 ``max_output_tokens`` becomes ``max_tokens`` and the reply is mapped back to a Responses object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollout_pipeline.collect.protocols.agent import build_agent_body, parse_agent_reply
from rollout_pipeline.collect.protocols.chat import build_chat_body
from rollout_pipeline.collect.protocols.chat_reply import ChoicesShortfall, parse_chat_reply
from rollout_pipeline.collect.protocols.common import (
    InvalidReply,
    NotFinished,
    Result,
    asks_for_logprobs,
    label_logprobs,
    logprobs_mode,
    other_model,
)
from rollout_pipeline.collect.protocols.responses import build_responses_body, parse_responses_reply
from rollout_pipeline.errors import UserError
from rollout_pipeline.rows import Prompt

__all__ = [
    "PROTOCOLS",
    "ChoicesShortfall",
    "InvalidReply",
    "NotFinished",
    "Protocol",
    "Result",
    "asks_for_logprobs",
    "build_body",
    "choice_params",
    "label_logprobs",
    "logprobs_mode",
    "other_model",
    "parse_reply",
    "sampling_params",
]


@dataclass(frozen=True)
class Protocol:
    """One protocol: where it posts, how it builds a request body and reads a reply, and what kind of server it
    talks to."""

    path: str
    # (prompt, params, model, n, token_data, (task_index, rollout_index)) -> the request body
    build: Callable[[Prompt, dict, str | None, int, str | None, tuple[int, int]], dict]
    # (decoded reply, n, max_output_tokens) -> one Result per rollout
    parse: Callable[[dict, int, Any], list[Result]]
    # A NeMo Gym agent server: it takes the row, scores inside its /run and returns the reward; it reads the seed
    # from metadata and the sampling params from the body's responses_create_params, and returns no logprobs.
    agent_server: bool = False
    # One request may ask for n choices (repeat_mode: n).
    n_choices: bool = False


PROTOCOLS: dict[str, Protocol] = {
    "agent": Protocol(
        "/run",
        lambda prompt, params, model, n, token_data, indices: build_agent_body(prompt.row, params, model, indices),
        lambda reply, n, max_output_tokens: parse_agent_reply(reply, max_output_tokens),
        agent_server=True,
    ),
    "responses": Protocol(
        "/v1/responses",
        lambda prompt, params, model, n, token_data, indices: build_responses_body(params, model, token_data),
        lambda reply, n, max_output_tokens: parse_responses_reply(reply, max_output_tokens),
    ),
    "chat": Protocol(
        "/v1/chat/completions",
        lambda prompt, params, model, n, token_data, indices: build_chat_body(
            prompt.messages, params, model, n, token_data
        ),
        parse_chat_reply,
        n_choices=True,
    ),
}


def sampling_params(protocol: str, row: dict, overrides: dict, seed: int | None) -> dict:
    """What is actually sent: the row's responses_create_params merged with the objective's overrides (overrides win),
    and the rollout's seed where the server reads it.

    chat and responses: a top-level `seed`, which vLLM reads on both /v1/chat/completions and /v1/responses (on
    /v1/responses it ignores `metadata.seed`: two runs seeded that way differ). agent: `metadata.seed`, a string,
    the one place a Responses-shaped body that a NeMo Gym agent validates takes it."""
    params = dict(row["responses_create_params"])
    params.update({k: v for k, v in overrides.items() if v is not None})
    if seed is not None:
        if PROTOCOLS[protocol].agent_server:
            params["metadata"] = {**(params.get("metadata") or {}), "seed": str(seed)}
        else:
            params["seed"] = seed
    return params


def choice_params(params: dict, choice: int) -> dict:
    """The settings that reproduce choice `choice` of a request with `n` choices as a request of its own: vLLM
    samples choice k of a request seeded S with seed S + k (the embedded server does the same)."""
    if choice == 0 or not isinstance(params.get("seed"), int):
        return params
    return {**params, "seed": params["seed"] + choice}


def build_body(
    protocol: str,
    prompt: Prompt,
    params: dict,
    model: str | None,
    n: int = 1,
    token_data: str | None = None,
    indices: tuple[int, int] = (0, 0),
) -> dict:
    """The JSON body for one request (`indices`: the rollout's task and rollout index, which a NeMo Gym agent
    needs). Raises UserError, before anything is sent, for what cannot be sent."""
    if params.get("stream"):
        raise UserError(
            "responses_create_params.stream: true makes the server answer with server-sent events; "
            "the collector needs whole replies (remove stream, or set it to false)"
        )
    extra_body = params.get("extra_body")
    if extra_body is not None and not isinstance(extra_body, dict):
        raise UserError(f"responses_create_params.extra_body: expected an object, got {type(extra_body).__name__}")
    params = {k: v for k, v in params.items() if k not in ("extra_body", "stream")}
    body = PROTOCOLS[protocol].build(prompt, params, model, n, token_data, indices)
    # The OpenAI client's extra_body: its keys go into the request body itself (vLLM's top_k, guided_json, ...).
    target = body["responses_create_params"] if PROTOCOLS[protocol].agent_server else body
    target.update(extra_body or {})
    return body


def parse_reply(protocol: str, reply: Any, n: int = 1, max_output_tokens: Any = None) -> list[Result]:
    """Turn a decoded 200 reply into one Result per rollout. Raises InvalidReply when it is malformed and
    NotFinished when it is well formed but no finished generation (never to be scored)."""
    if not isinstance(reply, dict):
        raise InvalidReply("reply is not a JSON object")
    return PROTOCOLS[protocol].parse(reply, n, max_output_tokens)
