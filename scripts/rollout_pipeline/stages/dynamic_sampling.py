"""DAPO-style dynamic sampling, for an RL iteration or any objective: draw prompts until enough groups have reward
variance, keep those.

A group whose rewards all tie has no group-relative advantage: it costs rollouts and teaches nothing. With
`dynamic_sampling: {groups: G, max_prompts: M}` (rl.collect's, or an objective's), the collection runs the prompt
file's first G prompts, counts the groups with reward variance, and while there are fewer than G draws more prompts of
the same file (as many as the share of informative groups so far says the rest needs), up to M prompts (or the file's
end). Each round keeps its progress file, which the next round, with its raised limit, takes over (collect/resume.py:
an input that grows), so no rollout is drawn twice; the round under way is noted beside the output, so a run
interrupted in round k starts again at round k and resumes its progress. The rollout file then keeps only the first G
informative groups, in file order.

Every such collection writes a sampling metrics file: prompts drawn, informative groups, groups kept, rounds (without
dynamic sampling: the prompts drawn, all of them kept, and the informative groups when the rollouts are scored).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from rollout_pipeline.jsonl import iter_jsonl, write_json, write_jsonl
from rollout_pipeline.stages.groups import iter_groups

MIN_SHARE = 0.05  # the informative share assumed when too few groups are informative to estimate it


def count_groups(path: str | os.PathLike) -> tuple[int, int]:
    """(groups, groups with reward variance) of a rollout file, streaming."""
    groups = informative = 0
    for _, group in iter_groups(path):
        rewards = {rollout.reward for rollout in group}
        groups += 1
        informative += len(rewards) > 1
    return groups, informative


def keep_informative(path: str | os.PathLike, wanted: int) -> int:
    """Rewrite the rollout file (atomically) with only its first `wanted` groups that have reward variance."""

    def kept_records():
        for _, group in iter_groups(path):
            rollouts = list(group)
            if kept[0] < wanted and len({rollout.reward for rollout in rollouts}) > 1:
                kept[0] += 1
                yield from (rollout.record for rollout in rollouts)

    kept = [0]
    write_jsonl(path, kept_records())
    return kept[0]


def next_limit(limit: int, drawn: int, informative: int, wanted: int, cap: int) -> int:
    """How many prompts the next round draws in all: enough, at the share seen so far, for the missing groups."""
    share = max(informative / drawn if drawn else 0.0, MIN_SHARE)
    return min(cap, limit + max(1, math.ceil((wanted - informative) / share)))


def round_note_path(output: str | os.PathLike) -> Path:
    """Beside the output, hidden (DVC deletes a stage's declared outputs before it runs, not this): the round under
    way, so an interrupted run starts again there."""
    output = Path(output)
    return output.with_name(f".{output.name}.sampling-round.json")


def collect_informative(
    settings: Any,
    run: Callable[[Any], int],
    spec: dict | None,
    metrics_path: str | os.PathLike,
    discard_progress: Callable[[Path], None],
) -> int:
    """Run the collector (`run(settings)`, a collect.settings.CollectSettings) in rounds as the module docstring says,
    or once when `spec` is None; write the sampling metrics. `discard_progress(output)` removes the progress file the
    rounds kept. Returns the collector's exit code."""
    if spec is None:
        code = run(settings)
        if code == 0:
            if settings.generate_only:  # no verdicts yet (the score stage's): the prompts are what is known
                drawn, informative = settings.scanned_rows, None
            else:
                drawn, informative = count_groups(settings.output_path)
            write_json(metrics_path, _metrics(None, drawn, informative, drawn, 1))
        return code
    wanted = spec["groups"]
    rows = sum(1 for _ in iter_jsonl(settings.input_path))
    cap = min(spec["max_prompts"], rows, settings.limit or rows)
    limit, rounds = _resumed_round(settings, spec, cap) or (min(wanted, cap), 0)
    settings.keep_progress = True
    while True:
        settings.limit = limit
        _note_round(settings, spec, limit, rounds)
        code = run(settings)
        rounds += 1
        if code != 0:
            return code  # the note and the progress stay: the same command resumes this round
        drawn, informative = count_groups(settings.output_path)
        if informative >= wanted or limit >= cap:
            break
        limit = next_limit(limit, drawn, informative, wanted, cap)
        settings.force = False  # the next round takes this one's progress over: only new prompts are drawn
    kept = keep_informative(settings.output_path, wanted)
    write_json(metrics_path, _metrics(spec, drawn, informative, kept, rounds))
    discard_progress(settings.output_path)
    round_note_path(settings.output_path).unlink(missing_ok=True)
    return 0


def _note_round(settings: Any, spec: dict, limit: int, rounds: int) -> None:
    write_json(round_note_path(settings.output_path), _round_key(settings, spec) | {"limit": limit, "rounds": rounds})


def _resumed_round(settings: Any, spec: dict, cap: int) -> tuple[int, int] | None:
    """(limit, rounds done) of an interrupted run of the same sampling over the same prompts, or None."""
    try:
        note = orjson.loads(round_note_path(settings.output_path).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    key = _round_key(settings, spec)
    if not isinstance(note, dict) or {k: note.get(k) for k in key} != key:
        return None
    limit, rounds = note.get("limit"), note.get("rounds")
    if not isinstance(limit, int) or not isinstance(rounds, int) or not 1 <= limit <= cap:
        return None
    return limit, rounds


def _round_key(settings: Any, spec: dict) -> dict:
    return {"spec": spec, "prompts": str(settings.input_path), "num_repeats": settings.num_repeats}


def _metrics(spec: dict | None, drawn: int, informative: int | None, kept: int, rounds: int) -> dict:
    return {
        "dynamic_sampling": spec is not None,
        "requested_groups": None if spec is None else spec["groups"],
        "max_prompts": None if spec is None else spec["max_prompts"],
        "prompts_drawn": drawn,
        "informative_groups": informative,
        "groups_kept": kept,
        "rounds": rounds,
    }
