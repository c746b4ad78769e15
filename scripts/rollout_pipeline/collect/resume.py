"""Whose progress a run takes up: its identity, progress of other settings set aside, a grown input's taken over.

A progress file's first line is the run identity (hash of the input rows used, the agent and the effective
settings); a resume only happens when it matches. A run whose input extends the previous run's by whole rows
(prompts appended, a larger limit) takes over its finished rollouts: they sit at the same indices. A run with other
settings (a typo in the seed, an edited prompt) never destroys progress: the old file is set aside as
``.<name>.progress.<identity hash>.jsonl``, and a later run with the old identity takes it up again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from rollout_pipeline.collect.run_input import prefix_sha256
from rollout_pipeline.jsonl import atomic_writer, dumps


def identity_hash(identity: object) -> str:
    """A short, stable name for a run identity (what a set-aside progress file is named by)."""
    return hashlib.blake2b(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS), digest_size=6).hexdigest()


@dataclass(frozen=True)
class InputPrefix:
    """The input file and how many of its bytes the run uses (its identity's input_sha256 covers them)."""

    path: Path
    bytes: int

    def extends(self, previous_header: dict) -> bool:
        """Whether a previous run's input is a prefix of this one's, whole rows only (rows were appended, or the
        limit was raised): its finished rollouts are then rollouts of this run too, at the same indices."""
        size = previous_header.get("input_bytes")
        identity = previous_header.get("run_identity")
        if not isinstance(size, int) or not isinstance(identity, dict) or not 0 < size <= self.bytes:
            return False
        return prefix_sha256(self.path, size) == identity.get("input_sha256")


def set_aside_path(output: Path, identity: object) -> Path:
    return output.with_name(f".{output.name}.progress.{identity_hash(identity)}.jsonl")


def swap_in_own_progress(
    path: Path, output: Path, identity: dict, input: InputPrefix | None, header: bytes
) -> tuple[bool, str]:
    """Progress of other settings is set aside, not truncated; progress of ours set aside earlier comes back;
    progress of a run whose input this one's extends is taken over (under `header`, this run's). Returns whether the
    file at `path` was replaced (a lock on the old one must be taken again) and the note saying what happened."""
    previous_header = _read_header(path)
    previous = previous_header.get("run_identity") if isinstance(previous_header, dict) else previous_header
    current = orjson.loads(dumps(identity))
    if previous is _UNREADABLE or previous == current:
        return False, ""  # resume as it is, or (unreadable) say why and start fresh, as before
    if _extended_by(input, previous_header, current):
        return True, _take_over(path, previous_header, header)
    mine = set_aside_path(output, current)
    moved = False
    note = ""
    if previous is not None:
        aside = set_aside_path(output, previous)
        os.replace(path, aside)
        moved = True
        note = (
            f"{identity_change(previous, current)}; the previous progress is kept in {aside} "
            "(run with those settings again to resume it)"
        )
    if mine.exists():
        os.replace(mine, path)
        moved = True
    return moved, note


def _read_header(path: Path) -> object:
    """The progress file's header: None when the file is empty, _UNREADABLE when broken."""
    with open(path, "rb") as handle:
        first = handle.readline()
    if not first:
        return None
    try:
        header = orjson.loads(first)
        header["run_identity"]  # noqa: B018 -- a header without an identity is a broken one
        return header
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _UNREADABLE


def _extended_by(input: InputPrefix | None, header: dict | None, current: dict) -> bool:
    if header is None or input is None:
        return False
    previous = header["run_identity"]
    if not isinstance(previous, dict) or {**previous, "input_sha256": None} != {**current, "input_sha256": None}:
        return False
    return input.extends(header)


def _take_over(path: Path, previous_header: dict, header: bytes) -> str:
    """Keep the previous run's finished rollouts under this run's header: a new file (the old lines, streamed)
    renamed over the old one, so a crash midway leaves the old progress as it was."""
    size = previous_header["input_bytes"]
    with atomic_writer(path) as out, open(path, "rb") as old:
        old.readline()
        out.write(header)
        while chunk := old.read(1024 * 1024):
            out.write(chunk)
    return (
        f"the input grew past the previous run's {size:,} bytes (rows appended, or a larger "
        "limit): its finished rollouts are kept"
    )


def source_change(previous: object, current: object, path: Path) -> str:
    """What a resume says when the previous run fetched from elsewhere (it may have served other weights)."""
    return (
        f" (fetched from {_urls(previous)}; this run asks {_urls(current)}: "
        f"if that serves other weights under the same model name, delete {path} "
        "to start fresh)"
    )


_UNREADABLE = object()


def identity_change(old: dict, new: dict) -> str:
    """One line saying what differs between two run identities."""
    if not isinstance(old, dict):
        return "the previous run's identity is unreadable"
    if old.get("input_sha256") != new.get("input_sha256"):
        return "the input file changed since the previous run"
    changed = []
    for key in sorted(set(old) | set(new)):
        if key != "input_sha256" and old.get(key) != new.get(key):
            changed.append(f"{key} {_short(old.get(key))} -> {_short(new.get(key))}")
    return "settings changed since the previous run: " + "; ".join(changed) if changed else "the run identity changed"


def _short(value: object) -> str:
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= 120 else text[:117] + "..."


def _urls(source: object) -> str:
    return ", ".join(map(str, source)) if isinstance(source, list) else str(source)
