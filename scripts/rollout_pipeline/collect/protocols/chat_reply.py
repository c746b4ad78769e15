"""OpenAI chat completions (vLLM, SGLang, llama.cpp, OpenAI), the reply: each choice becomes a Responses object that
keeps what RL needs: a `reasoning` item (vLLM's `reasoning`, `reasoning_content` from vLLM <= 0.13, SGLang and
llama.cpp), a `refusal` part, and token data on the last item under NeMo Gym's names. A choice that did not finish
(`abort`, a tool call) raises NotFinished. The request is chat.py's.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import orjson

from rollout_pipeline.collect.protocols.common import (
    InvalidReply,
    NotFinished,
    Result,
    check_token_data,
    checked_usage,
    put_token_data,
    window_cut,
)

_TOKEN_ID = re.compile(r"token_id:(\d+)\Z")


def _joined_chunks(chunks: list) -> tuple[str, str]:
    """(text, reasoning) of a message `content` given as a list of chunks, as Mistral's API sends it: `text`
    chunks, and Magistral's `thinking` chunks (a list of text chunks); `reference` chunks carry no text
    (spring-projects/spring-ai issue 5019 shows the shape)."""
    text, thinking = [], []
    for chunk in chunks:
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        if kind == "text" and isinstance(chunk.get("text"), str):
            text.append(chunk["text"])
        elif kind == "thinking" and isinstance(chunk.get("thinking"), (list, str)):
            inner = chunk["thinking"]
            thinking += (
                [inner]
                if isinstance(inner, str)
                else [part["text"] for part in inner if isinstance(part, dict) and isinstance(part.get("text"), str)]
            )
        elif kind != "reference":
            raise InvalidReply(f"reply has a message content chunk that is no text: {str(chunk)[:100]}")
    return "".join(text), "".join(thinking)


def _message(choice: Any) -> dict:
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise InvalidReply("reply has a choice without a 'message' object (chat completion)")
    message = choice["message"]
    if "content" not in message:
        raise InvalidReply("reply has a message without 'content' (chat completion)")
    if isinstance(message["content"], list):
        text, thinking = _joined_chunks(message["content"])
        message = {**message, "content": text}
        if thinking and not (message.get("reasoning") or message.get("reasoning_content")):
            message["reasoning"] = thinking
    for key in ("content", "refusal", "reasoning", "reasoning_content"):
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidReply(f"reply has a message whose '{key}' is {type(value).__name__}, not a string")
    return message


def _check_finished(choice: dict, message: dict, reply: dict) -> None:
    finish = choice.get("finish_reason")
    if finish == "abort":
        # vLLM and SGLang abort in-flight requests (e.g. when an RL trainer pauses the engine to sync weights):
        # the text is partial and must not be scored; asking again can succeed.
        raise NotFinished(
            "aborted",
            f"the server aborted the generation (finish_reason 'abort') after "
            f"{len(message.get('content') or '')} characters",
            retryable=True,
            reply=reply,
        )
    calls = message.get("tool_calls")
    if finish in ("tool_calls", "function_call") or (isinstance(calls, list) and calls) or message.get("function_call"):
        items = _function_call_items(calls or [])
        names = [item["name"] for item in items]
        reasoning = _output_items(message, choice.get("index", 0))[:-1]  # the model's reasoning before the call
        raise NotFinished(
            "tool_call",
            f"the turn ended in a tool call ({', '.join(map(str, names)) or finish}) that "
            "nothing runs; use an agent server that executes tools",
            reply=reply,
            response={"output": reasoning + items, "status": "completed"},
        )


def _function_call_items(calls: list) -> list[dict]:
    """Chat `tool_calls` as Responses `function_call` items."""
    items = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) and isinstance(call.get("function"), dict) else {}
        items.append(
            {
                "type": "function_call",
                "id": call.get("id") if isinstance(call, dict) else None,
                "call_id": call.get("id") if isinstance(call, dict) else None,
                "name": function.get("name"),
                "arguments": function.get("arguments"),
                "status": "completed",
            }
        )
    return items


def _token_data(reply: dict, choice: dict) -> tuple[list | None, list | None, list | None]:
    """(prompt ids, generation ids, generation logprobs) as the server gave them; ids are never re-tokenized."""
    prompt_ids = reply.get("prompt_token_ids")  # vLLM: on the reply
    if prompt_ids is None:
        prompt_ids = choice.get("prompt_token_ids")  # SGLang: on the choice
    generation_ids = choice.get("token_ids")  # vLLM return_token_ids
    if generation_ids is None:
        generation_ids = choice.get("response_token_ids")  # SGLang return_token_ids
    logprobs = None
    entries = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if isinstance(entries, list) and entries:
        logprobs = _entry_logprobs(entries)
        if generation_ids is None:
            # vLLM's return_tokens_as_token_ids renders each sampled token as "token_id:N": exact ids.
            first = entries[0].get("token") if isinstance(entries[0], dict) else None
            matches = [_TOKEN_ID.match(e.get("token") or "") for e in entries] if _TOKEN_ID.match(first or "") else []
            if matches and all(matches):
                generation_ids = [int(m.group(1)) for m in matches]
    check_token_data(
        {"prompt_token_ids": prompt_ids, "generation_token_ids": generation_ids, "generation_log_probs": logprobs},
        "reply",
    )  # before their lengths are counted
    return prompt_ids, generation_ids, logprobs


def _entry_logprobs(entries: list) -> list[float] | None:
    """Each entry's logprob; llama.cpp's post_sampling_probs gives a probability (`prob`) instead."""
    try:
        # The common case in one pass: every entry a dict with a float logprob (1,000s of entries per reply).
        values = [entry["logprob"] for entry in entries]
        if set(map(type, values)) <= {float}:
            return values
    except (KeyError, TypeError):
        pass
    values = []
    for entry in entries:
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("logprob"), (int, float))
            and not isinstance(entry["logprob"], bool)
        ):
            values.append(float(entry["logprob"]))
        elif isinstance(entry, dict) and isinstance(entry.get("prob"), (int, float)) and entry["prob"] > 0:
            values.append(math.log(entry["prob"]))
        else:
            raise InvalidReply(f"reply has a logprobs entry with no usable 'logprob' or 'prob': {str(entry)[:100]}")
    return values


def _output_items(message: dict, index: int) -> list[dict]:
    items = []
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if reasoning:
        items.append(
            {
                "type": "reasoning",
                "id": f"rs-{index}",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": reasoning}],
            }
        )
    parts = []
    if message.get("content") is not None or not message.get("refusal"):
        parts.append({"type": "output_text", "text": message.get("content") or "", "annotations": []})
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    items.append(
        {"type": "message", "id": f"msg-{index}", "role": "assistant", "status": "completed", "content": parts}
    )
    return items


def _stable_id(prefix: str, response: dict) -> str:
    # Real servers put random ids in replies; an id derived from the content keeps a seeded run against a
    # deterministic server byte-identical.
    return prefix + hashlib.blake2b(orjson.dumps(response, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()


def _choice_tokens(n: int, usage: dict, generation_ids: list | None, logprobs: list | None) -> int | None:
    """This choice's generated tokens, exactly, or None when the reply does not say. Chat `usage` sums all n
    choices; one choice's count is its own ids or logprobs (one per generated token)."""
    if n == 1 and usage.get("completion_tokens") is not None:
        return usage["completion_tokens"]
    if generation_ids is not None:
        return len(generation_ids)
    if logprobs is not None:
        return len(logprobs)
    return None


