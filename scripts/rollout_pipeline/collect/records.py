"""Rollout records: the generation record the collector writes, and the verdict that scoring adds to it (`reward`,
the verifier's extras, `scored_by`), in one place so that a record scored later is byte for byte the one an inline
run writes."""

from __future__ import annotations

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
