"""How many rollouts were scored of how many were asked for, and why the others were not: "N of M scored"."""

from __future__ import annotations


def coverage(expected: int, scored: int, not_scored: dict[str, int], done: str = "scored") -> dict:
    """The `coverage` block of the run stats and the metrics: expected, scored, and not scored by cause. A run that
    only generates (the score stage scores) counts `generated` and `not_generated` instead."""
    return {"expected": expected, done: scored, f"not_{done}": dict(sorted(not_scored.items()))}


def scored_line(coverage_doc: dict) -> str:
    """ "N of M rollouts scored" (or generated), with the causes of the rest (masked, verifier_error, ...)."""
    done = "generated" if "generated" in coverage_doc else "scored"
    rest = ", ".join(f"{n} {cause}" for cause, n in coverage_doc[f"not_{done}"].items())
    return f"{coverage_doc[done]} of {coverage_doc['expected']} rollouts {done}" + (
        f" (not {done}: {rest})" if rest else ""
    )
