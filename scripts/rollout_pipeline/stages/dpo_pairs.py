"""The pair stage: rollouts -> DPO preference pairs (TRL's conversational format).

Per prompt: chosen = the highest reward, rejected = the lowest. Ties are broken by file order
(rollout_index order in collector output) exactly as the seed's snippet breaks them, because
`sorted(group, key=reward, reverse=True)` is stable: chosen is the FIRST rollout among those with
the top reward, rejected the LAST among those with the bottom reward. Unlike the snippet, a prompt
with a single rollout, with all rewards tied, or with a margin below `min_margin` gives no pair:
a pair of equally good answers teaches DPO nothing (or noise).
Streaming: per prompt only the current chosen and rejected candidates are held.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from rollout_pipeline.stages.groups import Rollout, iter_groups
from rollout_pipeline.jsonl import write_jsonl

SINGLE_ROLLOUT = "single_rollout"
ALL_TIED = "all_tied"
BELOW_MIN_MARGIN = "below_min_margin"
SKIP_REASONS = (SINGLE_ROLLOUT, ALL_TIED, BELOW_MIN_MARGIN)


@dataclass(frozen=True)
class PairConfig:
    """The `pair` section of params.yaml."""

    min_margin: float = 0.0


@dataclass(frozen=True)
class Extremes:
    """The chosen and rejected candidates of one prompt's group, and the group's size."""

    chosen: Rollout
    rejected: Rollout
    size: int

    @property
    def margin(self) -> float:
        return self.chosen.reward - self.rejected.reward


def extremes(group: Iterable[Rollout]) -> Extremes:
    """One pass over a non-empty group: first rollout with the max reward, last with the min."""
    chosen = rejected = None
    size = 0
    for rollout in group:
        rollout.output()  # every record must have an output, not just the two that end up in a pair
        size += 1
        if chosen is None or rollout.reward > chosen.reward:  # strict: an equal later reward keeps the first
            chosen = rollout
        if rejected is None or rollout.reward <= rejected.reward:  # non-strict: an equal later reward wins
            rejected = rollout
    if chosen is None or rejected is None:
        raise ValueError("extremes() needs a non-empty group")
    return Extremes(chosen, rejected, size)


def skip_reason(found: Extremes, config: PairConfig) -> str | None:
    """Why a group gives no pair (one of SKIP_REASONS), or None when it gives one."""
    if found.size < 2:
        return SINGLE_ROLLOUT
    if found.margin <= 0:
        return ALL_TIED
    if found.margin < config.min_margin:
        return BELOW_MIN_MARGIN
    return None


def dpo_record(found: Extremes) -> dict:
    """The preference record: prompt messages, chosen and rejected assistant turns, and their rewards."""
    chosen, rejected = found.chosen, found.rejected
    return {
        "prompt": chosen.messages(),
        "chosen": [{"role": "assistant", "content": chosen.output()}],
        "rejected": [{"role": "assistant", "content": rejected.output()}],
        "prompt_id": chosen.prompt_id,
        "chosen_reward": chosen.reward,
        "rejected_reward": rejected.reward,
        "margin": found.margin,
    }


@dataclass
class PairSummary:
    """What the pair stage saw and did; `skipped` counts prompts per reason in SKIP_REASONS."""

    prompts: int = 0
    rollouts: int = 0
    pairs: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict:
        """The summary as the stage's metrics file (metrics/dpo_pairs.json): counts, and prompts skipped by reason."""
        return {"prompts": self.prompts, "rollouts": self.rollouts, "pairs": self.pairs,
                "skipped": {reason: self.skipped[reason] for reason in SKIP_REASONS}}

    def lines(self, config: PairConfig, out_path: str | os.PathLike) -> list[str]:
        """The human summary printed by the stage: pairs written, and every skip reason with its count."""
        return [
            f"wrote {self.pairs} pairs from {self.prompts} prompts ({self.rollouts} rollouts) -> {out_path}",
            f"skipped {sum(self.skipped.values())} prompts: {self.skipped[ALL_TIED]} all rewards tied, "
            f"{self.skipped[SINGLE_ROLLOUT]} single rollout, "
            f"{self.skipped[BELOW_MIN_MARGIN]} margin below min_margin {config.min_margin:g}",
        ]


def pair_rollouts(path: str | os.PathLike, config: PairConfig, summary: PairSummary) -> Iterator[dict]:
    """Stream the DPO records of a rollout file, counting into `summary` as they are consumed."""
    for _, group in iter_groups(path):
        found = extremes(group)
        summary.prompts += 1
        summary.rollouts += found.size
        reason = skip_reason(found, config)
        if reason is not None:
            summary.skipped[reason] += 1
            continue
        summary.pairs += 1
        yield dpo_record(found)


def run_pair(in_path: str | os.PathLike, out_path: str | os.PathLike, config: PairConfig) -> PairSummary:
    """Pair `in_path` into `out_path` (written atomically: on any error the previous output stays)."""
    summary = PairSummary()
    write_jsonl(out_path, pair_rollouts(in_path, config, summary))
    return summary
