"""OpenAI Responses API (POST /v1/responses): the request body and the reply checked as a finished generation."""
from __future__ import annotations

from rollout_pipeline.collect.protocols.common import Result, check_response, response_text, without_timing


def build_responses_body(params: dict, model: str | None) -> dict:
    """The Responses body: what is sent is the sampling params themselves, plus the model."""
    body = dict(params)
    if model:
        body.setdefault("model", model)
    return body


def parse_responses_reply(reply: dict) -> list[Result]:
    """The single Result of a decoded 200 Responses reply."""
    check_response(reply, "reply")
    return [Result(without_timing(reply), response_text(reply))]
