"""The report's numbers: one objective's rollout file (and failures file) summarised in one streaming pass.

Everything here is decided by the data and the seed, never by the clock or the machine, so the report built from
it is byte-for-byte the same on every run (`dvc.lock` records its hash). The rollout browser's prompts are the
`browser_prompts` with the smallest seeded hash of (task_index, prompt_id), and each prompt's extra rollouts the
ones with the smallest seeded hash of their rollout_index: a sample that needs no random state and no second pass.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rollout_pipeline.jsonl import iter_jsonl, side_path
from rollout_pipeline.stages.groups import Rollout, iter_groups
from rollout_pipeline.stages.health import HealthConfig, HealthTally
from rollout_pipeline.stages.rollout_metrics import MetricsAccumulator, read_failures, read_run_stats
from rollout_pipeline.stages.sft_filter import reasoning_text

# Top-level record keys the collector writes itself: every other key came with the input row.
COLLECTOR_KEYS = frozenset(
    {
        "prompt_id",
        "task_index",
        "rollout_index",
        "agent_name",
        "input",
        "output",
        "reward",
        "responses_create_params",
        "response",
        "expected_answer",
        "task_id",
        "id",
        "extracted_answer",
    }
)
MAX_CATEGORIES = 20  # an input field with more distinct values is no category (an id, a question)
MAX_TEXT_CHARS = 4000  # longer model text is cut in the browser (the rollout file has all of it)


@dataclass(frozen=True)
class BrowserConfig:
    """The `report` section of params.yaml as validated (its defaults are the model's: params/stages.py): what the
    rollout browser samples."""

    browser_prompts: int
    random_per_prompt: int
    seed: int


@dataclass(frozen=True)
class BrowserRow:
    """One rollout as the browser shows it; `kind` is best, worst or random."""

    kind: str
    prompt_id: str
    task_index: int | None
    rollout_index: int | None
    input: str
    reasoning: str | None
    output: str
    extracted_answer: str | None
    expected_answer: str | None
    reward: float


@dataclass
class ObjectiveSummary:
    """What one objective's page shows; built by `summarize_rollouts`."""

    name: str
    accumulator: MetricsAccumulator
    reward_counts: Counter[float] = field(default_factory=Counter)
    output_tokens: Counter[int] = field(default_factory=Counter)
    rollouts_with_tokens: int = 0
    truncated: int = 0
    extraction_failures: int = 0
    rollouts_with_extraction: int = 0
    # field -> value -> [reward sum, rollouts]; fields that turn out to have too many values are dropped
    by_field: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    not_scored: Counter[str] = field(default_factory=Counter)  # "failure: cause" / "skipped: cause" -> rollouts
    retries: dict[str, int] = field(default_factory=dict)  # from the run's stats file, when there is one
    browser: list[BrowserRow] = field(default_factory=list)

    @property
    def rollouts(self) -> int:
        return self.accumulator.rollouts

    @property
    def scored_of(self) -> str:
        """ "N of M": rollouts scored of those asked for (masked, failed and skipped ones are the difference)."""
        return f"{self.rollouts} of {self.rollouts + sum(self.not_scored.values())}"

    @property
    def prompts(self) -> int:
        return self.accumulator.prompts

    def categorical_fields(self) -> dict[str, dict[str, tuple[float, int]]]:
        """field -> value -> (mean reward, rollouts), for the input fields with 2..MAX_CATEGORIES values."""
        return {
            name: {value: (total / count, int(count)) for value, (total, count) in sorted(values.items())}
            for name, values in sorted(self.by_field.items())
            if 2 <= len(values) <= MAX_CATEGORIES
        }

    def correct_histogram(self) -> list[dict[str, int]]:
        """Prompts by how many of their n rollouts passed: [{"n", "correct", "prompts"}], every count 0..n listed."""
        counts = self.accumulator.group_counts
        rows = []
        for n in sorted({n for n, _ in counts}):
            rows += [{"n": n, "correct": c, "prompts": counts.get((n, c), 0)} for c in range(n + 1)]
        return rows


def _seeded_hash(seed: int, *parts: Any) -> bytes:
    return hashlib.blake2b(orjson.dumps([seed, *parts]), digest_size=8).digest()


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return f"{text[:MAX_TEXT_CHARS]}\n… ({len(text) - MAX_TEXT_CHARS} more characters in the rollout file)"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def input_text(record: dict) -> str:
    """The input messages as `role: content` lines (non-string content as JSON)."""
    messages = record.get("input")
    if not isinstance(messages, list):
        return _as_text(messages)
    return "\n".join(
        f"{m.get('role')}: {_as_text(m.get('content'))}" if isinstance(m, dict) else _as_text(m) for m in messages
    )


def browser_row(kind: str, rollout: Rollout) -> BrowserRow:
    """A rollout as the browser shows it (texts clipped; escaping is the page's job)."""
    record = rollout.record
    reasoning = reasoning_text(record)
    expected, extracted = record.get("expected_answer"), record.get("extracted_answer")
    return BrowserRow(
        kind=kind,
        prompt_id=rollout.prompt_id,
        task_index=record.get("task_index"),
        rollout_index=record.get("rollout_index"),
        input=_clip(input_text(record)),
        reasoning=None if reasoning is None else _clip(reasoning),
        output=_clip(_as_text(record.get("output", ""))),
        extracted_answer=None if extracted is None else _as_text(extracted),
        expected_answer=None if expected is None else _as_text(expected),
        reward=rollout.reward,
    )


def pick_rows(group: list[Rollout], config: BrowserConfig) -> list[BrowserRow]:
    """The best rollout (the first with the top reward), the worst (the last with the lowest) and
    `random_per_prompt` of the others chosen by seeded hash; a rollout is shown once."""
    best = max(group, key=lambda r: r.reward)  # max and min keep the first of ties; the worst is the last of its ties
    worst = min(reversed(group), key=lambda r: r.reward)
    rows = [browser_row("best", best)]
    if worst is not best:
        rows.append(browser_row("worst", worst))
    rest = [r for r in group if r is not best and r is not worst]
    rest.sort(key=lambda r: _seeded_hash(config.seed, r.prompt_id, r.record.get("rollout_index"), r.line))
    rows += [browser_row("random", r) for r in rest[: config.random_per_prompt]]
    return rows


def _response(record: dict) -> dict:
    response = record.get("response")
    return response if isinstance(response, dict) else {}


def _add_rollout(
    summary: ObjectiveSummary, rollout: Rollout, fields: dict[str, dict[str, list[float]]], too_many: set[str]
) -> None:
    record = rollout.record
    summary.reward_counts[rollout.reward] += 1
    response = _response(record)
    usage = response.get("usage")
    tokens = usage.get("output_tokens") if isinstance(usage, dict) else None
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        summary.output_tokens[tokens] += 1
        summary.rollouts_with_tokens += 1
    summary.truncated += response.get("status") == "incomplete"
    if "extracted_answer" in record:
        summary.rollouts_with_extraction += 1
        summary.extraction_failures += record["extracted_answer"] in (None, "")
    for name, value in record.items():
        if name in COLLECTOR_KEYS or name in too_many or not isinstance(value, (str, bool)):
            continue
        values = fields[name]
        entry = values.get(str(value))
        if entry is None:
            if len(values) >= MAX_CATEGORIES:
                too_many.add(name)
                del fields[name]
                continue
            entry = values[str(value)] = [0.0, 0]
        entry[0] += rollout.reward
        entry[1] += 1


def summarize_rollouts(
    name: str,
    path: str | os.PathLike,
    pass_threshold: float,
    config: BrowserConfig,
    health: HealthConfig,
) -> ObjectiveSummary:
    """One streaming pass over a collector output file, plus its failures file (and the run stats' retries)."""
    accumulator = MetricsAccumulator(pass_threshold=pass_threshold, health=HealthTally(health))
    summary = ObjectiveSummary(name=name, accumulator=accumulator)
    fields: dict[str, dict[str, list[float]]] = defaultdict(dict)
    too_many: set[str] = set()
    chosen: list[tuple[bytes, int, list[BrowserRow]]] = []  # a max-heap by hash (negated), of browser_prompts items
    for position, (prompt_id, rollouts) in enumerate(iter_groups(path)):
        group = list(rollouts)
        summary.accumulator.add_group(group)
        for rollout in group:
            _add_rollout(summary, rollout, fields, too_many)
        key = bytes(255 - b for b in _seeded_hash(config.seed, group[0].record.get("task_index"), prompt_id))
        if len(chosen) < config.browser_prompts:
            heapq.heappush(chosen, (key, position, pick_rows(group, config)))
        elif key > chosen[0][0]:
            heapq.heapreplace(chosen, (key, position, pick_rows(group, config)))
    summary.by_field = dict(fields)
    summary.browser = [row for _, _, rows in sorted(chosen, key=lambda item: item[1]) for row in rows]
    failures = read_failures(side_path(path, ".failures.ndjson"))
    if failures is not None:
        for kind, label in (("failure_causes", "failed"), ("skip_causes", "skipped")):
            for cause, count in sorted(failures[kind].items()):
                # A masked rollout (NeMo Gym's mask_sample) is its own outcome: not scored, not a skipped prompt.
                summary.not_scored["not scored: masked" if cause == "masked" else f"{label}: {cause}"] += count
    stats = read_run_stats(side_path(path))
    retries = (stats or {}).get("retries")
    if isinstance(retries, dict):
        summary.retries = {str(k): int(v) for k, v in sorted(retries.items()) if isinstance(v, int) and v}
    return summary


def read_json_file(path: str | os.PathLike) -> Any:
    """A JSON document the report reads (a stage's metrics or summary), or None when the file does not exist."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return None


def pair_margins(path: str | os.PathLike) -> Counter[float]:
    """DPO pair margins (chosen_reward - rejected_reward) -> pairs, from the pair stage's output."""
    margins: Counter[float] = Counter()
    if not Path(path).exists():
        return margins
    for _, record in iter_jsonl(path):
        margin = record.get("margin")
        if isinstance(margin, (int, float)) and not isinstance(margin, bool):
            margins[round(float(margin), 6)] += 1
    return margins
