"""The filter stage: rollouts -> SFT records.

Keeps a rollout when `reward >= min_reward` (the seed's `r["reward"] >= 0.8`) and an optional jq
expression accepts it, drops exact duplicate outputs within a prompt, and writes one of TRL's conversational
formats (`format`):
  messages           `{"messages": [...input, assistant], "prompt_id", "reward"}` (language modeling)
  prompt_completion  `{"prompt": [...input], "completion": [assistant], "prompt_id", "reward"}` (TRL's SFTTrainer
                     then computes the loss on the completion only, by default)
where assistant is `{"role": "assistant", "content": output}` (+ `reasoning_content` when the model reasoned).
Streaming: apart from the current record, only the current prompt's output digests are held.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import jq
import orjson

from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import write_jsonl
from rollout_pipeline.stages.groups import Rollout, iter_groups
from rollout_pipeline.stages.health import HealthConfig, checked_group, reasoning_text, record_of, unchecked

# Reasons a rollout is dropped, in the order they are checked (a rollout counts under the first that applies).
BELOW_MIN_REWARD = "below_min_reward"
UNHEALTHY = "unhealthy"  # only with drop_unhealthy: a rollout the health checks find degenerate (stages/health.py)
REJECTED_BY_WHERE = "rejected_by_where"
DUPLICATE = "duplicate"
DROP_REASONS = (BELOW_MIN_REWARD, UNHEALTHY, REJECTED_BY_WHERE, DUPLICATE)

# The record shapes `filter.format` chooses between (TRL's conversational language-modeling and prompt-completion).
MESSAGES = "messages"
PROMPT_COMPLETION = "prompt_completion"
FORMATS = (MESSAGES, PROMPT_COMPLETION)


@dataclass(frozen=True)
class FilterConfig:
    """The `filter` section of params.yaml as validated (its defaults are the model's: params/stages.py), and the
    health checks' thresholds; `where_source` names the setting in error messages."""

    min_reward: float
    where: str | None
    dedupe: bool
    keep_reasoning: bool
    format: str
    drop_unhealthy: bool
    health: HealthConfig
    where_source: str = "filter.where"
    # Called with each record's line before `where` runs on it: the watchdog's heartbeat (watchdog.py).
    on_record: Callable[[int], None] | None = None

    @classmethod
    def from_params(cls, params: dict, where_source: str = "filter.where") -> FilterConfig:
        """From validated params (`filter` and `health`)."""
        section = params["filter"]
        return cls(
            min_reward=section["min_reward"],
            where=section["where"],
            dedupe=section["dedupe"],
            keep_reasoning=section["keep_reasoning"],
            format=section["format"],
            drop_unhealthy=section["drop_unhealthy"],
            health=HealthConfig.from_params(params["health"]),
            where_source=where_source,
        )


def _jq_message(exc: Exception) -> str:
    # jq's messages span several lines (source excerpt, caret); the first one says what is wrong.
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first.removeprefix("jq: error: ").rstrip(":")


# jq builtins whose result depends on the clock, other inputs or the command line: a stage's output must depend on
# its inputs and params alone (DVC assumes so), and `input` would eat the next record. (The environment is
# hidden while `where` runs, so $ENV and env are {} and deterministic.)
NONDETERMINISTIC = ("now", "input", "inputs", "$__prog_args")
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def _refuse_nondeterminism(expression: str, source: str) -> None:
    code = _STRING.sub('""', expression)  # a word inside a string literal is data, not a call
    for name in NONDETERMINISTIC:
        if re.search(rf"(?<![\w$]){re.escape(name)}(?![\w])", code):
            raise UserError(
                f"{source}: {name!r} is not allowed in a filter: its result depends on "
                f"{'the clock' if name == 'now' else 'more than the record and the params'}, and a stage's output must "
                "depend on its inputs and params alone"
            )


def compile_where(expression: str, source: str = "filter.where") -> Callable[[Rollout], bool]:
    """Compile a jq expression once into a predicate over rollout records.

    A record is accepted when the expression's first output is truthy in jq's sense (anything but
    false and null); no output at all (e.g. `select(...)` that did not match) rejects it.
    """
    _refuse_nondeterminism(expression, source)
    try:
        program = jq.compile(expression)
    except ValueError as exc:
        raise UserError(f"{source}: invalid jq expression {expression!r}: {_jq_message(exc)}") from None

    def accepts(rollout: Rollout) -> bool:
        try:
            # orjson serializes faster than input_value's json.dumps; jq parses the text either way.
            result = program.input_text(orjson.dumps(rollout.record).decode()).first()
        except StopIteration:
            return False
        except ValueError as exc:
            raise UserError(
                f"{rollout.where}: {source} {expression!r} failed on this record ({_jq_message(exc)}); "
                "guard optional fields with '?' or '//'"
            ) from None
        return result is not None and result is not False

    return accepts


def sft_record(rollout: Rollout, keep_reasoning: bool, format: str) -> dict:
    """The SFT record for one rollout in `format` (one of FORMATS): the output is the assistant turn that ends the
    conversation (`messages`) or makes the completion (`prompt_completion`); the model's reasoning, when it has some,
    is the assistant's `reasoning_content` (what reasoning models' chat templates read)."""
    assistant = {"role": "assistant", "content": rollout.output()}
    reasoning = reasoning_text(rollout.record) if keep_reasoning else None
    if reasoning:
        assistant["reasoning_content"] = reasoning
    if format == PROMPT_COMPLETION:
        conversation = {"prompt": rollout.messages(), "completion": [assistant]}
    elif format == MESSAGES:
        conversation = {"messages": [*rollout.messages(), assistant]}
    else:
        raise ValueError(f"unknown SFT format {format!r}; known: {', '.join(FORMATS)}")
    return {**conversation, "prompt_id": rollout.prompt_id, "reward": rollout.reward}


@dataclass
class FilterSummary:
    """What the filter saw and did; `dropped` counts rollouts per reason in DROP_REASONS."""

    rollouts: int = 0
    prompts: int = 0
    kept: int = 0
    kept_prompts: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict:
        """The summary as the stage's metrics file (metrics/sft_filter.json): counts, and drops by reason."""
        return {
            "rollouts": self.rollouts,
            "prompts": self.prompts,
            "kept": self.kept,
            "kept_prompts": self.kept_prompts,
            "dropped": {reason: self.dropped[reason] for reason in DROP_REASONS},
        }

    def lines(self, config: FilterConfig, out_path: str | os.PathLike) -> list[str]:
        """The human summary printed by the stage: what was kept, and every drop reason with its count."""
        return [
            f"kept {self.kept} of {self.rollouts} rollouts ({self.kept_prompts} of {self.prompts} prompts) -> {out_path} "
            f"({config.format} records)",
            f"dropped {sum(self.dropped.values())}: {self.dropped[BELOW_MIN_REWARD]} below min_reward {config.min_reward:g}, "
            + (f"{self.dropped[UNHEALTHY]} unhealthy, " if config.drop_unhealthy else "")
            + f"{self.dropped[REJECTED_BY_WHERE]} rejected by where, {self.dropped[DUPLICATE]} duplicate outputs",
        ]


def filter_rollouts(path: str | os.PathLike, config: FilterConfig, summary: FilterSummary) -> Iterator[dict]:
    """Stream the SFT records of a rollout file, counting into `summary` as they are consumed.

    The jq expression is compiled here, on the call, so a bad one fails before any file is touched.
    """
    accepts = compile_where(config.where, config.where_source) if config.where is not None else None
    return _filtered(path, config, accepts, summary)


def _filtered(
    path: str | os.PathLike, config: FilterConfig, accepts: Callable[[Rollout], bool] | None, summary: FilterSummary
) -> Iterator[dict]:
    for _, group in iter_groups(path):
        summary.prompts += 1
        # Digests rather than the outputs themselves: a group can hold several long generations.
        seen_outputs: set[bytes] = set()
        kept_before = summary.kept
        checked = checked_group(group, record_of, config.health) if config.drop_unhealthy else unchecked(group)
        for rollout, health in checked:
            summary.rollouts += 1
            output = rollout.output()  # validated for every record, kept or not
            if config.on_record is not None:
                config.on_record(rollout.line)
            reason = None
            if rollout.reward < config.min_reward:
                reason = BELOW_MIN_REWARD
            elif health is not None and health.verdict == "unhealthy":
                reason = UNHEALTHY
            elif accepts is not None and not accepts(rollout):
                reason = REJECTED_BY_WHERE
            elif config.dedupe:
                digest = hashlib.blake2b(output.encode(), digest_size=16).digest()
                if digest in seen_outputs:
                    reason = DUPLICATE
                seen_outputs.add(digest)
            if reason is not None:
                summary.dropped[reason] += 1
                continue
            summary.kept += 1
            yield sft_record(rollout, config.keep_reasoning, config.format)
        if summary.kept > kept_before:
            summary.kept_prompts += 1


def run_filter(in_path: str | os.PathLike, out_path: str | os.PathLike, config: FilterConfig) -> FilterSummary:
    """Filter `in_path` into `out_path` (written atomically: on any error the previous output stays)."""
    summary = FilterSummary()
    with environment_hidden() if config.where is not None else contextlib.nullcontext():
        write_jsonl(out_path, filter_rollouts(in_path, config, summary))
    return summary


@contextlib.contextmanager
def environment_hidden() -> Iterator[None]:
    """Run a block with an empty process environment, then put it back.

    jq reads the environment (`$ENV` when it compiles, `env` when it runs), and an error message carries
    what it read: `$ENV.OPENAI_API_KEY | tonumber` would print the key in the stage's error. A filter needs
    nothing from the environment, so while the `where` expression is compiled and run there is none."""
    saved = dict(os.environ)
    os.environ.clear()
    try:
        yield
    finally:
        os.environ.update(saved)
