"""The metrics stage: one objective's rollouts (+ its failures file) -> metrics JSON and a pass@k curve.

Metrics (flat keys, so `dvc metrics show|diff` and `jq` read them directly):
  prompts, rollouts               counted from the rollout file
  reward_mean, reward_std         over all rollouts; std is the population std (ddof=0)
  pass@1, pass@2, pass@4, ...     unbiased pass@k (see passk.py) for k = powers of two <= the largest
                                  group; a rollout passes when reward >= pass_threshold. Each prompt
                                  uses its own n and counts only for k <= n, so if group sizes differ
                                  (group_size_min < group_size_max) large k average over fewer prompts
  zero_variance_fraction          prompts whose rollouts all got the same reward (a single-rollout
                                  prompt included): no signal for group-relative RL such as GRPO
  output_tokens_mean              mean of response.usage.output_tokens over the rollouts that have it
                                  (null if none do)
  group_size_min, group_size_max  rollouts per prompt
  coverage                        {expected, scored, not_scored: {cause: n}}: "N of M scored" (masked and
                                  verifier_error rollouts included), when a failures file or run stats exist
  failures, skipped, not_scored   from the collector's `<stem>.failures.ndjson` beside the rollout file (skipped:
                                  prompts too long for the context; not_scored: count by cause, when any); from
                                  its `<stem>.stats.json` when there is no failures file; null when neither exists
                                  (a hand-made rollout file)
  health                          rollouts by verdict (healthy, unhealthy, unobserved) and findings by check, with
                                  task_consistently_unhealthy counting prompts (stages/health.py)
  scored_by                       only for a mixed file: rollouts by "verifier hash" (the records' scored_by),
                                  when they came from more than one verifier or version of one (a warning too)
Only what the data decides is here: timing and throughput are in the run's stats file, so a run that produces the
same rollouts produces byte-identical metrics (and `dvc.lock` and `git status` stay clean).
Streaming: O(1) state per rollout; pass@k keeps a histogram of (n, c), bounded by the group size.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rollout_pipeline.coverage import coverage, scored_line
from rollout_pipeline.errors import UserError, printable
from rollout_pipeline.jsonl import iter_jsonl, side_path, write_json
from rollout_pipeline.stages.groups import Rollout, iter_groups
from rollout_pipeline.stages.health import HealthConfig, HealthTally, record_of
from rollout_pipeline.stages.passk import mean_pass_at_k

DIGITS = 6


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)


def read_run_stats(path: str | os.PathLike) -> dict | None:
    """The collector's run stats, or None when the file does not exist."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        stats = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); re-run collect or delete the stats file") from None
    if not isinstance(stats, dict):
        raise UserError(f"{path}: expected a JSON object of run stats")
    for key in ("failures", "throughput_rollouts_per_s", "rollouts"):
        value = stats.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{path}: '{key}' must be a number, got {value!r}")
    return stats


def _scorer(record: dict) -> str:
    """What scored a record, as one word: its scored_by's verifier and hash ("unrecorded" before scored_by)."""
    by = record.get("scored_by")
    if not isinstance(by, dict):
        return "unrecorded"
    return printable(" ".join(str(by[key]) for key in ("verifier", "hash") if key in by))


def _output_tokens(rollout: Rollout) -> int | None:
    """response.usage.output_tokens, or None when the record has no usage (a documented skip)."""
    response = rollout.record.get("response")
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict) or usage.get("output_tokens") is None:
        return None
    tokens = usage["output_tokens"]
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise UserError(f"{rollout.where}: response.usage.output_tokens must be a non-negative integer, got {tokens!r}")
    return tokens


@dataclass
class MetricsAccumulator:
    """Streaming accumulation of the rollout-file metrics, one prompt group at a time."""

    pass_threshold: float
    health: HealthTally
    prompts: int = 0
    rollouts: int = 0
    zero_variance_prompts: int = 0
    token_rollouts: int = 0
    token_total: int = 0
    group_counts: Counter[tuple[int, int]] = field(default_factory=Counter)  # (n, c) -> prompts
    scored_by: Counter[str] = field(default_factory=Counter)  # "verifier hash" -> rollouts: more than one = mixed
    # Welford's running mean / sum of squared deviations: stable where sum-of-squares cancels.
    _mean: float = 0.0
    _m2: float = 0.0

    def add_group(self, group: Iterable[Rollout]) -> None:
        """Fold in one prompt's rollouts."""
        n = passes = 0
        low = high = math.nan
        for rollout, _ in self.health.add_group(group, record_of):
            reward = rollout.reward
            n += 1
            passes += reward >= self.pass_threshold
            low = reward if n == 1 else min(low, reward)
            high = reward if n == 1 else max(high, reward)
            self.rollouts += 1
            delta = reward - self._mean
            self._mean += delta / self.rollouts
            self._m2 += delta * (reward - self._mean)
            self.scored_by[_scorer(rollout.record)] += 1
            tokens = _output_tokens(rollout)
            if tokens is not None:
                self.token_rollouts += 1
                self.token_total += tokens
        self.prompts += 1
        self.zero_variance_prompts += low == high
        self.group_counts[(n, passes)] += 1

    def pass_at_k(self) -> dict[int, float]:
        """k -> mean unbiased pass@k over the prompts with at least k rollouts."""
        return {k: value for k, (value, _) in mean_pass_at_k(self.group_counts).items()}

    def metrics(self, stats: dict | None) -> dict[str, Any]:
        """The metrics document (see the module docstring for each key)."""
        sizes = [n for n, _ in self.group_counts]
        result: dict[str, Any] = {
            "prompts": self.prompts,
            "rollouts": self.rollouts,
            "failures": None if stats is None else stats.get("failures"),
            "skipped": None if stats is None else stats.get("skipped", 0),
            "reward_mean": _round(self._mean),
            "reward_std": _round(math.sqrt(self._m2 / self.rollouts)) if self.rollouts else None,
        }
        result.update({f"pass@{k}": _round(value) for k, value in self.pass_at_k().items()})
        result.update(
            {
                "zero_variance_fraction": _round(self.zero_variance_prompts / self.prompts) if self.prompts else None,
                "output_tokens_mean": _round(self.token_total / self.token_rollouts) if self.token_rollouts else None,
                "group_size_min": min(sizes, default=None),
                "group_size_max": max(sizes, default=None),
                "health": self.health.table(),
            }
        )
        # Why rollouts were not scored, by cause (failures and skips): only when there were any, so that
        # `dvc metrics show` stays narrow on a clean run.
        causes = {
            printable(str(cause)): count
            for cause, count in {
                **(stats or {}).get("failure_causes", {}),
                **(stats or {}).get("skip_causes", {}),
            }.items()
        }
        if causes:
            result["not_scored"] = dict(sorted(causes.items()))
        if len(self.scored_by) > 1:  # a file whose rewards came from different verifiers, or versions of one
            result["scored_by"] = dict(sorted(self.scored_by.items()))
        if stats is not None:  # "N of M scored": what the score covers of what was asked for
            not_scored = (stats.get("failures") or 0) + (stats.get("skipped") or 0)
            result["coverage"] = coverage(self.rollouts + not_scored, self.rollouts, causes)
        return result

    def curve(self) -> list[dict[str, float]]:
        """The pass@k curve for `dvc plots`: [{"k": 1, "pass_at_k": ...}, ...]."""
        return [{"k": k, "pass_at_k": _round(value)} for k, value in self.pass_at_k().items()]


