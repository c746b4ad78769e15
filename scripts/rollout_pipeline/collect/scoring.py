"""Choose how a rollout gets its reward: the agent's own, an in-process verifier, a /verify URL, or module:function."""
from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Awaitable, Callable

import aiohttp
import orjson

from rollout_pipeline.errors import UserError
from rollout_pipeline.collect.protocols import InvalidReply, Result
from rollout_pipeline.collect.protocols.agent import check_nemo_gym_sentinels
from rollout_pipeline.collect.transport import RequestFailed, post_json
from rollout_pipeline.collect.verify_pool import VerifyPool

Scorer = Callable[[dict, Result], Awaitable[tuple[float, dict]]]

# Outputs up to this length are verified inline (a few microseconds, linear in the length); longer ones in a
# worker process under the pool's hard time limit.
INLINE_VERIFY_CHARS = 4096


def finite_reward(value: Any, source: str) -> float:
    """A reward must be a finite number; anything else is a failed rollout, never a silent 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidReply(f"{source} returned reward {value!r}, not a finite number")
    return float(value)


def _public_row(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def make_scorer(protocol: str, verifier: str, session_getter: Callable[[], aiohttp.ClientSession],
                timeout: aiohttp.ClientTimeout, headers: dict[str, str], pool: VerifyPool | None = None) -> Scorer:
    """Build the scorer for an agent's settings. Without a `pool`, verifiers run in this process (the start-up
    check that a module:function verifier imports)."""
    if protocol == "agent":
        async def from_agent(row: dict, result: Result) -> tuple[float, dict]:
            return finite_reward(result.reward, "the agent"), {}
        return from_agent

    if verifier in ("math", "exact"):
        from rollout_pipeline.verify.verifiers import is_truncated, verify

        async def in_process(row: dict, result: Result) -> tuple[float, dict]:
            args = (result.output, row, is_truncated(result.response))
            if len(result.output) <= INLINE_VERIFY_CHARS or pool is None:
                verdict = verify(verifier, *args)  # microseconds: cheaper than any hand-off
            else:
                # A long output is verified off the event loop, so the other requests in flight keep their
                # timing, and in a process that is killed if it overruns.
                verdict = await pool.verify(verifier, args, len(result.output))
            extras = {k: v for k, v in verdict.items() if k != "reward"}
            return finite_reward(verdict["reward"], f"the {verifier} verifier"), extras
        return in_process

    if verifier.startswith(("http://", "https://")):
        async def remote(row: dict, result: Result) -> tuple[float, dict]:
            body = {**_public_row(row), "response": result.response}
            reply, _ = await post_json(session_getter(), verifier, orjson.dumps(body), headers, timeout)
            if isinstance(reply, dict):
                check_nemo_gym_sentinels(reply, verifier)  # e.g. judge_failed: no reward happened
            if not isinstance(reply, dict) or "reward" not in reply:
                raise RequestFailed("invalid_verify_reply", f"{verifier}: reply has no 'reward'", True, reply=reply)
            extras = {k: v for k, v in reply.items() if k not in body and k != "reward"}
            return finite_reward(reply["reward"], verifier), extras
        return remote

    module_name, _, function_name = verifier.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"verifier {verifier!r}: cannot import ({exc})") from None
    is_async = inspect.iscoroutinefunction(function)

    async def custom(row: dict, result: Result) -> tuple[float, dict]:
        args = (_public_row(row), result.output, result.response)
        if is_async:  # it awaits its own I/O: it runs on the event loop, where it was written to run
            verdict = await function(*args)
        elif pool is not None:  # its cost is unknown (code execution, a sandbox): a worker, under the time limit
            verdict = await pool.verify(verifier, args, len(result.output))
        else:
            verdict = function(*args)
        if isinstance(verdict, dict):
            extras = {k: v for k, v in verdict.items() if k != "reward"}
            return finite_reward(verdict.get("reward"), verifier), extras
        return finite_reward(verdict, verifier), {}
    return custom


