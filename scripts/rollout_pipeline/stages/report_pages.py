"""The report stage: what each page of reports/ shows, built from the objectives' summaries and the RL progress table.

reports/index.html      every objective's headline numbers, and links
reports/<objective>.html   reward distribution, correct answers per prompt, pass@k, reward by input field,
                        output length and truncation, extraction failures, failure causes, rollout health (verdicts,
                        findings by check, examples), prompts by pass-rate band (the profile stage), the SFT
                        filter's or the DPO pairs' counts, and the rollout browser
reports/rl-loop.html    the RL loop: fixed-temperature eval reward (learning), collection reward (what the trainer
                        saw), temperature and zero-variance fraction, side by side, each with its own axis
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rollout_pipeline.stages import report_charts as ch
from rollout_pipeline.stages import report_html as h
from rollout_pipeline.stages.health import VERDICTS
from rollout_pipeline.stages.report_data import ObjectiveSummary

RL_LOOP_PAGE = "rl-loop.html"


@dataclass
class ObjectiveExtras:
    """What the SFT filter or the DPO pair stage made of an objective's rollouts (None when they do not read it)."""

    sft_filter: dict | None = None  # metrics/sft_filter.json
    dpo_pairs: dict | None = None  # metrics/dpo_pairs.json
    margins: Counter[float] | None = None
    profile: dict | None = None  # metrics/profile/<objective>.json (the profile stage's bands)
    sampling: dict | None = None  # metrics/sampling/<objective>.json (what the collect stage drew and kept)


def _pct(part: int, whole: int) -> str:
    return "-" if not whole else f"{100 * part / whole:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class _Charts:
    """Renders a page's charts with ids unique on the page."""

    def __init__(self, page: str) -> None:
        self.page, self.count = page, 0

    def __call__(self, spec: dict, caption: str | None = None) -> str:
        self.count += 1
        return h.figure(ch.render_svg(spec, f"{self.page}-c{self.count}"), caption)


