"""NeMo Gym agent servers (POST /run with the dataset row): the request body and the verified reply.

NeMo Gym marks a rollout that must not be trained on with `_ng_failure_class` (kill_shaped, transient,
judge_failed, timeout_exceeded, ...; `_ng_failure_terminal` when asking again cannot help), `_ng_no_persist`
(write it nowhere) or `mask_sample` (top level, or in `instance_config`). Such a reply is never scored: it
raises NotFinished under the class's own name, retried unless NeMo Gym says it is terminal.
"""
from __future__ import annotations

from typing import Any

from rollout_pipeline.collect.protocols.common import (InvalidReply, NotFinished, Result, check_finished,
                                                       check_response, require, response_text, without_timing)

# Classes NeMo Gym itself never sends again on resume (stirrup, pinchbench): asking again cannot help.
TERMINAL_FAILURE_CLASSES = {"timeout_exceeded", "skipped"}


def build_agent_body(row: dict, params: dict, model: str | None) -> dict:
    """The /run body: the row's public fields, with the sampling params (and model) as responses_create_params."""
    body = {k: v for k, v in row.items() if not k.startswith("_")}
    body["responses_create_params"] = params
    if model and "model" not in params:
        body["responses_create_params"] = {**params, "model": model}
    return body


def check_nemo_gym_sentinels(reply: dict, where: str) -> None:
    """Raise NotFinished when a /run or /verify reply carries one of NeMo Gym's failure sentinels."""
    failure_class = reply.get("_ng_failure_class")
    if failure_class:
        terminal = bool(reply.get("_ng_failure_terminal")) or failure_class in TERMINAL_FAILURE_CLASSES
        detail = reply.get("_ng_failure_reason") or reply.get("error") or reply.get("_ng_error")
        raise NotFinished(str(failure_class), f"{where}: NeMo Gym failure class {failure_class!r}"
                          + (f" ({str(detail)[:200]})" if detail else "") + ("; terminal" if terminal else ""),
                          retryable=not terminal, reply=reply)
    if reply.get("_ng_no_persist"):
        raise NotFinished("no_persist", f"{where}: NeMo Gym says not to persist this rollout (_ng_no_persist)",
                          retryable=True, reply=reply)
    instance = reply.get("instance_config")
    if reply.get("mask_sample") or (isinstance(instance, dict) and instance.get("mask_sample")):
        raise NotFinished("mask_sample", f"{where}: NeMo Gym masks this sample from training (mask_sample)",
                          reply=reply)


def parse_agent_reply(reply: dict, max_output_tokens: Any = None) -> list[Result]:
    """The single Result of a decoded 200 /run reply: the agent's response and its own reward."""
    check_nemo_gym_sentinels(reply, "agent /run")
    response = require(reply, "response", "agent /run")
    reward = require(reply, "reward", "agent /run")
    if not isinstance(response, dict) or not isinstance(reward, (int, float)) or isinstance(reward, bool):
        raise InvalidReply("agent reply has a non-object 'response' or a non-numeric 'reward'")
    check_response(response, "agent reply's 'response'")
    response = without_timing(response)
    check_finished(response, "agent reply's 'response'", max_output_tokens, reply)
    return [Result(response, response_text(response), float(reward), reply)]
