"""How many rollouts were scored of how many were asked for, and why the others were not: "N of M scored"."""
from __future__ import annotations


def coverage(expected: int, scored: int, not_scored: dict[str, int]) -> dict:
    """The `coverage` block of the run stats and the metrics: expected, scored, and not scored by cause."""
    return {"expected": expected, "scored": scored, "not_scored": dict(sorted(not_scored.items()))}


def scored_line(coverage_doc: dict) -> str:
    """"N of M rollouts scored", with the causes of the rest (masked, verifier_error, ...)."""
    rest = ", ".join(f"{n} {cause}" for cause, n in coverage_doc["not_scored"].items())
    return f"{coverage_doc['scored']} of {coverage_doc['expected']} rollouts scored" + (
        f" (not scored: {rest})" if rest else "")