def _check_window_cut(choice: dict, tokens: int | None, max_output_tokens: Any, reply: dict) -> None:
    """A `length` stop before max_output_tokens is a cut by the context window (vLLM lowers max_tokens to what fits
    beside the prompt): the generation did not complete, so it is never scored."""
    if (
        choice.get("finish_reason") == "length"
        and isinstance(max_output_tokens, int)
        and tokens is not None
        and tokens < max_output_tokens
    ):
        raise window_cut(tokens, max_output_tokens, reply)


def parse_chat_reply(reply: dict, n: int = 1, max_output_tokens: Any = None) -> list[Result]:
    """One Result per requested choice of a decoded 200 chat-completions reply."""
    choices = reply.get("choices")
    if not isinstance(choices, list):
        raise InvalidReply("reply has no 'choices' (chat completion)")
    if len(choices) < n:
        raise ChoicesShortfall(n, len(choices))
    usage = checked_usage(reply.get("usage"), ("prompt_tokens", "completion_tokens"), "reply")
    messages = [_message(c) for c in choices[:n]]
    for choice, message in zip(choices[:n], messages):
        _check_finished(choice, message, reply)
    token_data = [_token_data(reply, c) for c in choices[:n]]
    counts = [_choice_tokens(n, usage, ids, logprobs) for _, ids, logprobs in token_data]
    for choice, tokens in zip(choices[:n], counts):
        _check_window_cut(choice, tokens, max_output_tokens, reply)
    input_tokens = usage.get("prompt_tokens", 0)
    results = []
    for choice, message, output_tokens, (prompt_ids, generation_ids, logprobs) in zip(
        choices[:n], messages, counts, token_data
    ):
        index = choice.get("index", 0)
        truncated = choice.get("finish_reason") == "length"
        response = {
            "object": "response",
            "model": reply.get("model"),
            "status": "incomplete" if truncated else "completed",
            # Named after the limit only when one was asked for and reached; else in the server's own word.
            "incomplete_details": {"reason": "max_output_tokens" if isinstance(max_output_tokens, int) else "length"}
            if truncated
            else None,
            "output": _output_items(message, index),
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": None if output_tokens is None else input_tokens + output_tokens,
            },
            "finish_reason": choice.get("finish_reason"),
        }
        if output_tokens is None:
            # n choices, and the reply counts only their sum: each choice's own count is unknown, and no estimate
            # is made up. The sum stays, once per record, for whoever needs it.
            response["usage"]["output_tokens_all_choices"] = usage.get("completion_tokens")
        # The id hashes the content before the token data is added: the ids and logprobs follow from it, and
        # hashing thousands of them for every reply would be a measurable cost (bench/token_data.py).
        response = {"id": _stable_id("chatcmpl-", response), **response}
        put_token_data(response, prompt_ids, generation_ids, logprobs)
        results.append(Result(response, message.get("content") or ""))
    return results


class ChoicesShortfall(InvalidReply):
    """Fewer choices than `n` asked for: the server ignores `n` (llama-cpp-python's server does); asking again
    gets the same, so the fetcher falls back to one request per rollout instead of retrying."""

    def __init__(self, asked: int, got: int) -> None:
        super().__init__(f"expected {asked} choice(s), got {got}")
        self.asked = asked
        self.got = got
