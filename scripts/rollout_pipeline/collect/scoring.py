"""Choose how a rollout gets its reward: the agent's own, an in-process verifier, a /verify URL, or module:function.

The verifier contract: a verdict is a finite number, or a dict with a finite `reward` and JSON extras. Anything
else (None, NaN, inf, a bool, a string, an exception, extras that are not JSON, no answer within
verify_timeout_s) fails that rollout with cause `verifier_error` or `verifier_timeout`, and is never retried: a
retry would sample the output again and keep only the outputs the verifier likes.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.collect.protocols import PROTOCOLS, NotFinished, Result
from rollout_pipeline.collect.protocols.agent import check_nemo_gym_sentinels
from rollout_pipeline.collect.retries import RetryPolicy, with_retries
from rollout_pipeline.collect.transport import RequestFailed, post_json
from rollout_pipeline.collect.verifier_kind import verifier_kind
from rollout_pipeline.collect.verify_pool import VERIFY_TIMEOUT_S, VerifyPool
from rollout_pipeline.errors import UserError, printable

Scorer = Callable[[dict, Result], Awaitable[tuple[float, dict]]]

# Outputs up to this length are verified inline (a few microseconds, linear in the length); longer ones in a
# worker process under the pool's hard time limit.
INLINE_VERIFY_CHARS = 4096


def shown(value: Any, limit: int = 200) -> str:
    """A value as it can be quoted in a one-line message: its repr, control characters inert, shortened."""
    text = printable(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verifier_error(source: str, message: str) -> RequestFailed:
    """The failure of one rollout whose verdict is unusable: never retried (that would sample it again)."""
    return RequestFailed("verifier_error", f"verifier {source}: {message}", False)


def finite_reward(value: Any, source: str) -> float:
    """A reward must be a finite number; anything else is a failed rollout, never a silent 0 nor a new sample."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise verifier_error(source, f"returned reward {shown(value)}, not a finite number")
    return float(value)


def json_extras(extras: dict, source: str) -> dict:
    """A verdict's extras go into the record as JSON: a set, an int over 64 bits or a non-string key cannot."""
    try:
        orjson.dumps(extras)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise verifier_error(source, f"returned extras that are not JSON ({exc}): {shown(extras)}") from None
    return extras


def verdict_of(verdict: Any, source: str) -> tuple[float, dict]:
    """(reward, extras) of a verifier's return value: a number, or a dict with `reward` and JSON extras."""
    if isinstance(verdict, dict):
        extras = {k: v for k, v in verdict.items() if k != "reward"}
        return finite_reward(verdict.get("reward"), source), json_extras(extras, source)
    return finite_reward(verdict, source), {}


def make_scorer(
    protocol: str,
    verifier: str,
    session_getter: Callable[[], aiohttp.ClientSession],
    timeout: aiohttp.ClientTimeout,
    headers: dict[str, str],
    pool: VerifyPool | None = None,
    retry_policy: RetryPolicy | None = None,
    on_retry: Callable[[RequestFailed], None] = lambda failure: None,
) -> Scorer:
    """Build the scorer for an agent's settings. Without a `pool`, verifiers run in this process (the start-up
    check that a module:function verifier imports). `retry_policy` retries a /verify request (only the request:
    the output is never sampled again), telling `on_retry` of each retry (the run's stats count them)."""
    timeout_s = pool.timeout_s if pool is not None else VERIFY_TIMEOUT_S
    if PROTOCOLS[protocol].agent_server:

        async def from_agent(row: dict, result: Result) -> tuple[float, dict]:
            return finite_reward(result.reward, "'the agent'"), {}

        return from_agent

    kind = verifier_kind(verifier)
    if kind == "builtin":
        from rollout_pipeline.verify.verifiers import is_truncated, verify

        async def in_process(row: dict, result: Result) -> tuple[float, dict]:
            args = (result.output, row, is_truncated(result.response))
            if len(result.output) <= INLINE_VERIFY_CHARS or pool is None:
                verdict = verify(verifier, *args)  # microseconds: cheaper than any hand-off
            else:
                # A long output is verified off the event loop, so the other requests in flight keep their
                # timing, and in a process that is killed if it overruns.
                verdict = await pool.verify(verifier, args, len(result.output))
            return verdict_of(verdict, repr(verifier))

        return in_process

    if kind == "url":

        async def ask(body: bytes) -> Any:
            reply, _ = await post_json(session_getter(), verifier, body, headers, timeout)
            if not isinstance(reply, dict) or "reward" not in reply:
                raise RequestFailed("invalid_verify_reply", f"{verifier}: reply has no 'reward'", True, reply=reply)
            return reply

        async def remote(row: dict, result: Result) -> tuple[float, dict]:
            body = {**row, "response": result.response}
            encoded = orjson.dumps(body)
            # A /verify request that fails in transit is asked again; the output it scores stays the same.
            reply = await (
                with_retries(lambda: ask(encoded), retry_policy, on_retry) if retry_policy is not None else ask(encoded)
            )
            check_nemo_gym_sentinels(reply, verifier)  # mask_sample, judge_failed: not scored
            extras = {k: v for k, v in reply.items() if k not in body and k != "reward"}
            return finite_reward(reply["reward"], repr(verifier)), json_extras(extras, repr(verifier))

        return remote

    module_name, _, function_name = verifier.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"verifier {verifier!r}: cannot import ({exc})") from None
    is_async = inspect.iscoroutinefunction(function)

    async def custom(row: dict, result: Result) -> tuple[float, dict]:
        args = (dict(row), result.output, result.response)
        if is_async:  # it awaits its own I/O: it runs on the event loop, where it was written to run
            try:
                verdict = await asyncio.wait_for(function(*args), timeout_s)
            except TimeoutError:
                raise RequestFailed(
                    "verifier_timeout",
                    f"verifier {verifier!r} gave no verdict within {timeout_s:g} s (verify_timeout_s)",
                    False,
                ) from None
        elif pool is not None:  # its cost is unknown (code execution, a sandbox): a worker, under the time limit
            verdict = await pool.verify(verifier, args, len(result.output))
        else:
            verdict = function(*args)
        return verdict_of(verdict, repr(verifier))

    return custom


async def score_reply(
    scorer: Scorer, agent: AgentSettings, row: dict, result: Result, reply: dict
) -> tuple[float, dict]:
    """One rollout's verdict: (reward, extras), or RequestFailed with the cause it was not scored. An agent's reply
    (protocol: agent) brings its own fields (NeMo Gym's agent_ref, _ng_environment_server, _ng_result_type,
    ng_trajectory, the run indices, its verifier's extras): they are the extras, as the agent returned them."""
    try:
        reward, extras = await scorer(row, result)
    except NotFinished as exc:  # a /verify reply with a NeMo Gym failure sentinel (masked, ...)
        raise RequestFailed(exc.cause, str(exc), exc.retryable, skip=exc.skip, reply=exc.reply) from None
    except (RequestFailed, UserError):
        raise
    except Exception as exc:  # a verifier's own bug fails this rollout, not the whole run
        raise verifier_error(repr(agent.verifier), f"raised {shown(exc, 300)}") from None
    if PROTOCOLS[agent.protocol].agent_server:
        extras = json_extras(
            {
                k: v
                for k, v in reply.items()
                if k not in row and k not in ("response", "reward", "responses_create_params")
            },
            "'the agent'",
        )
    return reward, extras
