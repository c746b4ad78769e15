"""OpenAI Responses API (POST /v1/responses): the request body and the reply checked as a finished generation."""

from __future__ import annotations

from typing import Any

from rollout_pipeline.collect.protocols.common import (
    LOGPROBS_INCLUDE,
    InvalidReply,
    Result,
    check_finished,
    check_response,
    put_token_data,
    response_text,
    without_timing,
)


def build_responses_body(params: dict, model: str | None, token_data: str | None = None) -> dict:
    """The Responses body: what is sent is the sampling params themselves, plus the model (and the logprobs
    include when the agent asks for token data)."""
    body = dict(params)
    if model:
        body.setdefault("model", model)
    if token_data in ("logprobs", "ids") and LOGPROBS_INCLUDE not in (body.get("include") or []):
        body["include"] = [*(body.get("include") or []), LOGPROBS_INCLUDE]
    return body


def _output_logprobs(response: dict) -> list[float] | None:
    """The generated tokens' logprobs from the output_text parts (include: message.output_text.logprobs)."""
    found: list[float] = []
    for item in response.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                entries = part.get("logprobs") if isinstance(part, dict) else None
                if isinstance(entries, list):
                    if not all(isinstance(e, dict) and isinstance(e.get("logprob"), (int, float)) for e in entries):
                        raise InvalidReply("reply has an output_text logprobs entry without a numeric 'logprob'")
                    found += [float(e["logprob"]) for e in entries]
    return found or None


def parse_responses_reply(reply: dict, max_output_tokens: Any = None) -> list[Result]:
    """The single Result of a decoded 200 Responses reply."""
    check_response(reply, "reply")
    response = without_timing(reply)
    check_finished(response, "reply", max_output_tokens)
    put_token_data(response, generation_log_probs=_output_logprobs(response))
    return [Result(response, response_text(response))]
