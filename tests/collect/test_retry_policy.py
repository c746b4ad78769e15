"""When a failed request is sent again: the retry policy's decision, Retry or GiveUp, with the reason it adds."""

from __future__ import annotations

import time

from rollout_pipeline.collect.retries import GiveUp, Retry, RetryPolicy
from rollout_pipeline.collect.transport import RequestFailed


def policy(give_up_after_s: float = 30.0, last_success: float | None = None) -> RetryPolicy:
    succeeded = time.monotonic() if last_success is None else last_success
    return RetryPolicy(
        max_retries=2, backoff_base_s=0.01, give_up_after_s=give_up_after_s, last_success=lambda: succeeded
    )


def failure(retryable: bool = True, overload: bool = False, retry_after: float | None = None) -> RequestFailed:
    return RequestFailed("http_503", "503 Service Unavailable", retryable, retry_after=retry_after, overload=overload)


def test_a_transient_failure_is_retried_until_max_retries_then_fails_with_its_own_message():
    assert policy().decide(failure(), attempts=0) == Retry()
    assert policy().decide(failure(), attempts=1) == Retry()
    assert policy().decide(failure(), attempts=2) == GiveUp()


def test_a_deterministic_failure_is_never_retried():
    assert policy().decide(failure(retryable=False), attempts=0) == GiveUp()


def test_an_overload_does_not_count_toward_max_retries():
    assert policy().decide(failure(overload=True, retry_after=1.0), attempts=50) == Retry()


def test_a_retry_after_longer_than_give_up_after_s_gives_up_at_once_and_says_which_setting_to_raise():
    decision = policy(give_up_after_s=5).decide(failure(overload=True, retry_after=60.0), attempts=0)
    assert isinstance(decision, GiveUp) and "raise give_up_after_s" in decision.reason


def test_endpoints_without_a_success_for_give_up_after_s_end_the_retries_saying_for_how_long():
    stalled = policy(give_up_after_s=5, last_success=time.monotonic() - 20)
    decision = stalled.decide(failure(), attempts=0)
    assert isinstance(decision, GiveUp) and "no request to the agent succeeded for 20 s" in decision.reason
