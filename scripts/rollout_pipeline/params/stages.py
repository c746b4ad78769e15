"""The models of the stages after collection: filter, pair, metrics, health checks, profile, report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rollout_pipeline.params.base import Checked, Strict
from rollout_pipeline.params.checks import check_band


class Filter(Strict):
    """The `filter` stage (SFT data)."""

    objective: str = Field("sft", description="the objective whose rollouts the SFT data is filtered from")
    min_reward: float = Field(0.8, description="SFT keeps rollouts with reward >= this")
    where: str | None = Field(None, description="an optional jq expression over a rollout record")
    dedupe: bool = Field(True, description="drop exact duplicate outputs for the same prompt")
    keep_reasoning: bool = Field(True, description="the model's reasoning as the assistant's reasoning_content")
    format: Literal["messages", "prompt_completion"] = Field(
        "messages",
        description=(
            "TRL's conversational language modeling (messages) or prompt-completion (completion-only loss by default)"
        ),
    )
    drop_unhealthy: bool = Field(False, description="drop rollouts the health checks find unhealthy (`health`)")
    where_timeout_s: float = Field(10.0, gt=0, description="seconds one record's `where` may take")
    where_stage_timeout_s: float = Field(3600.0, gt=0, description="seconds the whole stage's `where` may take")


class Pair(Strict):
    """The `pair` stage (DPO data)."""

    objective: str = Field("dpo", description="the objective whose rollouts the DPO pairs are made from")
    min_margin: float = Field(0.0, ge=0, description="pairs need chosen_reward - rejected_reward > 0 and >= this")
    pairs_per_prompt: int | None = Field(1, ge=1, description="pairs per prompt (null: no cap)")
    strategy: Literal["best_vs_worst", "all_pairs"] = Field(
        "best_vs_worst",
        description=(
            "best_vs_worst: i-th best against i-th worst, each rollout in one pair at most; all_pairs: every pair above "
            "the margin, largest margin first"
        ),
    )


class Metrics(Strict):
    """The `metrics` stage."""

    pass_threshold: float = Field(1.0, description="a rollout passes when reward >= this (pass@k counts passes)")


class Health(Strict):
    """The rollout health checks (stages/health.py): metrics count them, filter may drop, pair never chooses them."""

    repetition_ngram: int = Field(4, ge=1, description="words per n-gram of the repetition checks")
    repetition_min_ngrams: int = Field(16, ge=1, description="outputs with fewer n-grams are never called repetitive")
    repetition_ratio: float = Field(
        0.5, gt=0, le=1, description="output_repetition: the share of repeated n-grams above this"
    )
    runaway_repetition_ratio: float = Field(
        0.2, gt=0, le=1, description="output_runaway_repetition: cut off at max_output_tokens and repeating above this"
    )
    script_mismatch_ratio: float = Field(
        0.5, gt=0, le=1, description="output_script_mismatch: the share of letters in scripts the input never uses"
    )
    script_min_letters: int = Field(20, ge=1, description="outputs with fewer letters are never called a mismatch")


class Profile(Strict):
    """The `profile` stage: per-prompt pass rates, and prompts by pass-rate band."""

    band: Checked(list[float], check_band) = Field(
        default_factory=lambda: [0.1, 0.9], description="the learnable band [low, high] of pass rates"
    )
    group_by: str | None = Field("difficulty", description="an input field to count bands by, when records carry it")


class Report(Strict):
    """The HTML report (reports/index.html)."""

    browser_prompts: int = Field(40, ge=1, description="prompts the rollout browser shows per objective")
    random_per_prompt: int = Field(1, ge=0, description="random rollouts shown per prompt, besides the best and worst")
    seed: int = Field(0, description="which prompts and rollouts the browser samples")