@dataclass
class MetricsResult:
    """What run_metrics wrote, plus notes worth printing (e.g. stale or missing stats)."""

    metrics: dict[str, Any]
    curve: list[dict[str, float]]
    notes: list[str]

    def lines(self, out_path: str | os.PathLike) -> list[str]:
        """The human summary printed by the stage (the notes are printed separately, to stderr)."""
        m = self.metrics
        ks = ", ".join(f"{key}={m[key]}" for key in m if key.startswith("pass@"))
        return [
            f"{m['prompts']} prompts, {m['rollouts']} rollouts, reward mean {m['reward_mean']} "
            f"std {m['reward_std']}, {ks}, zero-variance prompts {m['zero_variance_fraction']} -> {out_path}",
            *([scored_line(m["coverage"])] if "coverage" in m else []),
        ]


def scored_of(rollouts_path: str | os.PathLike, scored: int) -> str | None:
    """ "N of M rollouts scored" for a stage's log line, from the failures file beside its rollout file."""
    failures = read_failures(side_path(rollouts_path, ".failures.ndjson"))
    if failures is None:
        return None
    causes = {**failures["failure_causes"], **failures["skip_causes"]}
    return scored_line(coverage(scored + sum(causes.values()), scored, causes))


def read_failures(path: Path) -> dict | None:
    """Counts of the collector's failures file: what the metrics report of the rollouts that were not scored."""
    if not path.exists():
        return None
    counts: dict[str, Any] = {"failures": 0, "skipped": 0, "failure_causes": Counter(), "skip_causes": Counter()}
    for _, entry in iter_jsonl(path):
        kind = "skip" if entry.get("skipped") else "failure"
        counts["skipped" if kind == "skip" else "failures"] += 1
        counts[f"{kind}_causes"][str(entry.get("cause"))] += 1
    return counts


def compute_metrics(
    in_path: str | os.PathLike,
    pass_threshold: float,
    stats_path: str | os.PathLike | None = None,
    *,
    health: HealthConfig,
) -> MetricsResult:
    """Read the rollout file (streaming), and its failures file (else its run stats); nothing is written."""
    accumulator = MetricsAccumulator(pass_threshold=pass_threshold, health=HealthTally(health))
    for _, group in iter_groups(in_path):
        accumulator.add_group(group)
    stats_file = Path(stats_path) if stats_path is not None else side_path(in_path)
    stats = read_failures(side_path(in_path, ".failures.ndjson")) if stats_path is None else None
    if stats is None:
        stats = read_run_stats(stats_file)
    notes = []
    if stats is None:
        notes.append(f"note: no failures file or run stats beside {in_path}; failures are null")
    elif stats.get("rollouts") is not None and stats["rollouts"] != accumulator.rollouts:
        notes.append(
            f"warning: {stats_file} reports {stats['rollouts']} rollouts but {in_path} has "
            f"{accumulator.rollouts}; the stats may be from another run"
        )
    if len(accumulator.scored_by) > 1:
        mixed = ", ".join(f"{count} by {scorer}" for scorer, count in sorted(accumulator.scored_by.items()))
        notes.append(
            f"warning: {in_path} mixes rewards from different verifiers or versions ({mixed}); score it "
            "again with one (rescore FILE --agent NAME)"
        )
    skipped = accumulator.rollouts - accumulator.token_rollouts
    if skipped:
        notes.append(
            f"note: {skipped} rollouts have no response.usage.output_tokens; output_tokens_mean covers the rest"
        )
    return MetricsResult(accumulator.metrics(stats), accumulator.curve(), notes)


def run_metrics(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    pass_threshold: float,
    *,
    curve_path: str | os.PathLike | None = None,
    stats_path: str | os.PathLike | None = None,
    health: HealthConfig,
) -> MetricsResult:
    """Compute the metrics of `in_path` and write them (and the pass@k curve) atomically."""
    result = compute_metrics(in_path, pass_threshold, stats_path, health=health)
    write_json(out_path, result.metrics)
    if curve_path is not None:
        write_json(curve_path, result.curve)
    return result
