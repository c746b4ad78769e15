"""The report's charts: Vega-Lite specs rendered to static SVG by vl-convert (no JavaScript, no network at view time).

Why static SVG: the report must open from disk on an offline cluster. vl-convert carries Vega and Vega-Lite inside
its wheel and renders in-process, so the page holds finished drawings; nothing is fetched, nothing runs in the
browser, and a chart looks the same in every viewer. Every chart names its axes, draws each series in its own
colour with a legend, and uses whole-number ticks for counts and iterations. The text is set in DejaVu Sans, which
Debian's fonts-dejavu-core provides on every machine of this project, so the layout (and so the bytes of the SVG,
which dvc.lock records) do not depend on whatever other fonts a machine has.
"""

from __future__ import annotations

import re
from typing import Any

import vl_convert

FONT = "DejaVu Sans"
WIDTH, HEIGHT = 320, 200
# Distinct, colour-blind-safe (Okabe-Ito); series keep their colour across charts.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
INTEGER_AXIS = {"tickMinStep": 1, "format": "d"}


def integer_axis(values: list[float]) -> dict:
    """An axis with whole-number ticks only (iterations): at most about ten, at the data's own integers."""
    whole = sorted({int(v) for v in values})
    if not whole:
        return INTEGER_AXIS
    step = max(1, -(-(whole[-1] - whole[0]) // 10))
    return {**INTEGER_AXIS, "values": list(range(whole[0], whole[-1] + 1, step))}


def _spec(title: str, body: dict, *, width: int = WIDTH, height: int = HEIGHT) -> dict:
    return {
        "$schema": SCHEMA,
        "title": title,
        "width": width,
        "height": height,
        "background": "white",
        "config": {
            "font": FONT,
            "axis": {"labelFontSize": 11, "titleFontSize": 12},
            "legend": {"labelFontSize": 11, "titleFontSize": 12, "orient": "bottom", "labelLimit": 360},
            "title": {"fontSize": 14, "anchor": "start"},
        },
        **body,
    }


def bar_chart(
    title: str,
    rows: list[dict],
    x: str,
    y: str,
    x_title: str,
    y_title: str,
    *,
    x_type: str = "ordinal",
    y_format: str | None = None,
    color: str = PALETTE[0],
    sort: Any = None,
) -> dict:
    """Bars of `y` by `x`, each bar labelled with its value."""
    y_axis = {"format": y_format} if y_format else INTEGER_AXIS
    x_encoding = {"field": x, "type": x_type, "title": x_title, "axis": {"labelAngle": 0}}
    if sort is not None:
        x_encoding["sort"] = sort
    encoding = {"x": x_encoding, "y": {"field": y, "type": "quantitative", "title": y_title, "axis": y_axis}}
    label_format = y_format or "d"
    return _spec(
        title,
        {
            "data": {"values": rows},
            "encoding": encoding,
            "layer": [
                {"mark": {"type": "bar", "color": color}},
                {
                    "mark": {"type": "text", "dy": -6, "fontSize": 10},
                    "encoding": {"text": {"field": y, "format": label_format}},
                },
            ],
        },
    )


def histogram(
    title: str, rows: list[dict], value: str, count: str, x_title: str, y_title: str, max_bins: int = 30
) -> dict:
    """A histogram of already counted values (`rows`: [{value, count}]), binned by Vega-Lite."""
    return _spec(
        title,
        {
            "data": {"values": rows},
            "mark": {"type": "bar", "color": PALETTE[0]},
            "encoding": {
                "x": {"field": value, "bin": {"maxbins": max_bins}, "type": "quantitative", "title": x_title},
                "y": {
                    "aggregate": "sum",
                    "field": count,
                    "type": "quantitative",
                    "title": y_title,
                    "axis": INTEGER_AXIS,
                },
            },
        },
    )


def line_chart(
    title: str,
    rows: list[dict],
    x: str,
    series: dict[str, str],
    x_title: str,
    y_title: str,
    *,
    y_domain: list[float] | None = None,
    x_ordinal: bool = False,
    width: int = WIDTH,
    colours: list[str] = PALETTE,
) -> dict:
    """One line with points per series (column -> legend label), on one y axis; missing values leave a gap."""
    long = [
        {x: row[x], "series": label, "value": row[column]}
        for row in rows
        for column, label in series.items()
        if row.get(column) is not None
    ]
    scale = {"zero": False} if y_domain is None else {"domain": y_domain}
    x_encoding = (
        {"field": x, "type": "ordinal", "title": x_title, "axis": {"labelAngle": 0}}
        if x_ordinal
        else {
            "field": x,
            "type": "quantitative",
            "title": x_title,
            "axis": integer_axis([row[x] for row in rows]),
            "scale": {"zero": False},
        }
    )
    return _spec(
        title,
        {
            "data": {"values": long},
            "mark": {"type": "line", "point": {"size": 50}},
            "encoding": {
                "x": x_encoding,
                "y": {"field": "value", "type": "quantitative", "title": y_title, "scale": scale},
                "color": {
                    "field": "series",
                    "type": "nominal",
                    "title": None,
                    "scale": {"domain": list(series.values()), "range": colours[: len(series)]},
                },
            },
        },
        width=width,
    )


def dual_axis_chart(
    title: str,
    rows: list[dict],
    x: str,
    left: tuple[str, str],
    right: tuple[str, str],
    x_title: str,
    width: int = WIDTH,
) -> dict:
    """Two series with an axis each (left, right: (column, label)), distinct colours and a legend."""
    layers = []
    for (column, label), orient, colour in ((left, "left", PALETTE[1]), (right, "right", PALETTE[2])):
        values = [{x: row[x], "series": label, column: row[column]} for row in rows if row.get(column) is not None]
        layers.append(
            {
                "data": {"values": values},
                "mark": {"type": "line", "point": {"size": 50}},
                "encoding": {
                    "x": {
                        "field": x,
                        "type": "quantitative",
                        "title": x_title,
                        "axis": integer_axis([row[x] for row in rows]),
                        "scale": {"zero": False},
                    },
                    "y": {
                        "field": column,
                        "type": "quantitative",
                        "title": label,
                        "axis": {"orient": orient, "titleColor": colour},
                        "scale": {"zero": True},
                    },
                    "color": {
                        "field": "series",
                        "type": "nominal",
                        "title": None,
                        "scale": {"domain": [left[1], right[1]], "range": [PALETTE[1], PALETTE[2]]},
                    },
                },
            }
        )
    return _spec(title, {"layer": layers, "resolve": {"scale": {"y": "independent"}}}, width=width)


_ID = re.compile(r'\bid="([^"]+)"')


def render_svg(spec: dict, prefix: str) -> str:
    """The chart as an SVG element; its ids get `prefix` so that many SVGs can share one page."""
    svg = vl_convert.vegalite_to_svg(spec)
    ids = set(_ID.findall(svg))
    for name in sorted(ids, key=len, reverse=True):
        svg = (
            svg.replace(f'id="{name}"', f'id="{prefix}-{name}"')
            .replace(f"url(#{name})", f"url(#{prefix}-{name})")
            .replace(f'href="#{name}"', f'href="#{prefix}-{name}"')
        )
    return svg


def offline_plots_template() -> str:
    """An HTML template for `dvc plots show --html-template` that carries Vega, Vega-Lite and vega-embed inline.

    DVC's page calls `vegaEmbed(...)` from classic scripts as the page is parsed; vl-convert's bundle is an ES
    module, which runs after parsing. So a stub queues those calls and the bundle replays them once it has loaded.
    """
    bundle = vl_convert.javascript_bundle(
        "window.vegaEmbed = vegaEmbed; for (const call of window.__queued || []) vegaEmbed(...call);"
    )
    bundle = bundle.replace("</script", "<\\/script")
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>DVC plots</title>\n'
        "<script>window.__queued = []; window.vegaEmbed = (...call) => window.__queued.push(call);</script>\n"
        f'<script type="module">\n{bundle}\n</script>\n'
        "<style>body { font-family: sans-serif; } table { border-spacing: 15px; }</style>\n"
        "</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )
