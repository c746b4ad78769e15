"""An objective's page of the report: reward distribution, correct answers per prompt, pass@k, reward by input
field, output length and truncation, extraction failures, failure causes, rollout health (verdicts, findings by
check, examples), prompts by pass-rate band (the profile stage), dynamic sampling's drawn and kept, the SFT filter's
or the DPO pairs' counts, and the rollout browser."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rollout_pipeline.stages import report_charts as ch
from rollout_pipeline.stages import report_html as h
from rollout_pipeline.stages.health import VERDICTS
from rollout_pipeline.stages.report_data import ObjectiveSummary
from rollout_pipeline.stages.report_pages import Charts, num, pct


@dataclass
class ObjectiveExtras:
    """What the SFT filter or the DPO pair stage made of an objective's rollouts (None when they do not read it)."""

    sft_filter: dict | None = None  # metrics/sft_filter.json
    dpo_pairs: dict | None = None  # metrics/dpo_pairs.json
    margins: Counter[float] | None = None
    profile: dict | None = None  # metrics/profile/<objective>.json (the profile stage's bands)
    sampling: dict | None = None  # metrics/sampling/<objective>.json (what the collect stage drew and kept)


def objective_page(
    summary: ObjectiveSummary, extras: ObjectiveExtras, nav: list[tuple[str, str]], browser_prompts: int
) -> str:
    name = summary.name
    draw = Charts(name)
    metrics = summary.accumulator.metrics(None)
    head = h.cards(
        [
            ("prompts", summary.prompts),
            ("rollouts", summary.rollouts),
            ("mean reward", num(metrics["reward_mean"])),
            ("pass@1", num(metrics.get("pass@1"))),
            ("prompts with no reward variance", num(metrics["zero_variance_fraction"])),
            ("scored", summary.scored_of),
            ("not scored", sum(summary.not_scored.values())),
        ]
    )
    parts = [f"<h1>Objective {h.esc(name)}</h1>", head, *_dynamic_sampling(extras.sampling), "<h2>Rewards</h2>"]
    rewards = [{"reward": f"{reward:g}", "rollouts": count} for reward, count in sorted(summary.reward_counts.items())]
    figures = []
    if len(rewards) <= 12:
        figures.append(
            draw(ch.bar_chart("Reward distribution", rewards, "reward", "rollouts", "reward", "rollouts", sort=None))
        )
    else:
        raw = [{"reward": reward, "rollouts": count} for reward, count in sorted(summary.reward_counts.items())]
        figures.append(draw(ch.histogram("Reward distribution", raw, "reward", "rollouts", "reward", "rollouts")))
    histogram = summary.correct_histogram()
    sizes = sorted({row["n"] for row in histogram})
    for n in sizes:
        rows = [row for row in histogram if row["n"] == n]
        figures.append(
            draw(
                ch.bar_chart(
                    f"Correct answers per prompt (of {n})",
                    rows,
                    "correct",
                    "prompts",
                    f"rollouts with reward >= pass threshold, of {n}",
                    "prompts",
                ),
                f"0 of {n}: too hard for the policy; {n} of {n}: too easy. Both give group-relative RL no signal.",
            )
        )
    curve = [{"k": k, "pass@k": value} for k, value in summary.accumulator.pass_at_k().items()]
    figures.append(
        draw(
            ch.line_chart(
                "pass@k",
                curve,
                "k",
                {"pass@k": "pass@k"},
                "k (samples per prompt)",
                "pass@k (unbiased estimate)",
                y_domain=[0, 1],
                x_ordinal=True,
            )
        )
    )
    parts.append(h.charts(figures))
    parts.append("<h2>Reward by input field</h2>")
    fields = summary.categorical_fields()
    if fields:
        parts.append(
            h.charts(
                draw(
                    ch.bar_chart(
                        f"Mean reward by {field}",
                        [{"value": v, "mean reward": m, "rollouts": c} for v, (m, c) in values.items()],
                        "value",
                        "mean reward",
                        field,
                        "mean reward",
                        y_format=".3f",
                    ),
                    ", ".join(f"{v}: {c} rollouts" for v, (_, c) in values.items()),
                )
                for field, values in fields.items()
            )
        )
    else:
        parts.append(h.none("No input field with 2 to 20 distinct values (such as difficulty) in these rollouts."))
    parts.append("<h2>Outputs</h2>")
    parts.append(
        h.cards(
            [
                (
                    "truncated at max_output_tokens",
                    f"{summary.truncated} ({pct(summary.truncated, summary.rollouts)})",
                ),
                ("no answer extracted", _extraction_text(summary)),
                ("rollouts with token counts", summary.rollouts_with_tokens),
            ]
        )
    )
    if summary.output_tokens:
        lengths = [{"tokens": t, "rollouts": c} for t, c in sorted(summary.output_tokens.items())]
        parts.append(
            h.charts(
                [
                    draw(
                        ch.histogram(
                            "Output length", lengths, "tokens", "rollouts", "output tokens (response.usage)", "rollouts"
                        )
                    )
                ]
            )
        )
    else:
        parts.append(h.none("No rollout reports response.usage.output_tokens."))
    parts.append("<h2>Not scored: failures and skips</h2>")
    parts.append(_causes(summary, draw))
    parts.extend(_health(summary, draw))
    parts.extend(_profile(extras.profile, draw))
    parts.extend(_extras(extras, draw))
    parts.append("<h2>Rollout browser</h2>")
    parts.append(h.browser(summary.browser, min(browser_prompts, summary.prompts)))
    return h.page(f"Report: {name}", f"{name}.html", nav, "\n".join(parts), script=h.FILTER_SCRIPT)


