"""Input rows: NeMo Gym's canonical format, convenience forms, stable prompt ids."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import orjson

from rollout_pipeline.errors import UserError

Message = dict[str, Any]


def _content_text(content: Any) -> str:
    """Flatten OpenAI-style content parts ([{type: input_text, text}...]) to plain text; anything else is an error
    (an object would otherwise reach the model as Python's repr of it)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            text = part.get("text", "") if isinstance(part, dict) else part
            if not isinstance(text, str):
                raise ValueError(f"a content part's 'text' must be a string, got {type(text).__name__} {text!r:.40}")
            texts.append(text)
        return "".join(texts)
    if content is None:
        return ""
    raise ValueError(
        f"a message's 'content' must be a string or a list of content parts, got "
        f"{type(content).__name__} {content!r:.60}"
    )


def input_messages(value: Any) -> list[Message]:
    """`responses_create_params.input` (a string or a list of messages) as a list of {role, content}."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        messages = []
        for item in value:
            if not isinstance(item, dict) or "content" not in item:
                raise ValueError("each input message must be an object with 'role' and 'content'")
            messages.append({"role": item.get("role", "user"), "content": _content_text(item["content"])})
        if messages:
            return messages
    raise ValueError("input must be a non-empty string or a non-empty list of {role, content} messages")


@dataclass(frozen=True)
class Prompt:
    """A row in canonical form (responses_create_params.input set) and its input as a list of {role, content}."""

    row: dict
    messages: list[Message]


def normalize_row(row: dict, where: str) -> Prompt:
    """The row in canonical form, with its input messages; `where` is 'file:line' for errors."""
    params = row.get("responses_create_params")
    if params is not None and not isinstance(params, dict):
        raise UserError(f"{where}: 'responses_create_params' must be an object")
    if params and "input" in params:
        source: Any = params["input"]
    elif "prompt" in row:
        source = row["prompt"]
    elif "messages" in row:
        source = row["messages"]
    else:
        raise UserError(f"{where}: row has no input; give 'responses_create_params.input', 'prompt' or 'messages'")
    try:
        messages = input_messages(source)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    if not any(m["content"].strip() for m in messages):
        raise UserError(f"{where}: input is empty")
    out = {k: v for k, v in row.items() if k not in ("prompt", "messages", "responses_create_params")}
    out["responses_create_params"] = {**(params or {}), "input": source}
    return Prompt(out, messages)


def prompt_id(prompt: Prompt) -> str:
    """The row's `id` or `task_id` if present, else a short hash of its canonical input messages."""
    for key in ("id", "task_id"):
        if key in prompt.row and prompt.row[key] is not None:
            return str(prompt.row[key])
    canonical = orjson.dumps(prompt.messages, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


def expected_answers(value: Any) -> list[str]:
    """The acceptable answers in an `expected_answer`: a string or number, or a non-empty list of them.
    Raises ValueError saying what is wrong with any other value."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("'expected_answer' is an empty list; give at least one acceptable answer")
    answers = []
    for item in items:
        if (
            isinstance(item, bool)
            or not isinstance(item, (str, int, float))
            or (isinstance(item, float) and not math.isfinite(item))
        ):
            kind = "a nested list" if isinstance(item, list) else f"{type(item).__name__} {item!r}"[:80]
            raise ValueError(f"'expected_answer' holds {kind}; give a string or number, or a list of them")
        text = str(item).strip()
        if not text:
            raise ValueError(
                "'expected_answer' is empty, so every output would score 0; give the answer, or drop the row"
            )
        answers.append(text)
    return answers
