"""The collector's input pass: validate every row and hash the file before anything is sent or written."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import MAX_NESTING, decode_line, nested_too_deep
from rollout_pipeline.rows import Prompt, expected_answers, normalize_row, prompt_id

_CHUNK = 1024 * 1024
# A prompt lands in its record up to three times (input, responses_create_params, the passthrough fields), and the
# stages read lines of up to 64 MB: a larger row would make records no stage can read.
MAX_ROW_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class InputScan:
    rows: int  # rows that will be used (after limit)
    sha256: str  # hash of the bytes up to the last row used: part of the run identity
    bytes: int  # how many bytes that hash covers


@contextlib.contextmanager
def readable_again(path: Path) -> Iterator[Path]:
    """The input as a file that can be read more than once: a pipe or a device (`/dev/stdin`, `<(jq ...)`) is copied
    to a temporary file first, since a run reads its input once to check it and again to send it."""
    try:
        regular = stat.S_ISREG(path.stat().st_mode) or path.is_dir()
    except OSError:
        regular = True  # missing: scan_input says so, naming the path
    if regular:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="collect-input-") as directory:
        copy = Path(directory) / (path.name or "input")
        try:
            with open(path, "rb") as source, open(copy, "wb") as target:
                shutil.copyfileobj(source, target, _CHUNK)
        except OSError as exc:
            raise UserError(f"{path}: cannot read the input ({exc.strerror})") from None
        yield copy


def scan_input(path: Path, limit: int | None, answer_for: str | None = None) -> InputScan:
    """One streaming pass: every line up to `limit` must be a usable row; a bad one names file:line.

    `answer_for` names the in-process verifier (math, exact) when there is one: it needs every row's
    `expected_answer`, so a row without one is an input error here, before anything is sent."""
    if not path.exists():
        raise UserError(f"{path}: input file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a JSONL file of prompts")
    digest = hashlib.sha256()
    rows = hashed = 0
    # prompt id -> (digest of its prompt, first line): 8 + ~60 bytes per row with an explicit id
    seen_ids: dict[str, tuple[bytes, int]] = {}
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if limit is not None and rows >= limit:
                break  # rows past the limit are not this run's: appending them changes nothing
            digest.update(raw)
            hashed += len(raw)
            if not raw.strip():
                continue
            if len(raw) > MAX_ROW_BYTES:
                raise UserError(
                    f"{path}:{lineno}: the row is {len(raw):,} bytes, over the {MAX_ROW_BYTES:,}-byte limit "
                    "for one prompt (its records would be too large for the stages to read)"
                )
            prompt = _parse_row(raw, str(path), lineno)
            _check_unique_id(prompt, seen_ids, path, lineno)
            row = prompt.row
            if answer_for is not None and row.get("expected_answer") is None:
                raise UserError(
                    f"{path}:{lineno}: row has no 'expected_answer', which the agent's verifier: "
                    f"{answer_for} needs to score the output; add it, or use another verifier"
                )
            if answer_for is not None:
                try:
                    expected_answers(row["expected_answer"])
                except ValueError as exc:
                    raise UserError(f"{path}:{lineno}: {exc}") from None
            rows += 1
    if rows == 0:
        raise UserError(f"{path}: no prompts in the file (it is empty or has only blank lines)")
    return InputScan(rows=rows, sha256=digest.hexdigest(), bytes=hashed)


def prefix_sha256(path: Path, size: int) -> str | None:
    """The sha256 of the file's first `size` bytes when they end at a line boundary (whole rows), else None."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        left = size
        while left > 0:
            chunk = handle.read(min(_CHUNK, left))
            if not chunk:
                return None  # the file is shorter than that
            digest.update(chunk)
            left -= len(chunk)
            last = chunk[-1:]
        if size and last != b"\n" and handle.read(1):
            return None  # the prefix ends inside a row that goes on: that row changed
    return digest.hexdigest()


def _check_unique_id(prompt: Prompt, seen: dict[str, tuple[bytes, int]], path: Path, lineno: int) -> None:
    """Two rows may share an id only when they hold the same prompt: anything that groups rollouts by prompt_id
    (the seed's DPO snippet, a trainer's group baseline) would otherwise mix two prompts' answers."""
    if prompt.row.get("id") is None and prompt.row.get("task_id") is None:
        return  # the id is a hash of the prompt itself
    key = prompt_id(prompt)
    content = hashlib.blake2b(orjson.dumps(prompt.messages, option=orjson.OPT_SORT_KEYS), digest_size=8).digest()
    first = seen.setdefault(key, (content, lineno))
    if first[0] != content:
        raise UserError(
            f"{path}:{first[1]} and {path}:{lineno} share the id {key!r} but hold different prompts; "
            "give every row a unique 'id' / 'task_id', or drop them so that a hash of the prompt is "
            "used (rollouts are grouped per prompt, and two prompts under one id would be mixed)"
        )


def _parse_row(raw: bytes, name: str, lineno: int) -> Prompt:
    value = decode_line(raw, name, lineno)
    if nested_too_deep(value):
        raise UserError(
            f"{name}:{lineno}: the row nests arrays or objects more than {MAX_NESTING} levels deep, "
            "more than its record could hold; flatten it (a nested field can travel as a JSON string)"
        )
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        raise UserError(f"{name}:{lineno}: expected a JSON object (a prompt row), got a JSON {kind}")
    return normalize_row(value, f"{name}:{lineno}")


def iter_raw_rows(path: Path, limit: int | None) -> Iterator[tuple[int, int, bytes]]:
    """Stream (task_index, line number, raw line) for the rows a run uses, undecoded: a process that collects
    only some of the tasks decodes only those."""
    task_index = 0
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if limit is not None and task_index >= limit:
                return
            if not raw.strip():
                continue
            yield task_index, lineno, raw
            task_index += 1


def parse_row(raw: bytes, path: Path, lineno: int) -> Prompt:
    """One row from `iter_raw_rows`, normalized (already validated by scan_input)."""
    return _parse_row(raw, str(path), lineno)