def objective_page(
    summary: ObjectiveSummary, extras: ObjectiveExtras, nav: list[tuple[str, str]], browser_prompts: int
) -> str:
    name = summary.name
    draw = _Charts(name)
    metrics = summary.accumulator.metrics(None)
    head = h.cards(
        [
            ("prompts", summary.prompts),
            ("rollouts", summary.rollouts),
            ("mean reward", _num(metrics["reward_mean"])),
            ("pass@1", _num(metrics.get("pass@1"))),
            ("prompts with no reward variance", _num(metrics["zero_variance_fraction"])),
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
                    f"{summary.truncated} ({_pct(summary.truncated, summary.rollouts)})",
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
    return f"{summary.extraction_failures} ({_pct(summary.extraction_failures, summary.rollouts_with_extraction)})"


def _causes(summary: ObjectiveSummary, draw: _Charts) -> str:
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


def _health(summary: ObjectiveSummary, draw: _Charts) -> list[str]:
    """Rollout health: verdicts, findings by check, and the first examples of each check."""
    tally = summary.accumulator.health
    table = tally.table()
    parts = ["<h2>Rollout health</h2>"]
    parts.append(
        h.cards([(verdict, f"{table[verdict]} ({_pct(table[verdict], summary.rollouts)})") for verdict in VERDICTS])
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


def _profile(profile: dict | None, draw: _Charts) -> list[str]:
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


def _extras(extras: ObjectiveExtras, draw: _Charts) -> list[str]:
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


def _drawn_kept(row: dict) -> str:
    """ "drawn / kept" of an iteration (dynamic sampling keeps only groups with reward variance); "-" when unknown."""
    drawn, kept = row.get("prompts_drawn"), row.get("groups_kept")
    return "-" if drawn is None or kept is None else f"{int(drawn)} / {int(kept)}"


def read_progress(path: str | os.PathLike) -> list[dict]:
    """metrics/rl_progress.csv as rows of numbers (empty cells -> None); [] when the file does not exist."""
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    parsed = []
    for row in rows:
        parsed.append(
            {
                key: (value if key == "prompts" else (float(value) if value not in ("", None) else None))
                for key, value in row.items()
            }
        )
        parsed[-1]["iteration"] = int(parsed[-1]["iteration"])
    return parsed


def _same(rows: list[dict], a: str, b: str) -> bool:
    return all(row.get(a) == row.get(b) for row in rows)


def _reward_series(rows: list[dict], reward: str, pass1: str, label: str) -> tuple[dict[str, str], str | None]:
    """The reward line, and pass@1 beside it only where it says something else (with 0/1 rewards they are equal)."""
    if _same(rows, reward, pass1):
        return {reward: f"{label} mean reward (= pass@1)"}, "With 0/1 rewards pass@1 equals the mean reward: one line."
    return {reward: f"{label} mean reward", pass1: f"{label} pass@1"}, None


def rl_loop_page(rows: list[dict], evaluation: dict, nav: list[tuple[str, str]]) -> str:
    draw = _Charts("rl-loop")
    parts = [
        "<h1>The RL loop</h1>",
        '<p class="lead">Collection reward moves with the policy <em>and</em> with the annealed temperature. '
        f"The evaluation samples every checkpoint at one fixed temperature ({h.esc(evaluation['temperature'])}) "
        f"on the held-out prompts {h.esc(evaluation['prompts'])} with one seed ({h.esc(evaluation['seed'])}), "
        "so its curve is learning alone.</p>",
    ]
    if not rows:
        parts.append(
            h.none(
                "No RL iterations yet: `make rl-iter N=5` runs five, then `dvc repro report` (or make "
                "run) draws them here."
            )
        )
        return h.page("Report: RL loop", RL_LOOP_PAGE, nav, "\n".join(parts))
    last = rows[-1]
    parts.append(
        h.cards(
            [
                ("iterations", len(rows)),
                ("last eval reward", _num(last.get("eval_reward_mean"))),
                ("last collection reward", _num(last.get("reward_mean"))),
                ("last temperature", _num(last.get("temperature"))),
            ]
        )
    )
    eval_series, eval_note = _reward_series(rows, "eval_reward_mean", "eval_pass@1", "eval")
    collect_series, collect_note = _reward_series(rows, "reward_mean", "pass@1", "collection")
    width = 250  # three side by side on a laptop screen
    figures = [
        draw(
            ch.line_chart(
                f"Learning: eval at T = {evaluation['temperature']:g}",
                rows,
                "iteration",
                eval_series,
                "iteration (checkpoint)",
                "reward on held-out prompts",
                width=width,
            ),
            eval_note,
        ),
        draw(
            ch.line_chart(
                "What the trainer saw: collection",
                rows,
                "iteration",
                collect_series,
                "iteration",
                "reward of the collected rollouts",
                width=width,
                colours=ch.PALETTE[3:],
            ),
            collect_note,
        ),
        draw(
            ch.dual_axis_chart(
                "Exploration",
                rows,
                "iteration",
                ("temperature", "temperature"),
                ("zero_variance_fraction", "zero-variance fraction"),
                "iteration",
                width=width,
            ),
            "Zero-variance fraction: prompts whose rollouts all got one reward (no GRPO signal).",
        ),
    ]
    parts.append(h.charts(figures))
    parts.append("<h2>Iterations</h2>")
    # On-policy error: what the trainer reported of its check (the LoRA trainer), "-" for a trainer that reports none.
    parts.append(
        h.table(
            [
                "iteration",
                "prompts",
                "temperature",
                "collection reward",
                "collection pass@1",
                "zero-variance fraction",
                "prompts drawn / groups kept",
                "eval reward",
                "eval pass@1",
                "on-policy error (token_mult_prob_error)",
            ],
            [
                [
                    f"{row['iteration']:03d}",
                    row["prompts"],
                    _num(row["temperature"]),
                    _num(row["reward_mean"]),
                    _num(row["pass@1"]),
                    _num(row["zero_variance_fraction"]),
                    _drawn_kept(row),
                    _num(row["eval_reward_mean"]),
                    _num(row["eval_pass@1"]),
                    _num(row.get("token_mult_prob_error"), 4),
                ]
                for row in rows
            ],
        )
    )
    return h.page("Report: RL loop", RL_LOOP_PAGE, nav, "\n".join(parts))


def index_page(summaries: list[ObjectiveSummary], rl_rows: list[dict], nav: list[tuple[str, str]]) -> str:
    rows = []
    for summary in summaries:
        metrics = summary.accumulator.metrics(None)
        rows.append(
            f'<tr><td><a href="{h.esc(summary.name)}.html">{h.esc(summary.name)}</a></td>'
            f"<td>{summary.prompts}</td><td>{summary.rollouts}</td><td>{_num(metrics['reward_mean'])}</td>"
            f"<td>{_num(metrics.get('pass@1'))}</td><td>{_num(metrics['zero_variance_fraction'])}</td>"
            f"<td>{summary.scored_of}</td><td>{sum(summary.not_scored.values())}</td></tr>"
        )
    head = "".join(
        f"<th>{name}</th>"
        for name in (
            "objective",
            "prompts",
            "rollouts",
            "mean reward",
            "pass@1",
            "zero-variance fraction",
            "scored",
            "not scored",
        )
    )
    loop = (
        f'{len(rl_rows)} iterations: <a href="{RL_LOOP_PAGE}">the RL loop</a>'
        if rl_rows
        else f'no iterations yet (`make rl-iter N=5`): <a href="{RL_LOOP_PAGE}">the RL loop</a>'
    )
    body = (
        "<h1>Rollout report</h1>"
        '<p class="lead">Built by the <code>report</code> stage from this run\'s outputs; it needs no network.</p>'
        f'<table class="numbers"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        f"<h2>RL loop</h2><p>{loop}</p>"
    )
    return h.page("Rollout report", "index.html", nav, body)


def navigation(objectives: list[str]) -> list[tuple[str, str]]:
    return [("index.html", "overview")] + [(f"{name}.html", name) for name in objectives] + [(RL_LOOP_PAGE, "RL loop")]


def write_pages(out_dir: str | os.PathLike, pages: dict[str, str]) -> None:
    """Replace `out_dir` with exactly these pages, all at once (a failed build leaves the old report)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    try:
        for name, text in pages.items():
            (staging / name).write_text(text, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
