"""`python scripts/report.py` (stage report): the run's outputs -> reports/index.html, a page per objective, the RL loop.

    python scripts/report.py                      # reports/ from params.yaml's objectives and the pipeline's files
    python scripts/report.py --plots-template T   # write the offline HTML template that `make plots` gives DVC
    python scripts/report.py --rl-loop-only       # only the RL loop's page, from metrics/rl_progress.csv alone

Reads data/rollouts/<objective>.jsonl (and .failures.ndjson, and the run's .stats.json for retries),
metrics/sft_filter.json, metrics/dpo_pairs.json and data/dpo/pairs.jsonl, metrics/profile/<objective>.json,
metrics/sampling/<objective>.json, and metrics/rl_progress.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rollout_pipeline import paths
from rollout_pipeline.cli.stage_args import load_params
from rollout_pipeline.errors import run_cli
from rollout_pipeline.settings import PARAMS_FILE
from rollout_pipeline.stages.health import HealthConfig
from rollout_pipeline.stages.report_charts import offline_plots_template
from rollout_pipeline.stages.report_data import BrowserConfig, pair_margins, read_json_file, summarize_rollouts
from rollout_pipeline.stages.report_objective import ObjectiveExtras, objective_page
from rollout_pipeline.stages.report_pages import RL_LOOP_PAGE, index_page, navigation, write_pages
from rollout_pipeline.stages.report_rl_loop import read_progress, rl_loop_page


def build_report(params: dict, out_dir: str, rollouts_dir: str | Path = paths.ROLLOUTS_DIR) -> list[str]:
    """Write the report; returns the page names."""
    config = BrowserConfig(**params["report"])
    objectives = list(params["objectives"])
    nav = navigation(objectives)
    sft_source, dpo_source = params["filter"]["objective"], params["pair"]["objective"]
    pages, summaries = {}, []
    for name in objectives:
        summary = summarize_rollouts(
            name,
            Path(rollouts_dir) / f"{name}.jsonl",
            params["metrics"]["pass_threshold"],
            config,
            HealthConfig.from_params(params["health"]),
        )
        summaries.append(summary)
        # The filter stage reads filter.objective's rollouts and the pair stage pair.objective's (dvc.yaml).
        extras = ObjectiveExtras(
            profile=read_json_file(paths.profile_bands(name)), sampling=read_json_file(paths.sampling_metrics(name))
        )
        if name == sft_source:
            extras.sft_filter = read_json_file(paths.SFT_FILTER_SUMMARY)
        if name == dpo_source:
            extras.dpo_pairs = read_json_file(paths.DPO_PAIRS_SUMMARY)
            extras.margins = pair_margins(paths.DPO_PAIRS)
        pages[f"{name}.html"] = objective_page(summary, extras, nav, config.browser_prompts)
    rl_rows = read_progress(paths.RL_PROGRESS_CSV)
    pages[RL_LOOP_PAGE] = rl_loop_page(rl_rows, params["rl"]["eval"], nav)
    pages["index.html"] = index_page(summaries, rl_rows, nav)
    write_pages(out_dir, pages)
    return sorted(pages)


def build_rl_loop_report(params: dict, out_dir: str) -> list[str]:
    """Write the RL loop's page alone (a loop run without the objectives' collections, such as make demo-rl-real)."""
    page = rl_loop_page(read_progress(paths.RL_PROGRESS_CSV), params["rl"]["eval"], [(RL_LOOP_PAGE, "RL loop")])
    write_pages(out_dir, {RL_LOOP_PAGE: page})
    return [RL_LOOP_PAGE]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=str(paths.REPORTS_DIR), help="folder to write (default: %(default)s); replaced whole"
    )
    parser.add_argument("--params", default=PARAMS_FILE, help="params file (default: params.yaml)")
    parser.add_argument(
        "--plots-template",
        metavar="PATH",
        help="write only the offline template for `dvc plots show --html-template` to PATH",
    )
    parser.add_argument(
        "--rl-loop-only",
        action="store_true",
        help="write only the RL loop's page, which needs nothing but metrics/rl_progress.csv",
    )
    args = parser.parse_args(argv)
    if args.plots_template:
        path = Path(args.plots_template)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(offline_plots_template(), encoding="utf-8")
        print(f"offline plots template -> {path}")
        return 0
    build = build_rl_loop_report if args.rl_loop_only else build_report
    names = build(load_params(args.params), args.out)
    opening = "index.html" if "index.html" in names else names[0]
    print(f"{args.out}/{opening}: {', '.join(names)} written; open it in a browser, no network needed")
    return 0


def script_main() -> None:
    """Entry point of `python scripts/report.py`."""
    run_cli(main, "report.py")
