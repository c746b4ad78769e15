"""A CPU-heavy verifier for the Ray benchmark: 5 ms of CPU per rollout (as code execution or symbolic math would be)."""

from __future__ import annotations

import time

CPU_S = 0.005


def busy(row: dict, output: str, response: dict) -> float:
    """Burn CPU_S of this thread's CPU time, then score as `exact` would: 1.0 when the expected answer is in the output."""
    until = time.thread_time() + CPU_S
    while time.thread_time() < until:
        pass
    return 1.0 if str(row.get("expected_answer", "")) in output else 0.0
