"""The report's pages: self-contained HTML (inline CSS, inline SVG charts, one small filter script), all text escaped.

Every string that comes from a rollout, a prompt row or a server (model output, reasoning, answers, ids, field
values) goes through `esc`, so a model output holding `<script>` or an `onerror=` attribute is shown as text and
never runs. The only script on a page is FILTER_SCRIPT, a constant.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from rollout_pipeline.stages.report_data import BrowserRow

CSS = """
body { font-family: "DejaVu Sans", sans-serif; margin: 0 auto; max-width: 1260px; padding: 0 16px 40px;
       color: #1a1a1a; }
nav { padding: 12px 0; border-bottom: 1px solid #ddd; margin-bottom: 8px; }
nav a { margin-right: 18px; color: #0057a0; text-decoration: none; }
nav a.here { font-weight: bold; color: #1a1a1a; }
h1 { font-size: 24px; margin: 14px 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 1px solid #eee; }
p.lead { color: #444; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 120px; }
.card b { display: block; font-size: 20px; } .card span { color: #555; font-size: 13px; }
.charts { display: flex; flex-wrap: wrap; gap: 14px; }
figure.chart { margin: 0; border: 1px solid #eee; padding: 4px; }
figure.chart figcaption { font-size: 12px; color: #555; max-width: 380px; padding: 2px 4px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 4px 8px; text-align: left; vertical-align: top; }
table.numbers td { text-align: right; } table.numbers td:first-child { text-align: left; }
#browser pre { white-space: pre-wrap; word-break: break-word; max-height: 240px; overflow: auto; margin: 0;
               font-size: 12px; max-width: 520px; }
#browser td.kind-best { color: #007a3d; } #browser td.kind-worst { color: #b00020; }
input#filter { font-size: 15px; padding: 4px 8px; width: 360px; margin: 8px 12px 8px 0; }
.none { color: #555; font-style: italic; }
"""

FILTER_SCRIPT = """
(function () {
  var box = document.getElementById("filter");
  var rows = Array.prototype.slice.call(document.querySelectorAll("#browser tbody tr"));
  var shown = document.getElementById("shown");
  function apply() {
    var query = box.value.toLowerCase(), count = 0;
    rows.forEach(function (row) {
      var hit = !query || row.textContent.toLowerCase().indexOf(query) !== -1;
      row.hidden = !hit;
      if (hit) { count += 1; }
    });
    shown.textContent = count + " of " + rows.length + " rollouts shown";
  }
  box.addEventListener("input", apply);
  apply();
}());
"""


def esc(value: object) -> str:
    """Text for HTML: every <, >, &, and quote escaped."""
    return html.escape(str(value), quote=True)


def page(title: str, current: str, nav: list[tuple[str, str]], body: str, *, script: str | None = None) -> str:
    """A whole page: `nav` is [(file name, label)], `current` the file name of this one."""
    here = ' class="here"'
    links = "".join(f'<a href="{esc(href)}"{here if href == current else ""}>{esc(label)}</a>' for href, label in nav)
    tail = f"<script>{script}</script>\n" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:; script-src 'unsafe-inline'\">\n"
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<nav>{links}</nav>\n{body}\n"
        f"{tail}</body>\n</html>\n"
    )


def cards(items: Iterable[tuple[str, object]]) -> str:
    """A row of headline numbers: [(label, value)]."""
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{esc(value)}</b><span>{esc(label)}</span></div>' for label, value in items)
        + "</div>"
    )


def figure(svg: str, caption: str | None = None) -> str:
    """One chart (an SVG from report_charts.render_svg, trusted: no data text reaches it unescaped)."""
    text = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="chart">{svg}{text}</figure>'


def charts(figures: Iterable[str]) -> str:
    return '<div class="charts">' + "".join(figures) + "</div>"


def none(text: str) -> str:
    return f'<p class="none">{esc(text)}</p>'


def table(header: list[str], rows: Iterable[Iterable[object]], css_class: str = "numbers") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _pre(text: str | None) -> str:
    return '<span class="none">none</span>' if text is None else f"<pre>{esc(text)}</pre>"


def browser(rows: list[BrowserRow], prompts: int) -> str:
    """The rollout browser: a filter box and one table row per rollout; every text escaped."""
    body = []
    for row in rows:
        where = f"task {row.task_index}, rollout {row.rollout_index}"
        body.append(
            f'<tr data-kind="{esc(row.kind)}"><td class="kind-{esc(row.kind)}">{esc(row.kind)}</td>'
            f"<td>{esc(row.prompt_id)}<br><small>{esc(where)}</small></td><td>{esc(f'{row.reward:g}')}</td>"
            f"<td>{_pre(row.expected_answer)}</td><td>{_pre(row.extracted_answer)}</td>"
            f"<td>{_pre(row.input)}</td><td>{_pre(row.reasoning)}</td><td>{_pre(row.output)}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>" for h in ("kind", "prompt", "reward", "expected", "extracted", "input", "reasoning", "output")
    )
    return (
        f'<p class="lead">{prompts} prompts sampled with report.seed; for each, its best rollout, its worst, and '
        "report.random_per_prompt others. Type to filter (any text: a prompt id, best, worst, an answer).</p>"
        '<input id="filter" type="search" placeholder="filter rollouts" aria-label="filter rollouts">'
        '<span id="shown"></span>'
        f'<table id="browser"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )
