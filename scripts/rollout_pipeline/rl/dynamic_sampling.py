"""DAPO-style dynamic sampling for the RL loop: draw prompts until enough groups have reward variance, keep those.

A group whose rewards all tie has no group-relative advantage: it costs rollouts and teaches nothing. With
`rl.collect.dynamic_sampling: {groups: G, max_prompts: M}`, rl_collect@NNN collects the iteration's first G prompts,
counts the groups with reward variance, and while there are fewer than G draws more prompts of the same file (as many
as the share of informative groups so far says the rest needs), up to M prompts (or the file's end). Each round
resumes the previous one (the collector keeps the finished rollouts of a raised limit), so no rollout is drawn twice.
The rollout file then keeps only the first G informative groups, in file order: what the trainer reads.

Every rl_collect@NNN writes metrics/rl/sampling_NNN.json: prompts drawn, informative groups, groups kept, rounds
(without dynamic sampling: the prompts drawn and all of them kept), which the progress table and the report show.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rollout_pipeline import paths
from rollout_pipeline.jsonl import iter_jsonl, write_json, write_jsonl
from rollout_pipeline.stages.groups import iter_groups

MIN_SHARE = 0.05  # the informative share assumed when too few groups are informative to estimate it


def sampling_metrics_path(key: str) -> Path:
    return paths.RL_METRICS_DIR / f"sampling_{key}.json"


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


def collect_informative(
    settings: Any, run: Callable[[Any], int], spec: dict | None, metrics_path: str | os.PathLike
) -> int:
    """Run the collector (`run(settings)`) in rounds as the module docstring says, or once when `spec` is None;
    write the sampling metrics. Returns the collector's exit code."""
    if spec is None:
        code = run(settings)
        if code == 0:
            drawn, informative = count_groups(settings.output_path)
            write_json(metrics_path, _metrics(None, drawn, informative, drawn, 1))
        return code
    wanted = spec["groups"]
    rows = sum(1 for _ in iter_jsonl(settings.input_path))
    cap = min(spec["max_prompts"], rows, settings.limit or rows)
    limit, rounds = min(wanted, cap), 0
    while True:
        settings.limit = limit
        code = run(settings)
        rounds += 1
        if code != 0:
            return code
        drawn, informative = count_groups(settings.output_path)
        if informative >= wanted or limit >= cap:
            break
        limit = next_limit(limit, drawn, informative, wanted, cap)
        settings.force = False  # the next round resumes this one: its rollouts are kept, only new prompts are drawn
    kept = keep_informative(settings.output_path, wanted)
    write_json(metrics_path, _metrics(spec, drawn, informative, kept, rounds))
    return 0


def _metrics(spec: dict | None, drawn: int, informative: int, kept: int, rounds: int) -> dict:
    return {
        "dynamic_sampling": spec is not None,
        "requested_groups": None if spec is None else spec["groups"],
        "max_prompts": None if spec is None else spec["max_prompts"],
        "prompts_drawn": drawn,
        "informative_groups": informative,
        "groups_kept": kept,
        "rounds": rounds,
    }
