"""The RL loop's page of the report: fixed-temperature eval reward (learning), collection reward (what the trainer
saw), temperature and zero-variance fraction, side by side, each with its own axis; then a table per iteration."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from rollout_pipeline.stages import report_charts as ch
from rollout_pipeline.stages import report_html as h
from rollout_pipeline.stages.report_pages import RL_LOOP_PAGE, Charts, num


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
    draw = Charts("rl-loop")
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
                ("last eval reward", num(last.get("eval_reward_mean"))),
                ("last collection reward", num(last.get("reward_mean"))),
                ("last temperature", num(last.get("temperature"))),
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
                    num(row["temperature"]),
                    num(row["reward_mean"]),
                    num(row["pass@1"]),
                    num(row["zero_variance_fraction"]),
                    _drawn_kept(row),
                    num(row["eval_reward_mean"]),
                    num(row["eval_pass@1"]),
                    num(row.get("token_mult_prob_error"), 4),
                ]
                for row in rows
            ],
        )
    )
    return h.page("Report: RL loop", RL_LOOP_PAGE, nav, "\n".join(parts))
