"""The pair stage: rollouts -> DPO preference pairs (TRL's conversational format).

Per prompt, the group's rollouts are ranked best first: by reward, highest first, ties in file order
(rollout_index order in collector output). The worst-first ranking is that one reversed. With the default
(`best_vs_worst`, `pairs_per_prompt: 1`) chosen = the first rollout among those with the top reward and
rejected = the last among those with the bottom reward, exactly as the seed's snippet picks them (its
`sorted(group, key=reward, reverse=True)` is stable: [0] and [-1]).

Strategies (`pair.strategy`), both capped at `pairs_per_prompt` pairs per prompt (null: no cap):
  best_vs_worst  pair i is the i-th best against the i-th worst (i = 1, 2, ...): each rollout is in at most one
                 pair, and margins only shrink with i, so pairing stops at the first pair that fails the margin.
  all_pairs      every (chosen, rejected) pair whose margin passes, a rollout in as many pairs as pass;
                 largest margin first, then by the chosen's rank, then by the rejected's (worst first).
A pair needs chosen_reward - rejected_reward > 0 and >= `min_margin`: a pair of equally good answers teaches DPO
nothing (or noise). So a prompt with a single rollout, with all rewards tied, or whose best pair is below
`min_margin` gives no pair; at pairs_per_prompt 1 both strategies write the same best-against-worst pair.
An unhealthy rollout (stages/health.py: hollow, repeating, ...) is never chosen, whatever its reward; it may be
rejected. A prompt whose only rollouts above the worst are unhealthy gives no pair (unhealthy_best).
Streaming: one prompt's group is held at a time, each rollout as its reward, output and prompt only.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from rollout_pipeline.jsonl import write_jsonl
from rollout_pipeline.stages.groups import Rollout, iter_groups
from rollout_pipeline.stages.health import HealthConfig, checked_group, record_of

SINGLE_ROLLOUT = "single_rollout"
ALL_TIED = "all_tied"
BELOW_MIN_MARGIN = "below_min_margin"
UNHEALTHY_BEST = "unhealthy_best"
SKIP_REASONS = (SINGLE_ROLLOUT, ALL_TIED, UNHEALTHY_BEST, BELOW_MIN_MARGIN)

BEST_VS_WORST = "best_vs_worst"
ALL_PAIRS = "all_pairs"
STRATEGIES = (BEST_VS_WORST, ALL_PAIRS)


@dataclass(frozen=True)
class PairConfig:
    """The `pair` section of params.yaml as validated (its defaults are the model's: params/stages.py), and the
    health checks' thresholds; `pairs_per_prompt` None means no cap."""

    min_margin: float
    pairs_per_prompt: int | None
    strategy: str
    health: HealthConfig

    @classmethod
    def from_params(cls, params: dict) -> PairConfig:
        """From validated params (`pair` and `health`)."""
        section = params["pair"]
        return cls(
            min_margin=section["min_margin"],
            pairs_per_prompt=section["pairs_per_prompt"],
            strategy=section["strategy"],
            health=HealthConfig.from_params(params["health"]),
        )


@dataclass(frozen=True)
class Pair:
    """One preference pair of a prompt's group."""

    chosen: Rollout
    rejected: Rollout

    @property
    def margin(self) -> float:
        return self.chosen.reward - self.rejected.reward


def ranked(group: Iterable[Rollout], health: HealthConfig) -> list[Rollout]:
    """A group's rollouts best first (reward descending, ties in file order), each slimmed to what a pair record
    needs (a record's `response` can hold the output again and per-token data, which a pair never uses) and
    whether it may be chosen (`unhealthy`)."""
    slim = []
    for rollout, checked in checked_group(group, record_of, health):
        output = rollout.output()  # every record must have an output, not just the ones that end up in a pair
        unhealthy = checked.verdict == "unhealthy"
        record = {"input": rollout.record.get("input"), "output": output, "unhealthy": unhealthy}
        slim.append(dataclasses.replace(rollout, record=record))
    return sorted(slim, key=lambda rollout: -rollout.reward)  # stable: equal rewards stay in file order


def passes(pair: Pair, config: PairConfig) -> bool:
    """Whether a pair's margin makes it a preference: > 0 and >= min_margin."""
    return pair.margin > 0 and pair.margin >= config.min_margin


def candidate_pairs(best_first: list[Rollout], config: PairConfig) -> Iterator[Pair]:
    """Every pair the strategy would write without the cap, in the order it writes them."""
    worst_first = best_first[::-1]
    choosable = [rollout for rollout in best_first if not rollout.record["unhealthy"]]
    if config.strategy == BEST_VS_WORST:
        for chosen, rejected in zip(choosable, worst_first):
            pair = Pair(chosen, rejected)
            if not passes(pair, config):
                return  # the i-th best only gets worse and the i-th worst only better from here
            yield pair
    elif config.strategy == ALL_PAIRS:
        ranked_pairs = [
            (c, r, Pair(chosen, rejected))
            for c, chosen in enumerate(choosable)
            for r, rejected in enumerate(worst_first)
        ]
        ranked_pairs.sort(key=lambda item: (-item[2].margin, item[0], item[1]))
        yield from (pair for _, _, pair in ranked_pairs if passes(pair, config))
    else:
        raise ValueError(f"unknown pair strategy {config.strategy!r}; known: {', '.join(STRATEGIES)}")


def skip_reason(best_first: list[Rollout], config: PairConfig) -> str | None:
    """Why a group gives no pair (one of SKIP_REASONS), judged on its best pair (best against worst), or None."""
    if len(best_first) < 2:
        return SINGLE_ROLLOUT
    if Pair(best_first[0], best_first[-1]).margin <= 0:
        return ALL_TIED
    choosable = [rollout for rollout in best_first if not rollout.record["unhealthy"]]
    margin = Pair(choosable[0], best_first[-1]).margin if choosable else 0.0
    if margin <= 0:
        return UNHEALTHY_BEST
    if margin < config.min_margin:
        return BELOW_MIN_MARGIN
    return None


def dpo_record(pair: Pair) -> dict:
    """The preference record: prompt messages, chosen and rejected assistant turns, and their rewards."""
    chosen, rejected = pair.chosen, pair.rejected
    return {
        "prompt": chosen.messages(),
        "chosen": [{"role": "assistant", "content": chosen.output()}],
        "rejected": [{"role": "assistant", "content": rejected.output()}],
        "prompt_id": chosen.prompt_id,
        "chosen_reward": chosen.reward,
        "rejected_reward": rejected.reward,
        "margin": pair.margin,
    }


@dataclass
class PairSummary:
    """What the pair stage saw and did; `skipped` counts prompts per reason in SKIP_REASONS, `over_cap` the pairs that
    passed the margin but were left out by pairs_per_prompt."""

    prompts: int = 0
    rollouts: int = 0
    pairs: int = 0
    paired_prompts: int = 0
    over_cap: int = 0
    margin_sum: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict:
        """The summary as the stage's metrics file (metrics/dpo_pairs.json): counts, and prompts skipped by reason."""
        return {
            "prompts": self.prompts,
            "rollouts": self.rollouts,
            "pairs": self.pairs,
            "skipped": {reason: self.skipped[reason] for reason in SKIP_REASONS},
        }

    def lines(self, config: PairConfig, out_path: str | os.PathLike) -> list[str]:
        """The human summary printed by the stage: pairs written, every skip reason with its count, and what the
        strategy made of the prompts that gave pairs."""
        cap = "no cap" if config.pairs_per_prompt is None else f"pairs_per_prompt {config.pairs_per_prompt}"
        per_prompt = self.pairs / self.paired_prompts if self.paired_prompts else 0.0
        mean_margin = self.margin_sum / self.pairs if self.pairs else 0.0
        return [
            f"wrote {self.pairs} pairs from {self.prompts} prompts ({self.rollouts} rollouts) -> {out_path}",
            f"skipped {sum(self.skipped.values())} prompts: {self.skipped[ALL_TIED]} all rewards tied, "
            f"{self.skipped[SINGLE_ROLLOUT]} single rollout, "
            + (
                f"{self.skipped[UNHEALTHY_BEST]} only unhealthy rollouts to choose, "
                if self.skipped[UNHEALTHY_BEST]
                else ""
            )
            + f"{self.skipped[BELOW_MIN_MARGIN]} margin below min_margin {config.min_margin:g}",
            f"{config.strategy}, {cap}: {self.paired_prompts} prompts paired, {per_prompt:.2f} pairs per paired prompt, "
            f"mean margin {mean_margin:.3g}, {self.over_cap} more pairs passed the margin but were over the cap",
        ]


def pair_rollouts(path: str | os.PathLike, config: PairConfig, summary: PairSummary) -> Iterator[dict]:
    """Stream the DPO records of a rollout file, counting into `summary` as they are consumed."""
    for _, group in iter_groups(path):
        best_first = ranked(group, config.health)
        summary.prompts += 1
        summary.rollouts += len(best_first)
        reason = skip_reason(best_first, config)
        if reason is not None:
            summary.skipped[reason] += 1
            continue
        summary.paired_prompts += 1
        for index, pair in enumerate(candidate_pairs(best_first, config)):
            if config.pairs_per_prompt is not None and index >= config.pairs_per_prompt:
                summary.over_cap += 1
                continue
            summary.pairs += 1
            summary.margin_sum += pair.margin
            yield dpo_record(pair)


def run_pair(in_path: str | os.PathLike, out_path: str | os.PathLike, config: PairConfig) -> PairSummary:
    """Pair `in_path` into `out_path` (written atomically: on any error the previous output stays)."""
    summary = PairSummary()
    write_jsonl(out_path, pair_rollouts(in_path, config, summary))
    return summary
