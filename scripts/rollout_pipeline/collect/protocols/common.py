"""What every protocol adapter shares: the result shape, the reply error, and checks of Responses objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollout_pipeline.errors import UserError

LOGPROBS_INCLUDE = "message.output_text.logprobs"


class InvalidReply(Exception):
    """The server answered 200 but not with what the protocol promises (retryable: servers glitch)."""


class NotFinished(Exception):
    """A well-formed reply that is not a finished generation, so it must never be scored: aborted, ended in a
    tool call nobody runs, cut off before the prompt fit the context, or marked by NeMo Gym as a failure.

    `cause` names it in the failures file and the stats; `retryable` says whether asking again can help;
    `skip` marks a property of the prompt (too long for the context): never retried, and the stage still
    succeeds. `reply` is the server's reply, kept in the failures file for inspection, and `response` what the
    model produced in Responses form, when there is something to keep (a tool call's `function_call` items)."""

    def __init__(
        self,
        cause: str,
        message: str,
        *,
        retryable: bool = False,
        skip: bool = False,
        reply: Any = None,
        response: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.retryable = retryable
        self.skip = skip
        self.reply = reply
        self.response = response


@dataclass
class Result:
    """One rollout's worth of server reply."""

    response: dict  # Responses-API-shaped object
    output: str  # final assistant text
    reward: float | None = None  # set by the agent protocol (the agent verified it)
    extras: dict | None = None  # verifier extras returned by the agent


def response_text(response: dict) -> str:
    """The assistant's final text: every output_text part of the message items, joined."""
    if isinstance(response.get("output_text"), str):
        return response["output_text"]
    parts = []
    for item in response.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for content in item.get("content") or []:
                if isinstance(content, dict) and content.get("type") == "output_text":
                    parts.append(content.get("text") or "")
    return "".join(parts)


def require(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InvalidReply(f"reply has no '{key}' ({what})")
    return obj[key]


def without_timing(response: dict) -> dict:
    # Timestamps would make a seeded run's records differ byte for byte; timing belongs in the run stats.
    return {k: v for k, v in response.items() if k not in ("created_at", "created")}


# No reply holds more tokens than this (2^31 - 1, a 32-bit count): anything larger is a broken server, and summed
# over a run it would overflow the 64-bit integers the stats are written with.
MAX_TOKEN_COUNT = 2**31 - 1


def checked_usage(value: Any, keys: tuple[str, ...], where: str) -> dict:
    """`usage` checked: absent or an object whose token counts are integers from 0 to MAX_TOKEN_COUNT (else the
    reply is broken)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidReply(f"{where} 'usage' is not an object")
    for key in keys:
        count = value.get(key)
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_TOKEN_COUNT
        ):
            raise InvalidReply(f"{where} 'usage.{key}' is {count!r}, not a token count")
    return value


# Responses statuses that mean "no finished generation here" (incomplete is a finished, truncated one).
_UNFINISHED = ("failed", "cancelled", "in_progress", "queued")


# A logprob is log(p) <= 0: anything above this is no rounding of a server's log-softmax but a broken reply.
LOGPROB_ROUNDING = 1e-4


def check_token_data(item: dict, where: str) -> None:
    """Token data on an output item (NeMo Gym's names) that a trainer can use: token ids that are integers >= 0,
    logprobs that are numbers <= 0, and one logprob per generated token id."""
    ids, logprobs = item.get("generation_token_ids"), item.get("generation_log_probs")
    for name, values in (("prompt_token_ids", item.get("prompt_token_ids")), ("generation_token_ids", ids)):
        if values is None:
            continue
        # set(map(type, ...)) and min() run in C: microseconds for the thousands of ids of a long generation.
        if not isinstance(values, list) or not set(map(type, values)) <= {int}:
            raise InvalidReply(f"{where} has {name} that are not a list of integers")
        if values and min(values) < 0:
            raise InvalidReply(f"{where} has a negative token id ({min(values)}) in {name}")
    if logprobs is not None:
        if not isinstance(logprobs, list) or not set(map(type, logprobs)) <= {float, int}:
            raise InvalidReply(f"{where} has generation_log_probs that are not a list of numbers")
        if logprobs and max(logprobs) > LOGPROB_ROUNDING:
            raise InvalidReply(
                f"{where} has a positive logprob ({max(logprobs)!r}) in generation_log_probs; a "
                "log-probability is at most 0"
            )
    if ids is not None and logprobs is not None and len(ids) != len(logprobs):
        raise InvalidReply(
            f"{where} has {len(ids)} generation_token_ids but {len(logprobs)} generation_log_probs; "
            "there is one logprob per generated token"
        )


def check_response(response: dict, where: str) -> None:
    """A Responses object must be a finished generation with well-formed message items: a failed response
    or a malformed message would otherwise become an empty output, and the verifier would score it 0."""
    if response.get("error") or response.get("status") in _UNFINISHED:
        error = response.get("error")
        detail = error.get("message") if isinstance(error, dict) else error
        raise InvalidReply(f"{where} status is {response.get('status')!r}" + (f" ({detail})" if detail else ""))
    output = response.get("output")
    if not isinstance(output, list):
        raise InvalidReply(f"{where} has no 'output' list (Responses API)")
    for item in output:
        if not isinstance(item, dict):
            raise InvalidReply(f"{where} has an output item that is not an object")
        if item.get("type") == "message":
            parts = item.get("content")
            if (
                not isinstance(parts, list)
                or not all(isinstance(p, dict) for p in parts)
                or any(p.get("type") == "output_text" and not isinstance(p.get("text"), str) for p in parts)
            ):
                raise InvalidReply(f"{where} has a message whose 'content' is not a list of output_text parts")
        check_token_data(item, where)
    checked_usage(response.get("usage"), ("input_tokens", "output_tokens"), where)


def window_cut(tokens: int, max_output_tokens: int, reply: Any, prefix: str = "") -> NotFinished:
    """A generation the context window cut before max_output_tokens: it did not complete, so it is skipped (the
    prompt and the limit do not both fit), never scored."""
    return NotFinished(
        "context_length",
        f"{prefix}the model's context window cut the generation after {tokens} of "
        f"max_output_tokens {max_output_tokens} tokens (the prompt and max_output_tokens do not both "
        "fit): skipped, not scored; lower max_output_tokens or shorten the prompt",
        skip=True,
        reply=reply,
    )


def is_truncated_by_usage(usage: Any, max_output_tokens: Any) -> bool:
    """A reply that reached the requested token limit was cut there, whatever its status says (llama-server's
    /v1/responses says `completed` after a length cut)."""
    if not isinstance(usage, dict) or not isinstance(max_output_tokens, int):
        return False
    used = usage.get("output_tokens")
    return isinstance(used, int) and not isinstance(used, bool) and used >= max_output_tokens


def check_finished(response: dict, where: str, max_output_tokens: Any = None, reply: Any = None) -> None:
    """Raise NotFinished for a Responses object that is well formed but no finished generation to score; mark a
    silent length cut as `incomplete` (so the verifier's truncation rule applies)."""
    output = response.get("output") or []
    text = response_text(response)
    if (
        response.get("status") == "incomplete"
        and response.get("usage") is None
        and not text.strip()
        and not any(isinstance(item, dict) and item.get("type") == "function_call" for item in output)
    ):
        # NeMo Gym's vllm_model answers a prompt longer than the context with HTTP 200, an empty message and
        # usage null: the model never saw the prompt.
        raise NotFinished(
            "context_length",
            f"{where}: status incomplete with no usage and no output (the prompt does not fit the model's context)",
            skip=True,
            reply=reply if reply is not None else response,
        )
    last = output[-1] if output else None
    if isinstance(last, dict) and last.get("type") == "function_call":
        raise NotFinished(
            "tool_call",
            f"{where}: the turn ended in a call to {last.get('name')!r} that nothing runs "
            "(use an agent server that executes tools)",
            reply=reply if reply is not None else response,
            response=response,
        )
    used = (response.get("usage") or {}).get("output_tokens")
    if (
        response.get("status") == "incomplete"
        and (response.get("incomplete_details") or {}).get("reason") == "max_output_tokens"
        and isinstance(max_output_tokens, int)
        and isinstance(used, int)
        and used < max_output_tokens
    ):
        # vLLM lowers max_output_tokens to what fits beside the prompt and still names the limit as the reason
        # (its reply echoes the lowered value): the context window cut it, and an unfinished generation is never
        # scored.
        raise window_cut(used, max_output_tokens, reply if reply is not None else response, f"{where}: ")
    if response.get("status") == "completed" and is_truncated_by_usage(response.get("usage"), max_output_tokens):
        response["status"] = "incomplete"
        response["incomplete_details"] = {
            "reason": "max_output_tokens",
            "inferred": "usage.output_tokens reached max_output_tokens while status said completed",
        }


def put_token_data(
    response: dict, prompt_ids: Any = None, generation_ids: Any = None, generation_log_probs: Any = None
) -> None:
    """Token data on the last output item, under NeMo Gym's names (what NeMo RL reads); absent ones are left out."""
    output = response.get("output") or []
    if not output or not isinstance(output[-1], dict):
        return
    last = output[-1]
    for key, value in (
        ("prompt_token_ids", prompt_ids),
        ("generation_token_ids", generation_ids),
        ("generation_log_probs", generation_log_probs),
    ):
        if value is not None and key not in last:
            last[key] = value
    check_token_data(last, "reply")


def other_model(response: dict, asked: str | None) -> str | None:
    """The model a reply names when it is not the one asked for, else None. Not a different model: an OpenAI
    dated snapshot of the name asked (`gpt-4o` answered as `gpt-4o-2024-08-06`) or the same name under another
    organisation or path (`org/model`, `/models/org/model`). vLLM answers with its first served model name
    whatever alias was asked (vllm/entrypoints/openai/serving_models.py, `model_name`), so an alias is only
    worth a note, never a failure."""
    answered = response.get("model")
    if not asked or not isinstance(answered, str) or answered == asked:
        return None
    base_asked, base_answered = asked.rstrip("/").rsplit("/", 1)[-1], answered.rstrip("/").rsplit("/", 1)[-1]
    if base_answered == base_asked or base_answered.startswith(base_asked + "-"):
        return None
    return answered


def asks_for_logprobs(body: dict) -> bool:
    """Whether a chat or Responses body asks for the generated tokens' logprobs, whichever way it was asked."""
    return body.get("logprobs") is True or LOGPROBS_INCLUDE in (body.get("include") or [])


def logprobs_mode(stated: str | None, url: str | list[str]) -> str:
    """What kind of logprobs the agent's server returns: its `logprobs_mode` as `stated`, else vLLM's default
    (raw_logprobs: before temperature and top_p) or, for the embedded server, processed_logprobs (its logprobs are
    those of the distribution it sampled from)."""
    if stated:
        return stated
    return "processed_logprobs" if url == "embedded" else "raw_logprobs"


def label_logprobs(results: list[Result], asked: bool, mode: str, where: str) -> None:
    """Say which kind of logprobs each record holds; and when they were asked for, refuse a reply that has none
    for a rollout that generated tokens: the server does not return them the way they were asked (a record
    without them would still say they were asked for)."""
    for result in results:
        output = result.response.get("output") or []
        last = output[-1] if output and isinstance(output[-1], dict) else {}
        if "generation_log_probs" in last:
            last["generation_log_probs_mode"] = mode
        elif asked and (result.output or ((result.response.get("usage") or {}).get("output_tokens") or 0) > 0):
            raise UserError(
                f"{where}: the server returned no logprobs although the request asked for them (chat "
                f"`logprobs: true` with `top_logprobs: 0`, or the Responses include {LOGPROBS_INCLUDE!r}); "
                "this server does not return them this way: use another protocol or server, or stop "
                "asking (token_data: null, no include)"
            )
