"""The reference server's request log: one JSON line per POST, naming its prompt by a hash."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from rollout_pipeline.rows import input_messages


def prompt_sha(source: Any) -> str | None:
    """Short sha256 of the canonical input messages; the same as rows.prompt_id's fallback hash."""
    try:
        canonical = orjson.dumps(input_messages(source), option=orjson.OPT_SORT_KEYS)
    except (ValueError, TypeError):
        return None
    return hashlib.sha256(canonical).hexdigest()[:16]


class RequestLog:
    """One JSON line per handled POST request, appended and flushed so tests can read it at once."""

    def __init__(self, path: str):
        self._handle = open(path, "ab")

    def write(self, entry: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(entry) + b"\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
