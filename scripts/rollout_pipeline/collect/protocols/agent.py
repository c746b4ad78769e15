"""NeMo Gym agent servers (POST /run with the dataset row): the request body, the verified reply, and NeMo Gym's
failure vocabulary.

NeMo Gym 0.7.0 marks a rollout that is no measurement in three ways (its nemo_gym/rollout_collection.py,
nemo_gym/failure_kinds.py, nemo_gym/judge.py):
- `mask_sample: true` (top level, or in `instance_config`) with `failure_kind` and `failure_reason`, and the judge
  failsafe's `_ng_failure_class: judge_failed`: the sample is *masked*. It is an outcome, not a failure: not
  scored, never retried, recorded as "not scored: masked" with its kind (re-sent only with --retry-masked);
- `_ng_failure_class` (kill_shaped, transient, agent_run_error, ...) with `_ng_failure_message`, `_ng_failure_type`,
  `_ng_failure_http_status`: a failure, retried unless `_ng_failure_terminal` says asking again cannot help
  (or the class is `skipped`: a sample that cannot be run, terminal in NeMo Gym whichever build stamped it);
- `_ng_no_persist`: write it nowhere (retried).
"""

from __future__ import annotations

from typing import Any

from rollout_pipeline.collect.protocols.common import (
    InvalidReply,
    NotFinished,
    Result,
    check_finished,
    check_response,
    require,
    response_text,
    without_timing,
)

# Classes NeMo Gym never sends again, stamped terminal or not (rollout_collection.py's resume rule).
TERMINAL_FAILURE_CLASSES = {"skipped"}
# Failure classes that mean the reward is no measurement (the judge could not judge): masked, as mask_sample.
MASKED_FAILURE_CLASSES = {"judge_failed"}
# The cause of a masked rollout in the failures file and the stats; its NeMo Gym kind is kept beside it.
MASKED = "masked"
# Where NeMo Gym 0.7.0's registered failure kinds (nemo_gym/failure_kinds.py, 22 of them) mean what one of our
# causes means. The failures file gives both: `cause` (ours, the detail) and `failure_kind` (NeMo Gym's, so the
# failures of both tools can be compared). An HTTP status is classed as NeMo Gym's rollout collection does: 429,
# 502, 503 and 504 come from something in front of the agent (the rollout never ran), any other from the agent.
GYM_FAILURE_KINDS = {
    "connection": "transport_unreachable",
    "connect_timeout": "transport_unreachable",
    "timeout": "transport_timeout",
    "out_of_memory": "transport_local_resource",
    "verifier_error": "verifier_error",
    "verifier_timeout": "verifier_error",
    "invalid_verify_reply": "verifier_error",
}
_GATEWAY_STATUSES = {"http_429", "http_502", "http_503", "http_504"}
# NeMo Gym's older failure classes that 0.7.0 names with a registered kind (rollout_collection.is_terminal_failure).
_LEGACY_CLASSES = {"timeout_exceeded": "agent_timeout"}


def gym_failure_kind(cause: str, reply: Any = None) -> str | None:
    """NeMo Gym's kind for a failure: the one the server named, else the registered kind our cause maps to."""
    if isinstance(reply, dict):
        named = reply.get("failure_kind") or reply.get("_ng_failure_class")
        if isinstance(named, str) and named:
            return _LEGACY_CLASSES.get(named, named)
    if cause.startswith("http_"):
        return "agent_request_failed" if cause in _GATEWAY_STATUSES else "agent_run_error"
    return GYM_FAILURE_KINDS.get(cause)


def build_agent_body(row: dict, params: dict, model: str | None, indices: tuple[int, int] = (0, 0)) -> dict:
    """The /run body: the row's public fields, the sampling params (and model) as responses_create_params, and the
    rollout's task and rollout index, which NeMo Gym's agents key their trajectory and model-call capture on."""
    body = dict(row)
    body["responses_create_params"] = params
    if model and "model" not in params:
        body["responses_create_params"] = {**params, "model": model}
    body["_ng_task_index"], body["_ng_rollout_index"] = indices
    return body


def _failure_detail(reply: dict) -> str:
    """NeMo Gym's own words for a failure: 0.7.0's fields first, then the older ones."""
    parts = []
    for key in (
        "_ng_failure_type",
        "_ng_failure_message",
        "failure_reason",
        "_ng_failure_reason",
        "_ng_failure_judge_error",
        "error_message",
        "error",
        "_ng_error",
    ):
        value = reply.get(key)
        if value and str(value) not in parts:
            parts.append(str(value))
    status = reply.get("_ng_failure_http_status")
    if status is not None:
        parts.append(f"HTTP {status}")
    return " ".join(": ".join(parts).split())[:300]


def check_nemo_gym_sentinels(reply: dict, where: str) -> None:
    """Raise NotFinished when a /run or /verify reply carries one of NeMo Gym's sentinels: masked (cause `masked`,
    a skip: never retried, not a failure of the run), a failure class, or no-persist."""
    failure_class = reply.get("_ng_failure_class")
    detail = _failure_detail(reply)
    if failure_class and failure_class not in MASKED_FAILURE_CLASSES:
        # A failure first, even when the agent also masked it (a transient one can succeed when asked again).
        terminal = reply.get("_ng_failure_terminal") is True or failure_class in TERMINAL_FAILURE_CLASSES
        raise NotFinished(
            str(failure_class),
            f"{where}: NeMo Gym failure class {failure_class!r}"
            + (f" ({detail})" if detail else "")
            + ("; terminal" if terminal else ""),
            retryable=not terminal,
            reply=reply,
        )
    instance = reply.get("instance_config")
    masked = reply.get("mask_sample") is True or (isinstance(instance, dict) and instance.get("mask_sample") is True)
    if masked or failure_class:
        kind = gym_failure_kind(MASKED, reply) or "mask_sample"
        raise NotFinished(
            MASKED,
            f"{where}: not scored: masked by NeMo Gym (failure_kind {kind}" + (f": {detail}" if detail else "") + ")",
            skip=True,
            reply=reply,
        )
    if reply.get("_ng_no_persist"):
        raise NotFinished(
            "no_persist",
            f"{where}: NeMo Gym says not to persist this rollout (_ng_no_persist)",
            retryable=True,
            reply=reply,
        )


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
