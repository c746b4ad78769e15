"""Rollout records: the generation record the collector writes, and the verdict that scoring adds to it (`reward`,
the verifier's extras, `scored_by`), in one place so that a record scored later is byte for byte the one an inline
run writes."""

from __future__ import annotations

from typing import Any

from rollout_pipeline.collect.protocols.agent import MASKED, gym_failure_kind

# What the collector writes into a record before it is scored; every other field is the input row's (passthrough).
# `reward`, `scored_by` and the verdict's extras (named in scored_by.extras) are added by scoring.
GENERATION_FIELDS = (
    "prompt_id",
    "task_index",
    "rollout_index",
    "agent_name",
    "input",
    "output",
    "responses_create_params",
    "response",
    "policy_version",
)
# The extras the built-in verifiers add: a scored record from before `scored_by` (which names them) loses these
# when scored again, so a stale extracted_answer never sits beside a new reward.
BUILT_IN_EXTRAS = ("extracted_answer",)


def scored_record(generation: dict, reward: float, extras: dict, scored_by: dict) -> dict:
    """A generation record with its verdict: `reward` right after `output`, the extras a row field does not
    already hold, and `scored_by`. The collector and the score stage both build records here, so a record scored
    later is byte for byte the one an inline run writes."""
    record: dict = {}
    for key, value in generation.items():
        record[key] = value
        if key == "output":
            record["reward"] = reward
    kept = [key for key in extras if key not in record]
    for key in kept:
        record[key] = extras[key]
    record["scored_by"] = {**scored_by, **({"extras": kept} if kept else {})}
    return record


def generation_of(record: dict) -> dict:
    """The generation record inside a scored one: without `reward`, `scored_by` and the extras it names (a record
    scored before scored_by existed: the built-in verifiers' extras)."""
    if "scored_by" in record:
        named = set(record["scored_by"].get("extras") or ())
    else:
        named = set(BUILT_IN_EXTRAS) if "reward" in record else set()
    return {k: v for k, v in record.items() if k not in ("reward", "scored_by") and k not in named}


def row_of(generation: dict) -> dict:
    """The input row a generation record came from, as a verifier sees it: its passthrough fields and the
    responses_create_params that were sent (the input messages included)."""
    row = {k: v for k, v in generation.items() if k not in GENERATION_FIELDS}
    params = generation.get("responses_create_params")
    row["responses_create_params"] = params if isinstance(params, dict) else {"input": generation.get("input")}
    return row


def failure_entry(
    prompt_id: str | None,
    task_index: int,
    rollout_index: int,
    cause: str,
    message: str,
    skipped: bool = False,
    reply: Any = None,
    response: Any = None,
    generation: dict | None = None,
) -> dict:
    """A failures-file line: why a rollout has no record (NeMo Gym's failure_kind when one means the same; a masked
    row's flag and reason), with the server's reply and the generation when there were some. `cause` and `message`
    come already made printable and redacted."""
    kind = gym_failure_kind(cause, reply)
    reason = reply.get("failure_reason") if cause == MASKED and isinstance(reply, dict) else None
    return {
        "prompt_id": prompt_id,
        "task_index": task_index,
        "rollout_index": rollout_index,
        "cause": cause,
        **({"failure_kind": kind} if kind else {}),
        "error": message,
        **({"skipped": True} if skipped else {}),
        **({"masked": True} if cause == MASKED else {}),
        **({"failure_reason": reason} if reason else {}),
        **({"reply": reply} if reply is not None else {}),
        **({"response": response} if response is not None else {}),
        **({"generation": generation} if generation is not None else {}),
    }