def _dynamic_sampling(sampling: dict | None) -> list[str]:
    """What DAPO-style dynamic sampling drew and kept; nothing when the objective collects without it."""
    if not sampling or not sampling.get("dynamic_sampling"):
        return []
    drawn, kept = sampling["prompts_drawn"], sampling["groups_kept"]
    return [
        "<h2>Dynamic sampling</h2>",
        h.cards(
            [
                ("prompts drawn / groups kept", f"drawn {drawn}, kept {kept}"),
                ("groups with reward variance", f"{sampling['informative_groups']} of {drawn}"),
                ("groups requested", sampling["requested_groups"]),
                ("prompts drawn at most", sampling["max_prompts"]),
                ("rounds", sampling["rounds"]),
            ]
        ),
    ]


def _extraction_text(summary: ObjectiveSummary) -> str:
    if not summary.rollouts_with_extraction:
        return "- (the verifier reports no extracted_answer)"
    return f"{summary.extraction_failures} ({pct(summary.extraction_failures, summary.rollouts_with_extraction)})"


def _causes(summary: ObjectiveSummary, draw: Charts) -> str:
    parts = []
    if summary.not_scored:
        rows = [{"cause": cause, "rollouts": count} for cause, count in sorted(summary.not_scored.items())]
        parts.append(
            h.charts(
                [
                    draw(
                        ch.bar_chart("Rollouts not scored, by cause", rows, "cause", "rollouts", "cause", "rollouts"),
                        "From the collector's failures file.",
                    )
                ]
            )
        )
    else:
        parts.append(h.none("Every rollout was scored: the failures file lists no failure and no skip."))
    if summary.retries:
        parts.append(
            "<p>Retries by cause (from the run's stats file):</p>"
            + h.table(["cause", "retries"], sorted(summary.retries.items()))
        )
    else:
        parts.append(h.none("No request was retried (the run's stats file counts no retry)."))
    return "\n".join(parts)


