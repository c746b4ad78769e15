"""The profile stage: per-prompt statistics of a rollout file, and its prompts counted by pass-rate band.

One line per prompt (data/profile/<objective>.jsonl), in file order:
  prompt_id, task_index           which prompt
  n, correct, pass_rate           rollouts, those with reward >= pass_threshold, and correct / n
  reward_mean, reward_std         over the prompt's rollouts (population std)
  all_tied                        every rollout got the same reward: no signal for group-relative RL
  output_tokens_median            median response.usage.output_tokens (null when no rollout reports it)
  truncation_rate                 share of rollouts cut off at max_output_tokens
  unhealthy, consistently_unhealthy  rollouts with an unhealthy verdict, and NeMo Gym's task_consistently_unhealthy
  <group_by>                      the input field named by profile.group_by (e.g. difficulty), when the records carry it

The metrics file (metrics/profile/<objective>.json) counts prompts by band of pass rate, with profile.band = [low,
high]: unsolved (0), hard (below low), learnable (low to high, both included), easy (above high), solved (1); overall
and by the group_by field's values (at most MAX_VALUES of them). Streaming: one prompt's group at a time.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rollout_pipeline.jsonl import write_json, write_jsonl
from rollout_pipeline.stages.groups import Rollout, iter_groups
from rollout_pipeline.stages.health import HealthConfig, HealthTally, record_of, truncated

BANDS = ("unsolved", "hard", "learnable", "easy", "solved")
MAX_VALUES = 20  # a group_by field with more distinct values is no category; its split is dropped


@dataclass(frozen=True)
class ProfileConfig:
    """The `profile` section of params.yaml as validated (its defaults are the model's: params/stages.py), with
    metrics.pass_threshold and the health thresholds."""

    band: tuple[float, float]
    group_by: str | None
    pass_threshold: float
    health: HealthConfig

    @classmethod
    def from_params(cls, params: dict) -> ProfileConfig:
        """From validated params (`profile`, `metrics` and `health`)."""
        section = params["profile"]
        return cls(
            **{**section, "band": tuple(section["band"])},
            pass_threshold=params["metrics"]["pass_threshold"],
            health=HealthConfig.from_params(params["health"]),
        )


def band_of(pass_rate: float, band: tuple[float, float]) -> str:
    """The pass-rate band of a prompt (one of BANDS)."""
    low, high = band
    if pass_rate == 0:
        return "unsolved"
    if pass_rate == 1:
        return "solved"
    if pass_rate < low:
        return "hard"
    return "easy" if pass_rate > high else "learnable"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def prompt_stats(group: list[Rollout], config: ProfileConfig, health: HealthTally) -> dict[str, Any]:
    """One prompt's line of the profile."""
    rewards = [rollout.reward for rollout in group]
    n = len(rewards)
    mean = sum(rewards) / n
    tokens = []
    for rollout in group:
        response = rollout.record.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        count = usage.get("output_tokens") if isinstance(usage, dict) else None
        if isinstance(count, int) and not isinstance(count, bool):
            tokens.append(count)
    results = [result for _, result in health.add_group(group, record_of)]
    consistently = health.consistently_unhealthy
    correct = sum(reward >= config.pass_threshold for reward in rewards)
    first = group[0].record
    stats: dict[str, Any] = {
        "prompt_id": group[0].prompt_id,
        "task_index": first.get("task_index"),
        "n": n,
        "correct": correct,
        "pass_rate": _round(correct / n),
        "reward_mean": _round(mean),
        "reward_std": _round(math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)),
        "all_tied": min(rewards) == max(rewards),
        "output_tokens_median": statistics.median(tokens) if tokens else None,
        "truncation_rate": _round(sum(truncated(rollout.record) for rollout in group) / n),
        "unhealthy": sum(result.verdict == "unhealthy" for result in results),
        "consistently_unhealthy": consistently,
    }
    if config.group_by is not None and config.group_by in first:
        stats[config.group_by] = first[config.group_by]
    return stats


@dataclass
class ProfileSummary:
    """Prompts by band, overall and by the group_by field's values: the stage's metrics file."""

    config: ProfileConfig
    prompts: int = 0
    all_tied: int = 0
    bands: Counter[str] = field(default_factory=Counter)
    by_value: dict[str, Counter[str]] = field(default_factory=dict)
    too_many_values: bool = False

    def add(self, stats: dict[str, Any]) -> None:
        band = band_of(stats["pass_rate"], self.config.band)
        self.prompts += 1
        self.all_tied += stats["all_tied"]
        self.bands[band] += 1
        if self.config.group_by is None or self.config.group_by not in stats or self.too_many_values:
            return
        value = str(stats[self.config.group_by])
        if value not in self.by_value and len(self.by_value) >= MAX_VALUES:
            self.too_many_values, self.by_value = True, {}
            return
        self.by_value.setdefault(value, Counter())[band] += 1

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "prompts": self.prompts,
            "band": list(self.config.band),
            "all_tied": self.all_tied,
            "bands": {band: self.bands[band] for band in BANDS},
        }
        if self.by_value:
            result["by"] = {
                self.config.group_by: {
                    value: {band: counts[band] for band in BANDS} for value, counts in sorted(self.by_value.items())
                }
            }
        return result


def profile_lines(path: str | os.PathLike, config: ProfileConfig, summary: ProfileSummary) -> Iterator[dict]:
    """Stream the per-prompt lines of a rollout file, counting them into `summary`."""
    health = HealthTally(config.health)
    for _, group in iter_groups(path):
        stats = prompt_stats(list(group), config, health)
        summary.add(stats)
        yield stats


def run_profile(
    in_path: str | os.PathLike, out_path: str | os.PathLike, summary_path: str | os.PathLike, config: ProfileConfig
) -> ProfileSummary:
    """Profile `in_path` into `out_path` (per prompt) and `summary_path` (bands), each written atomically."""
    summary = ProfileSummary(config)
    write_jsonl(out_path, profile_lines(in_path, config, summary))
    write_json(summary_path, summary.as_dict())
    return summary
