"""NeMo Gym agent servers (POST /run with the dataset row): the request body and the verified reply."""
from __future__ import annotations

from rollout_pipeline.collect.protocols.common import (InvalidReply, Result, check_response, require, response_text,
                                                       without_timing)


def build_agent_body(row: dict, params: dict, model: str | None) -> dict:
    """The /run body: the row's public fields, with the sampling params (and model) as responses_create_params."""
    body = {k: v for k, v in row.items() if not k.startswith("_")}
    body["responses_create_params"] = params
    if model and "model" not in params:
        body["responses_create_params"] = {**params, "model": model}
    return body


def parse_agent_reply(reply: dict) -> list[Result]:
    """The single Result of a decoded 200 /run reply: the agent's response and its own reward."""
    response = require(reply, "response", "agent /run")
    reward = require(reply, "reward", "agent /run")
    if not isinstance(response, dict) or not isinstance(reward, (int, float)) or isinstance(reward, bool):
        raise InvalidReply("agent reply has a non-object 'response' or a non-numeric 'reward'")
    check_response(response, "agent reply's 'response'")
    return [Result(without_timing(response), response_text(response), float(reward), reply)]