def _health(summary: ObjectiveSummary, draw: Charts) -> list[str]:
    """Rollout health: verdicts, findings by check, and the first examples of each check."""
    tally = summary.accumulator.health
    table = tally.table()
    parts = ["<h2>Rollout health</h2>"]
    parts.append(
        h.cards([(verdict, f"{table[verdict]} ({pct(table[verdict], summary.rollouts)})") for verdict in VERDICTS])
    )
    rows = [{"check": check, "findings": count} for check, count in table["checks"].items()]
    parts.append(
        h.charts(
            [
                draw(
                    ch.bar_chart("Health findings by check", rows, "check", "findings", "check", "findings", sort=None),
                    "Rollouts per check (task_consistently_unhealthy: prompts whose every rollout is unhealthy). "
                    "Unobserved: a check lacked its evidence (no usage).",
                )
            ]
        )
    )
    examples = [
        (check, example["prompt_id"], example["rollout_index"], example["output"])
        for check, kept in sorted(tally.examples.items())
        for example in kept
    ]
    if examples:
        parts.append(h.table(["check", "prompt", "rollout", "output"], examples, css_class="examples"))
    else:
        parts.append(h.none("No rollout was found unhealthy."))
    return parts


def _profile(profile: dict | None, draw: Charts) -> list[str]:
    """Prompts by pass-rate band, overall and by the profile's group_by field."""
    if profile is None:
        return []
    low, high = profile["band"]
    caption = (
        f"unsolved: pass rate 0; hard: below {low:g}; learnable: {low:g} to {high:g}; easy: above {high:g}; "
        "solved: 1. Only the learnable band gives group-relative RL a signal on most prompts."
    )
    rows = [{"band": band, "prompts": count} for band, count in profile["bands"].items()]
    figures = [
        draw(ch.bar_chart("Prompts by pass-rate band", rows, "band", "prompts", "band", "prompts", sort=None), caption)
    ]
    for name, values in profile.get("by", {}).items():
        for value, bands in values.items():
            rows = [{"band": band, "prompts": count} for band, count in bands.items()]
            title = f"Prompts by pass-rate band, {name} = {value}"
            figures.append(draw(ch.bar_chart(title, rows, "band", "prompts", "band", "prompts", sort=None)))
    return ["<h2>Prompts by pass rate (profile)</h2>", h.charts(figures)]


def _extras(extras: ObjectiveExtras, draw: Charts) -> list[str]:
    parts = []
    if extras.sft_filter is not None:
        kept, dropped = extras.sft_filter["kept"], extras.sft_filter["dropped"]
        parts.append("<h2>SFT filter</h2>")
        rows = [{"outcome": "kept", "rollouts": kept}] + [
            {"outcome": f"dropped: {reason}", "rollouts": count} for reason, count in dropped.items()
        ]
        parts.append(
            h.charts(
                [
                    draw(
                        ch.bar_chart(
                            "SFT filter: kept and dropped",
                            rows,
                            "outcome",
                            "rollouts",
                            "outcome",
                            "rollouts",
                            sort=None,
                        ),
                        f"{kept} of {extras.sft_filter['rollouts']} rollouts kept, from "
                        f"{extras.sft_filter['kept_prompts']} of {extras.sft_filter['prompts']} prompts.",
                    )
                ]
            )
        )
    if extras.dpo_pairs is not None:
        pairs = extras.dpo_pairs
        parts.append("<h2>DPO pairs</h2>")
        parts.append(
            h.cards(
                [
                    ("pairs", pairs["pairs"]),
                    ("prompts", pairs["prompts"]),
                    ("prompts without a pair", sum(pairs["skipped"].values())),
                ]
            )
        )
        figures = []
        if extras.margins:
            rows = [{"margin": f"{m:g}", "pairs": c} for m, c in sorted(extras.margins.items())]
            figures.append(
                draw(
                    ch.bar_chart(
                        "DPO margin distribution", rows, "margin", "pairs", "chosen reward - rejected reward", "pairs"
                    )
                )
            )
        skipped = [{"reason": reason, "prompts": count} for reason, count in pairs["skipped"].items()]
        figures.append(
            draw(
                ch.bar_chart(
                    "Prompts without a pair, by reason",
                    skipped,
                    "reason",
                    "prompts",
                    "reason",
                    "prompts",
                    color=ch.PALETTE[5],
                    sort=None,
                )
            )
        )
        parts.append(h.charts(figures))
    return parts
