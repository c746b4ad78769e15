"""The report stage's pages: where each is (reports/), what they share (numbers as shown, charts with ids unique on
the page, navigation), the index page, and how the pages are written at once.

reports/index.html      every objective's headline numbers, and links
reports/<objective>.html   an objective's page (report_objective)
reports/rl-loop.html    the RL loop's page (report_rl_loop)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rollout_pipeline.stages import report_charts as ch
from rollout_pipeline.stages import report_html as h
from rollout_pipeline.stages.report_data import ObjectiveSummary

RL_LOOP_PAGE = "rl-loop.html"


def pct(part: int, whole: int) -> str:
    return "-" if not whole else f"{100 * part / whole:.1f}%"


def num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class Charts:
    """Renders a page's charts with ids unique on the page."""

    def __init__(self, page: str) -> None:
        self.page, self.count = page, 0

    def __call__(self, spec: dict, caption: str | None = None) -> str:
        self.count += 1
        return h.figure(ch.render_svg(spec, f"{self.page}-c{self.count}"), caption)


def index_page(summaries: list[ObjectiveSummary], rl_rows: list[dict], nav: list[tuple[str, str]]) -> str:
    rows = []
    for summary in summaries:
        metrics = summary.accumulator.metrics(None)
        rows.append(
            f'<tr><td><a href="{h.esc(summary.name)}.html">{h.esc(summary.name)}</a></td>'
            f"<td>{summary.prompts}</td><td>{summary.rollouts}</td><td>{num(metrics['reward_mean'])}</td>"
            f"<td>{num(metrics.get('pass@1'))}</td><td>{num(metrics['zero_variance_fraction'])}</td>"
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
