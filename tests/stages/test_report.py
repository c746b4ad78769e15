"""The report stage: what its pages say, byte-for-byte reproducible, and model text never taken for markup."""

from __future__ import annotations

import json
import re

import pytest

from report_testkit import EVIL, EXPECTED_ROWS, PROGRESS, build_report, build_sample_run, run
from rollout_pipeline.stages.groups import iter_groups
from rollout_pipeline.stages.report_data import pick_rows, summarize_rollouts
from rollout_pipeline.stages.report_pages import navigation
from rollout_pipeline.stages.report_rl_loop import rl_loop_page
from stage_testkit import browser_config, group, health_config, write_rollouts

EVAL = {"temperature": 1.0, "prompts": "data/prompts/heldout.jsonl", "seed": 300}


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """A small run's outputs, with the report built from them (reports/)."""
    run = build_sample_run(tmp_path_factory.mktemp("run"))
    build_report(run)
    return run


def test_the_report_is_an_index_a_page_per_objective_and_one_for_the_rl_loop_all_linked(sample_run):
    reports = sample_run / "reports"
    assert sorted(p.name for p in reports.iterdir()) == [
        "dpo.html",
        "index.html",
        "rl-loop.html",
        "rl.html",
        "sft.html",
    ]
    index = (reports / "index.html").read_text()
    for page in ("rl.html", "sft.html", "dpo.html", "rl-loop.html"):
        assert f'href="{page}"' in index
    assert "3 iterations" in index


def test_the_same_outputs_give_byte_identical_pages(sample_run):
    first, second = sample_run / "reports", build_report(sample_run, "again")
    for page in first.iterdir():
        assert page.read_bytes() == (second / page.name).read_bytes(), page.name


def test_model_text_is_escaped_and_the_only_script_is_the_filter(sample_run):
    page = (sample_run / "reports/rl.html").read_text()
    assert EVIL not in page and "window.__pwned" in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=&quot;x&quot; onerror=" in page
    assert page.count("<script") == 1 and 'getElementById("filter")' in page


def test_each_objective_page_lists_the_browser_rows_and_draws_its_charts(sample_run):
    reports = sample_run / "reports"
    for name, rows in EXPECTED_ROWS.items():
        page = (reports / f"{name}.html").read_text()
        assert len(re.findall(r"<tr data-kind=", page)) == rows, name
        for title in ("Reward distribution", "pass@k", "Mean reward by difficulty", "Output length"):
            assert title in page, (name, title)
    assert "SFT filter: kept and dropped" in (reports / "sft.html").read_text()
    dpo = (reports / "dpo.html").read_text()
    assert "DPO margin distribution" in dpo and "Prompts without a pair, by reason" in dpo


def test_the_summary_counts_what_the_page_shows(sample_run):
    run = sample_run
    summary = summarize_rollouts(
        "rl", run / "data/rollouts/rl.jsonl", 1.0, browser_config(browser_prompts=2), health_config()
    )
    assert (summary.prompts, summary.rollouts) == (6, 24)
    assert (summary.truncated, summary.extraction_failures) == (1, 1)
    assert dict(summary.not_scored) == {"failed: timeout": 1, "skipped: context_length": 1, "not scored: masked": 1}
    assert summary.scored_of == "24 of 27"
    assert summary.retries == {"http_503": 3}
    histogram = summary.correct_histogram()
    assert [row["correct"] for row in histogram] == [0, 1, 2, 3, 4] and sum(r["prompts"] for r in histogram) == 6
    hard = [
        r
        for g in (list(grp) for _, grp in iter_groups(run / "data/rollouts/rl.jsonl"))
        for r in g
        if r.record["difficulty"] == "hard"
    ]
    mean, count = summary.categorical_fields()["difficulty"]["hard"]
    assert count == len(hard) and mean == sum(r.reward for r in hard) / len(hard)
    assert len({row.prompt_id for row in summary.browser}) == 2


def test_the_filter_and_pair_stages_summaries_account_for_every_rollout_and_prompt(sample_run):
    sft = json.loads((sample_run / "metrics/sft_filter.json").read_text())
    assert sft["rollouts"] == 9 and sft["kept"] + sum(sft["dropped"].values()) == 9
    assert sft["kept"] == len((sample_run / "data/sft/train.jsonl").read_text().splitlines())
    dpo = json.loads((sample_run / "metrics/dpo_pairs.json").read_text())
    assert dpo["prompts"] == 8 and dpo["pairs"] + sum(dpo["skipped"].values()) == 8
    assert set(dpo["skipped"]) == {"single_rollout", "all_tied", "unhealthy_best", "below_min_margin"}


