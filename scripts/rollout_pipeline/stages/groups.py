"""Stage input: rollout records read, validated and grouped by prompt, streaming.

filter, pair and metrics all read a collector output file the same way, through here:
records are validated as they stream past (every problem names file:line), and all rollouts of
one prompt are adjacent (the collector writes them sorted by (task_index, rollout_index)), so a
prompt's group is a run of adjacent records. Groups are keyed by the row's position, `task_index`, not by
`prompt_id`: two rows that share an id are two tasks, and merging them would pair one prompt's answer with
another's. (The collector refuses an input where different prompts share an id, so on its files this is what
the seed's `itertools.groupby(rollouts, key=lambda r: r["prompt_id"])` sees.) Hand-made files without
`task_index` are grouped by `prompt_id`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import iter_jsonl

NO_ROLLOUTS_HINT = "no rollouts; did collect run?"


@dataclass(frozen=True, slots=True)
class Rollout:
    """One validated rollout record and where it came from (for error messages)."""

    path: str
    line: int
    prompt_id: str
    reward: float
    record: dict

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def messages(self) -> list[dict]:
        """The input messages (`input`), checked to be a list of {role, content} objects."""
        value = self.record.get("input")
        if not isinstance(value, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in value
        ):
            raise UserError(f"{self.where}: 'input' must be a list of {{role, content}} messages, got {_short(value)}")
        return value

    def output(self) -> str:
        """The final assistant text (`output`)."""
        value = self.record.get("output")
        if not isinstance(value, str):
            what = (
                "has no 'output'" if "output" not in self.record else f"'output' must be a string, got {_short(value)}"
            )
            raise UserError(f"{self.where}: record {what} (the final assistant text)")
        return value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reward(record: dict, where: str) -> float:
    if "reward" not in record:
        raise UserError(
            f"{where}: record has no 'reward'; every rollout needs the verifier's reward "
            "(is this a collector output? run collect on the prompts first)"
        )
    value = record["reward"]
    # bool is an int subclass in Python, but `true` as a reward is almost certainly a bug upstream.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: 'reward' must be a number, got {_short(value)}")
    reward = float(value)
    if not math.isfinite(reward):
        raise UserError(f"{where}: 'reward' is {reward}; rewards must be finite numbers")
    return reward


def _prompt_id(record: dict, where: str) -> str:
    value = record.get("prompt_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        what = "has no 'prompt_id'" if value is None else f"'prompt_id' must be a string, got {_short(value)}"
        raise UserError(f"{where}: record {what}; rollout files from the collector always carry one")
    return str(value)


def read_rollouts(path: str | os.PathLike) -> Iterator[Rollout]:
    """Stream the validated rollouts of a file; an empty file is an error (the stage has nothing to do)."""
    name = str(path)
    count = 0
    for line, record in iter_jsonl(path):
        where = f"{name}:{line}"
        yield Rollout(name, line, _prompt_id(record, where), _reward(record, where), record)
        count += 1
    if count == 0:
        raise UserError(f"{name}: {NO_ROLLOUTS_HINT}")


def _check_grouped(rollouts: Iterator[Rollout]) -> Iterator[Rollout]:
    """Pass rollouts through, failing when the file is not in the collector's order.

    Collector records carry task_index: it must never decrease (O(1) memory, and the same prompt may
    legitimately appear twice in the input as two tasks). Hand-made files without task_index fall back to
    "a prompt_id must not come back after another prompt's group", which remembers one entry per prompt.
    """
    first_line: dict[str, int] = {}
    current: str | None = None
    last_task = -1
    for rollout in rollouts:
        task = rollout.record.get("task_index")
        if isinstance(task, int) and not isinstance(task, bool):
            if task < last_task:
                raise UserError(
                    f"{rollout.where}: task_index {task} comes after {last_task}; the file must be sorted by "
                    "(task_index, rollout_index) as the collector writes it"
                )
            last_task = task
        elif rollout.prompt_id != current:
            current = rollout.prompt_id
            if current in first_line:
                raise UserError(
                    f"{rollout.where}: prompt_id {current!r} reappears after other prompts (its group started at line "
                    f"{first_line[current]}); the file must be sorted by (task_index, rollout_index) as the collector "
                    "writes it, so each prompt's rollouts are adjacent"
                )
            first_line[current] = rollout.line
        yield rollout


def iter_groups(path: str | os.PathLike) -> Iterator[tuple[str, Iterator[Rollout]]]:
    """Yield (prompt_id, rollouts of that prompt) in file order, lazily like itertools.groupby.

    Each group's iterator must be consumed (or abandoned) before asking for the next group;
    nothing but the current record is held, so stages can stay O(1) in memory per group too.
    """
    groups = itertools.groupby(_check_grouped(read_rollouts(path)), key=_task_key)
    return ((key[1], group) for key, group in groups)


def _task_key(rollout: Rollout) -> tuple[Any, str]:
    task = rollout.record.get("task_index")
    return (task if isinstance(task, int) and not isinstance(task, bool) else None), rollout.prompt_id
