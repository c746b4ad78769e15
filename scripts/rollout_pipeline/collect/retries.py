"""When a failed request is sent again: exponential backoff with jitter, Retry-After, and when a rollout gives up."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollout_pipeline.collect.transport import RequestFailed

MAX_BACKOFF_S = 30.0


def backoff_seconds(attempt: int, base: float, failure: RequestFailed) -> float:
    """Full-jitter exponential backoff, or the server's Retry-After. An overload's backoff is the endpoint's
    adaptive limit, so without a Retry-After it only gets a short jitter that spreads the retries out; with one,
    the jitter comes on top, so that requests told the same wait do not all come back at the same moment."""
    if failure.overload:
        return (failure.retry_after or 0.0) + random.uniform(0, base)
    if failure.retry_after is not None:
        return failure.retry_after
    return random.uniform(0, min(MAX_BACKOFF_S, base * (2**attempt)))


@dataclass(frozen=True)
class Retry:
    """Send the request again, after a backoff."""


@dataclass(frozen=True)
class GiveUp:
    """Fail the rollout; `reason` is added to the failure's own message (None: that message says it all)."""

    reason: str | None = None


@dataclass
class RetryPolicy:
    """When a rollout asks again, and when it gives up.

    Deterministic errors are never retried. Transient ones (connection errors, timeouts, 5xx, malformed 200s)
    are retried while the agent's endpoints make progress: the rollout gives up when no request to them has
    succeeded for `give_up_after_s`, or after `max_retries` retries. Waiting out an overload (429, a 503, a
    Retry-After) does not count toward `max_retries`: the server is telling us when to come back, so only the
    time limit applies, and a Retry-After longer than it ends the rollout at once, saying so.
    """

    max_retries: int
    backoff_base_s: float
    give_up_after_s: float
    last_success: Callable[[], float]  # monotonic time of the endpoints' last successful request
    waited_s: float = 0.0  # time spent in backoff sleeps (the stats' wait_backoff_s)

    def decide(self, failure: RequestFailed, attempts: int) -> Retry | GiveUp:
        """Whether the request that failed so, after `attempts` retries, is sent again."""
        if not failure.retryable:
            return GiveUp()
        if not failure.overload and attempts >= self.max_retries:
            return GiveUp()
        if failure.retry_after is not None and failure.retry_after > self.give_up_after_s:
            return GiveUp(
                f"the server asked to wait {failure.retry_after:g} s (Retry-After), longer than give_up_after_s "
                f"({self.give_up_after_s:g} s); raise give_up_after_s to wait that long"
            )
        stalled = time.monotonic() - self.last_success()
        if stalled > self.give_up_after_s:
            return GiveUp(
                f"no request to the agent succeeded for {stalled:.0f} s (give_up_after_s {self.give_up_after_s:g})"
            )
        return Retry()


async def with_retries(call: Callable[[], Any], policy: RetryPolicy, on_retry: Callable[[RequestFailed], None]) -> Any:
    """Run `call` (an async callable that raises RequestFailed), retrying as `policy` says."""
    attempts = 0
    while True:
        try:
            return await call()
        except RequestFailed as failure:
            decision = policy.decide(failure, attempts)
            if isinstance(decision, GiveUp):
                if decision.reason is None:
                    raise
                raise RequestFailed(
                    failure.cause,
                    f"{failure}; giving up: {decision.reason}",
                    False,
                    skip=failure.skip,
                    reply=failure.reply,
                    response=failure.response,
                ) from None
            on_retry(failure)
            pause = backoff_seconds(attempts, policy.backoff_base_s, failure)
            # An overload's Retry-After is counted by the endpoint's limit (the stats' wait_s.retry_after).
            policy.waited_s += pause - (failure.retry_after or 0.0) if failure.overload else pause
            await asyncio.sleep(pause)
            if not failure.overload:
                attempts += 1