def test_the_browser_shows_the_first_best_the_last_worst_and_seeded_others(tmp_path):
    path = write_rollouts(
        tmp_path / "r.jsonl", group("p", 0, [(0.0, "a"), (1.0, "b"), (1.0, "c"), (0.0, "d"), (0.5, "e")])
    )
    rollouts = list(next(iter_groups(path))[1])
    rows = pick_rows(rollouts, browser_config(random_per_prompt=2, seed=3))
    assert [(row.kind, row.output) for row in rows[:2]] == [("best", "b"), ("worst", "d")]
    assert [row.kind for row in rows[2:]] == ["random", "random"]
    assert {row.output for row in rows[2:]} < {"a", "c", "e"}
    assert pick_rows(rollouts, browser_config(random_per_prompt=2, seed=3)) == rows
    assert [row.kind for row in pick_rows(rollouts[:1], browser_config())] == ["best"]


def test_the_rl_page_draws_pass_at_1_only_where_it_differs_from_the_mean_reward():
    def charts(rows: list[dict]) -> str:  # the page up to its table, which lists both columns anyway
        return rl_loop_page(rows, EVAL, navigation(["rl"])).split("<h2>Iterations</h2>")[0]

    same = charts(PROGRESS)
    assert "eval mean reward (= pass@1)" in same and "eval pass@1" not in same
    differs = charts([{**row, "eval_pass@1": row["eval_reward_mean"] - 0.1} for row in PROGRESS])
    assert "eval mean reward" in differs and "eval pass@1" in differs
    for title in (
        "Learning: eval at T = 1",
        "What the trainer saw: collection",
        "Exploration",
        "zero-variance fraction",
    ):
        assert title in same


def test_the_rl_page_without_iterations_says_how_to_run_some():
    page = rl_loop_page([], EVAL, navigation(["rl"]))
    assert "No RL iterations yet" in page and "<svg" not in page


def test_the_index_and_each_objective_page_say_how_many_rollouts_were_scored_of_how_many_were_asked_for(sample_run):
    reports = sample_run / "reports"
    assert "<td>24 of 27</td>" in (reports / "index.html").read_text()
    page = (reports / "rl.html").read_text()
    assert "24 of 27" in page and "not scored: masked" in page


def test_the_rl_page_table_shows_the_on_policy_error_each_iteration_s_trainer_reported():
    rows = [{**row, "token_mult_prob_error": 1.0312 if row["iteration"] == 1 else None} for row in PROGRESS]
    table = rl_loop_page(rows, EVAL, navigation(["rl"])).split("<h2>Iterations</h2>")[1]
    assert "on-policy error (token_mult_prob_error)" in table and "1.0312" in table


def test_the_rl_loop_page_alone_needs_only_the_progress_file_and_links_nowhere_else(tmp_path):
    # A loop run without the objectives' collections (make demo-rl-real) has metrics/rl_progress.csv and nothing more.
    (tmp_path / "sample").mkdir()
    sample = build_report(build_sample_run(tmp_path / "sample"))
    loop_only = tmp_path / "loop-only"
    (loop_only / "metrics").mkdir(parents=True)
    (loop_only / "metrics/rl_progress.csv").write_bytes((sample.parent / "metrics/rl_progress.csv").read_bytes())
    (loop_only / "params.yaml").write_bytes((sample.parent / "params.yaml").read_bytes())
    printed = run(loop_only, "report", "--rl-loop-only", "--out", "reports").stdout
    assert [p.name for p in (loop_only / "reports").iterdir()] == ["rl-loop.html"]
    assert "reports/rl-loop.html: rl-loop.html written" in printed
    page = (loop_only / "reports/rl-loop.html").read_text()
    assert re.findall(r'href="([^"#]+)"', page) == ["rl-loop.html"]
    # The same page as in the full report, but for the navigation bar.
    assert page.split("</nav>")[1] == (sample / "rl-loop.html").read_text().split("</nav>")[1]
