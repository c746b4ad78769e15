"""Rollout health checks: a verdict (healthy, unhealthy, unobserved) for every rollout, and per prompt and run.

A wrong answer is the verifier's business; these checks find rollouts that are degenerate whatever the reward says,
so a run of broken outputs does not pass for a run of wrong answers. Per rollout:

  agent_turn_hollow                   no answer text, no refusal, no reasoning and no tool call
  reasoning_without_answer            reasoning, then no answer text
  model_call_zero_completion_tokens   response.usage.output_tokens is 0
  rollout_token_count_mismatch        the token data (generation_token_ids, generation_log_probs, prompt_token_ids)
                                      disagrees in length with each other or with response.usage
  output_repetition                   the share of repeated word n-grams of the output is over `repetition_ratio`
  output_runaway_repetition           cut off at max_output_tokens (status incomplete) while repeating over
                                      `runaway_repetition_ratio`: a generation that would not have stopped
  output_script_mismatch              more than `script_mismatch_ratio` of the output's letters (at least
                                      `script_min_letters` of them) are in writing systems the input never uses
                                      (Latin, Cyrillic, CJK, ... by the Unicode name): the cheap sign of an answer
                                      in another language

per group of one prompt's records

  rollout_duplicate_identity          another record of the file claims the same (task_index, rollout_index): every
                                      copy is flagged (a record without both is unobserved for it)

and per prompt `task_consistently_unhealthy` (at least two rollouts with a verdict, all unhealthy). Checks whose
evidence a record lacks (usage for the token checks) are `unobserved` for it; the token-data check applies only to
records that carry token data. A rollout with a finding is unhealthy; else one with an unobserved check is
unobserved; else healthy. The names and the three verdicts are NeMo Gym's where the check is the same (its rollout
health checks: NVIDIA-NeMo/Gym@d1096de9920f02027a9faf1c87796f3ce5fc1a06 nemo_gym/health/checks.py CHECK_REGISTRY,
and @9a974a9dc7b4d1c5abbc62bfcbe03e36a71560cf nemo_gym/rollout_health.py for the verdicts,
task_consistently_unhealthy and rollout_duplicate_identity); the repetition and reasoning checks are this
project's own.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

HOLLOW = "agent_turn_hollow"
REASONING_WITHOUT_ANSWER = "reasoning_without_answer"
ZERO_COMPLETION_TOKENS = "model_call_zero_completion_tokens"
TOKEN_COUNT_MISMATCH = "rollout_token_count_mismatch"
REPETITION = "output_repetition"
RUNAWAY_REPETITION = "output_runaway_repetition"
SCRIPT_MISMATCH = "output_script_mismatch"
DUPLICATE_IDENTITY = "rollout_duplicate_identity"
CONSISTENTLY_UNHEALTHY = "task_consistently_unhealthy"
ROLLOUT_CHECKS = (
    HOLLOW,
    REASONING_WITHOUT_ANSWER,
    ZERO_COMPLETION_TOKENS,
    TOKEN_COUNT_MISMATCH,
    REPETITION,
    RUNAWAY_REPETITION,
    SCRIPT_MISMATCH,
)
CHECKS = (*ROLLOUT_CHECKS, DUPLICATE_IDENTITY, CONSISTENTLY_UNHEALTHY)
VERDICTS = ("healthy", "unhealthy", "unobserved")
TOOL_CALL_TYPES = frozenset({"function_call", "custom_tool_call", "mcp_call"})
EXAMPLES_PER_CHECK = 3
EXAMPLE_CHARS = 400

Item = TypeVar("Item")


@dataclass(frozen=True)
class HealthConfig:
    """The `health` section of params.yaml as validated (its defaults are the model's: params/stages.py): the
    thresholds of the repetition and script checks."""

    repetition_ngram: int
    repetition_min_ngrams: int
    repetition_ratio: float
    runaway_repetition_ratio: float
    script_mismatch_ratio: float
    script_min_letters: int

    @classmethod
    def from_params(cls, section: dict) -> HealthConfig:
        """From validated params' `health` section (every key present)."""
        return cls(**section)


@dataclass(frozen=True)
class Health:
    """One rollout's verdict, the checks that found something, and those it could not evaluate."""

    findings: tuple[str, ...]
    unobserved: tuple[str, ...]

    @property
    def verdict(self) -> str:
        return "unhealthy" if self.findings else "unobserved" if self.unobserved else "healthy"


def reasoning_text(record: dict) -> str | None:
    """The model's reasoning in a rollout record: the text of its `reasoning` output items (their content, else
    their summary), or None when it has none."""
    texts = []
    for item in _output_items(record):
        if item.get("type") == "reasoning":
            parts = item.get("content") or item.get("summary") or []
            texts += [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(texts) if texts else None


def repetition_ratio(text: str, n: int, min_ngrams: int) -> float:
    """The share of the text's word n-grams that repeat an earlier one (0 when it has fewer than `min_ngrams`)."""
    words = text.split()
    total = len(words) - n + 1
    if total < min_ngrams:
        return 0.0
    distinct = len({tuple(words[i : i + n]) for i in range(total)})
    return 1 - distinct / total


def check_rollout(record: dict, config: HealthConfig) -> Health:
    """The per-rollout checks of one record (see the module docstring)."""
    findings, unobserved = [], []
    output = record.get("output")
    text = output if isinstance(output, str) else ""
    has_reasoning = bool((reasoning_text(record) or "").strip())
    if not text.strip() and not _refused(record):
        has_tool_call = any(item.get("type") in TOOL_CALL_TYPES for item in _output_items(record))
        if has_reasoning:
            findings.append(REASONING_WITHOUT_ANSWER)
        elif not has_tool_call:
            findings.append(HOLLOW)
    usage = _usage(record)
    output_tokens = _count(usage.get("output_tokens"))
    if output_tokens is None:
        unobserved.append(ZERO_COMPLETION_TOKENS)
    elif output_tokens == 0:
        findings.append(ZERO_COMPLETION_TOKENS)
    token_lengths = _token_data_lengths(record)
    if token_lengths:
        if output_tokens is None:
            unobserved.append(TOKEN_COUNT_MISMATCH)
        elif _token_counts_disagree(token_lengths, output_tokens, _count(usage.get("input_tokens"))):
            findings.append(TOKEN_COUNT_MISMATCH)
    ratio = repetition_ratio(text, config.repetition_ngram, config.repetition_min_ngrams)
    if ratio > config.repetition_ratio:
        findings.append(REPETITION)
    if truncated(record) and ratio > config.runaway_repetition_ratio:
        findings.append(RUNAWAY_REPETITION)
    if foreign_script_share(text, _input_text(record), config.script_min_letters) > config.script_mismatch_ratio:
        findings.append(SCRIPT_MISMATCH)
    return Health(tuple(findings), tuple(unobserved))


def checked_group(
    items: Iterable[Item], record_of: Callable[[Item], dict], config: HealthConfig
) -> Iterator[tuple[Item, Health]]:
    """Each item of one prompt's group with its health, rollout_duplicate_identity included. Copies of one identity
    are adjacent in a file sorted by (task_index, rollout_index), as the collector writes it, so only a run of them
    is held, and every copy is flagged; a copy further on (a file sorted otherwise) is flagged from there."""
    seen: set[tuple[Any, Any]] = set()
    run: list[tuple[Item, Health]] = []  # consecutive records of one identity
    run_identity = None
    for item in items:
        record = record_of(item)
        health = check_rollout(record, config)
        identity = _identity(record)
        if identity is None:
            health = Health(health.findings, (*health.unobserved, DUPLICATE_IDENTITY))
        if run and (identity is None or identity != run_identity):
            yield from _flag_copies(run)
            run = []
        if identity is not None and identity in seen and not run:
            health = _flagged(health)
        run.append((item, health))
        run_identity = identity
        if identity is not None:
            seen.add(identity)
    yield from _flag_copies(run)


def record_of(rollout: Any) -> dict:
    """A stage's Rollout's record (what checked_group reads from each item)."""
    return rollout.record


def unchecked(items: Iterable[Item]) -> Iterator[tuple[Item, None]]:
    """Items as checked_group yields them, without a health (when no stage needs one)."""
    return ((item, None) for item in items)


def _flag_copies(run: list[tuple[Item, Health]]) -> list[tuple[Item, Health]]:
    return run if len(run) < 2 else [(item, _flagged(health)) for item, health in run]


def _flagged(health: Health) -> Health:
    if DUPLICATE_IDENTITY in health.findings:
        return health
    return Health((*health.findings, DUPLICATE_IDENTITY), health.unobserved)


def _identity(record: dict) -> tuple[Any, Any] | None:
    task, rollout = record.get("task_index"), record.get("rollout_index")
    return None if task is None or rollout is None else (task, rollout)


def _script(character: str) -> str:
    """The writing system of a letter, as the first word of its Unicode name (LATIN, CYRILLIC, CJK, HANGUL, ...)."""
    return unicodedata.name(character, "UNKNOWN").split(" ", 1)[0]


def foreign_script_share(output: str, prompt: str, min_letters: int) -> float:
    """The share of the output's letters in writing systems the prompt never uses (0 under `min_letters` letters)."""
    letters = [character for character in output if character.isalpha()]
    if len(letters) < min_letters:
        return 0.0
    known = {_script(character) for character in prompt if character.isalpha()}
    return sum(_script(character) not in known for character in letters) / len(letters)


def _input_text(record: dict) -> str:
    messages = record.get("input")
    if not isinstance(messages, list):
        return ""
    return "\n".join(m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))


def _output_items(record: dict) -> list[dict]:
    response = record.get("response")
    items = response.get("output") if isinstance(response, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _refused(record: dict) -> bool:
    """Whether a message of the output holds a non-empty refusal part: an answer, though not a text one."""
    return any(
        isinstance(part, dict) and part.get("type") == "refusal" and str(part.get("refusal") or "").strip()
        for item in _output_items(record)
        for part in (item.get("content") if isinstance(item.get("content"), list) else [])
    )


def _usage(record: dict) -> dict:
    response = record.get("response")
    usage = response.get("usage") if isinstance(response, dict) else None
    return usage if isinstance(usage, dict) else {}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def truncated(record: dict) -> bool:
    """Cut off by max_output_tokens (or the server's length limit), as the collector records it."""
    response = record.get("response")
    if not isinstance(response, dict) or response.get("status") != "incomplete":
        return False
    details = response.get("incomplete_details")
    return isinstance(details, dict) and details.get("reason") in ("max_output_tokens", "length")


def _token_data_lengths(record: dict) -> dict[str, int]:
    """Total lengths of the token data the output items carry, by NeMo Gym's names (empty when there is none)."""
    lengths: Counter[str] = Counter()
    for item in _output_items(record):
        for name in ("generation_token_ids", "generation_log_probs", "prompt_token_ids"):
            if isinstance(item.get(name), list):
                lengths[name] += len(item[name])
    return dict(lengths)


def _token_counts_disagree(lengths: dict[str, int], output_tokens: int, input_tokens: int | None) -> bool:
    generated = {lengths[name] for name in ("generation_token_ids", "generation_log_probs") if name in lengths}
    if generated and generated != {output_tokens}:
        return True
    prompt = lengths.get("prompt_token_ids")
    return prompt is not None and input_tokens is not None and prompt != input_tokens


def group_consistently_unhealthy(verdicts: Iterable[str]) -> bool:
    """NeMo Gym's task_consistently_unhealthy: at least two rollouts with a verdict, every one unhealthy."""
    computable = [verdict for verdict in verdicts if verdict != "unobserved"]
    return len(computable) >= 2 and all(verdict == "unhealthy" for verdict in computable)


@dataclass
class HealthTally:
    """A run's health, streaming: verdicts and findings by check, and the first few examples of each check."""

    config: HealthConfig
    verdicts: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    consistently_unhealthy: bool = False  # the last group's

    def add_group(self, items: Iterable[Item], record_of: Callable[[Item], dict]) -> Iterator[tuple[Item, Health]]:
        """Check one prompt's rollouts, count each, and yield it with its health; once the group is consumed,
        `consistently_unhealthy` says whether the prompt was (and it is counted)."""
        verdicts = []
        for item, health in checked_group(items, record_of, self.config):
            self.verdicts[health.verdict] += 1
            for check in health.findings:
                self.checks[check] += 1
                self._example(check, record_of(item))
            verdicts.append(health.verdict)
            yield item, health
        self.consistently_unhealthy = group_consistently_unhealthy(verdicts)
        self.checks[CONSISTENTLY_UNHEALTHY] += self.consistently_unhealthy

    def _example(self, check: str, record: dict) -> None:
        kept = self.examples.setdefault(check, [])
        if len(kept) < EXAMPLES_PER_CHECK:
            output = record.get("output")
            text = output if isinstance(output, str) else ""
            kept.append(
                {
                    "prompt_id": str(record.get("prompt_id")),
                    "rollout_index": record.get("rollout_index"),
                    "output": text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + " …",
                }
            )

    def table(self) -> dict[str, Any]:
        """metrics' `health`: rollouts by verdict, findings by check (every check listed, so diffs line up)."""
        return {
            **{verdict: self.verdicts[verdict] for verdict in VERDICTS},
            "checks": {check: self.checks[check] for check in CHECKS},
        }
