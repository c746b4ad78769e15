"""The DVC pipeline, for real: `dvc repro` in temporary git repositories copied from this project."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from dvc_testkit import OUTPUTS, VENV_BIN, copy_project, sh, stages_run


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_project(tmp_path_factory) -> Path:
    """A copy with 40 prompts, reproduced once and committed (the baseline the tests below change). Its embedded
    server logs every request it serves to requests.log (beside the project): what the model was asked."""
    project = copy_project(tmp_path_factory.mktemp("small"), prompt_count=40)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["agents"]["math_agent"]["embedded_args"] = ["--request-log", str(project.parent / "requests.log")]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc repro", project)
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm repro", project)
    return project


@pytest.mark.e2e
def test_changing_one_objective_reruns_only_its_own_stages(small_project):
    params_path = small_project / "params.yaml"
    original = params_path.read_text()
    try:
        params = yaml.safe_load(original)
        params["objectives"]["dpo"]["responses_create_params"]["temperature"] = 0.75
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))

        diff = sh("dvc params diff --md", small_project).stdout
        changed = [line for line in diff.splitlines() if line.startswith("| params.yaml")]
        assert len(changed) == 1 and "objectives.dpo.responses_create_params.temperature" in changed[0]

        assert stages_run(sh("dvc repro", small_project).stdout) == {
            "objective_settings@dpo",
            "collect@dpo",
            "score@dpo",
            "pair",
            "metrics@dpo",
            "profile@dpo",
            "report",
        }
    finally:
        params_path.write_text(original)
        sh("dvc repro", small_project)


@pytest.mark.e2e
def test_the_pair_stage_takes_its_objective_from_params_and_dvc_sees_the_change(small_project):
    """pair.objective names the rollouts the DPO pairs come from (dvc.yaml interpolates it): switching it to rl is
    one param in `dvc params diff`, and re-runs the pair stage and the report, which shows the pairs on its page."""
    params_path = small_project / "params.yaml"
    original = params_path.read_text()
    try:
        params = yaml.safe_load(original)
        params["pair"]["objective"] = "rl"
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))

        diff = sh("dvc params diff --md", small_project).stdout
        changed = [line for line in diff.splitlines() if line.startswith("| params.yaml")]
        assert len(changed) == 1 and "pair.objective" in changed[0] and "dpo" in changed[0], diff

        assert stages_run(sh("dvc repro", small_project).stdout) == {"pair", "report"}
        rl_rollouts = sum(1 for _ in (small_project / "data/rollouts/rl.jsonl").open())
        summary = json.loads((small_project / "metrics/dpo_pairs.json").read_text())
        assert summary["rollouts"] == rl_rollouts and summary["pairs"] > 0  # rl: 8 repeats a prompt, dpo 4
        assert "DPO pairs" in (small_project / "reports/rl.html").read_text()
    finally:
        params_path.write_text(original)
        sh("dvc repro", small_project)


# A new value for each key of params.yaml's fetch block: how rollouts are fetched, not what they are.
FETCH_CHANGES = {
    "num_samples_in_parallel": 7,
    "max_failure_rate": 0.5,
    "timeout_s": 33,
    "connect_timeout_s": 3,
    "max_retries": 2,
    "give_up_after_s": 99,
    "retry_backoff_s": 0.1,
    "verify_timeout_s": 2,
    "max_reply_bytes": 2048,
}


@pytest.mark.e2e
def test_changing_how_rollouts_are_fetched_reruns_nothing_while_changing_what_they_are_does(small_project):
    params_path = small_project / "params.yaml"
    original = params_path.read_text()
    try:
        for key, value in FETCH_CHANGES.items():
            params = yaml.safe_load(original)
            params["fetch"][key] = value
            params["fetch"]["objectives"] = {"rl": {key: value}}
            params_path.write_text(yaml.safe_dump(params, sort_keys=False))
            status = sh("dvc status", small_project).stdout
            assert "Data and pipelines are up to date." in status, f"fetch.{key} re-runs stages:\n{status}"
        params = yaml.safe_load(original)
        params["objectives"]["rl"]["num_repeats"] += 1
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        assert "collect@rl" in sh("dvc status", small_project).stdout
    finally:
        params_path.write_text(original)


SCORED_AND_AFTER = {
    "score@rl",
    "score@sft",
    "score@dpo",
    "filter",
    "pair",
    "metrics@rl",
    "metrics@sft",
    "metrics@dpo",
    "profile@rl",
    "profile@sft",
    "profile@dpo",
    "report",
}
GENERATIONS = [f"data/generations/{objective}.jsonl" for objective in ("rl", "sft", "dpo")]
# What chooses each objective's rollouts beyond its generation settings: the verifier's fingerprint, for an objective
# with dynamic_sampling (none in this project: the files stay null, and no collect stage follows).
OBJECTIVE_SETTINGS = {"objective_settings@rl", "objective_settings@sft", "objective_settings@dpo"}


def _requests_served(project: Path) -> int:
    log = project.parent / "requests.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.e2e
def test_changing_an_agents_verifier_rescores_the_generations_with_no_request_to_the_model(small_project):
    params_path = small_project / "params.yaml"
    original = params_path.read_text()
    served, generations = _requests_served(small_project), {name: digest(small_project / name) for name in GENERATIONS}
    assert served > 0  # the baseline's collect stages did ask it
    try:
        params = yaml.safe_load(original)
        params["agents"]["math_agent"]["verifier"] = "exact"
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        # objective_settings@* run too: their files change only for objectives with dynamic_sampling (none here)
        assert stages_run(sh("dvc repro", small_project).stdout) == {
            "agent_settings",
            *OBJECTIVE_SETTINGS,
            *SCORED_AND_AFTER,
        }
        assert _requests_served(small_project) == served
        assert {name: digest(small_project / name) for name in GENERATIONS} == generations
        rollouts = (small_project / "data/rollouts/rl.jsonl").read_text()
        assert '"scored_by":{"verifier":"exact"' in rollouts and '"verifier":"math"' not in rollouts
    finally:
        params_path.write_text(original)
        sh("dvc repro", small_project)
    assert _requests_served(small_project) == served


@pytest.mark.e2e
def test_editing_the_verifiers_code_rescores_and_never_regenerates(small_project):
    source = small_project / "scripts/rollout_pipeline/verify/math_answer.py"
    original = source.read_text()
    served = _requests_served(small_project)
    try:
        source.write_text(original + "\n# an edit to the math verifier\n")
        assert stages_run(sh("dvc repro", small_project).stdout) == OBJECTIVE_SETTINGS | SCORED_AND_AFTER
        assert _requests_served(small_project) == served
    finally:
        source.write_text(original)
        sh("dvc repro", small_project)


def stages_changed_by_editing(project: Path, source: str) -> set[str]:
    """The stages `dvc status` finds changed after an edit to `source` (a comment appended), the edit undone after."""
    path = project / source
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        return set(json.loads(sh("dvc status --json", project).stdout))
    finally:
        path.write_text(original)


COLLECT = {"collect@rl", "collect@sft", "collect@dpo"}
SCORE = {"score@rl", "score@sft", "score@dpo"}


# An edit re-runs only the stages that run the edited code (then what follows them, if their outputs change).
# The embedded server's code is a dep of every collect stage, whatever its agent's url: a stage's deps are fixed
# per stage in dvc.yaml, and the url is a param.
@pytest.mark.parametrize(
    ("source", "stages"),
    [
        ("scripts/rollout_pipeline/stages/report_html.py", {"report"}),
        ("scripts/rollout_pipeline/stages/dpo_pairs.py", {"pair"}),
        ("scripts/rollout_pipeline/stages/sft_filter.py", {"filter", "report"}),
        ("scripts/rollout_pipeline/collect/transport.py", COLLECT | SCORE),  # scoring posts to /verify URLs with it
        ("scripts/rollout_pipeline/collect/fetcher.py", COLLECT),
        ("scripts/rollout_pipeline/collect/score_run.py", SCORE),
        # objective_settings fingerprints the verifier, for the objectives whose groups it chooses
        ("scripts/rollout_pipeline/verify/math_answer.py", SCORE | OBJECTIVE_SETTINGS),
        ("scripts/rollout_pipeline/reference/server.py", COLLECT),
        ("scripts/rollout_pipeline/rl/trainer.py", set()),  # the RL loop's (tests/rl: rl_train@* only)
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
@pytest.mark.e2e
def test_an_edit_to_code_reruns_only_the_stages_that_run_it(small_project, source, stages):
    assert stages_changed_by_editing(small_project, source) == stages


@pytest.mark.e2e
def test_metrics_show_and_plots_render(small_project):
    shown = sh("dvc metrics show", small_project).stdout
    for objective in ("rl", "sft", "dpo"):
        assert f"metrics/{objective}.json" in shown
    assert "pass@1" in shown and "reward_mean" in shown

    result = sh(f"make plots VENV={VENV_BIN.parent} -o {VENV_BIN.parent}/.installed", small_project)
    html = small_project / "dvc_plots" / "index.html"
    text = html.read_text()
    assert "pass_at_k" in text and "dvc_plots/index.html" in result.stdout
    # Offline: Vega comes inside the page, not from a CDN; one chart per question, each axis named.
    assert "<script src=" not in text and "cdn.jsdelivr" not in text and "vegaEmbed" in text
    charts = re.findall(r"vegaEmbed\('#([^']+)'", text)
    assert charts == [
        "pass_k_by_objective",
        "RL_learning__eval_at_the_fixed_rl_eval_temperature_",
        "RL_collection_reward__what_the_trainer_saw_",
        "RL_temperature__annealing_schedule_",
        "RL_zero-variance_fraction__prompts_with_no_GRPO_signal_",
    ]
    # The RL charts are empty until `make rl-iter` runs; pass@k is drawn, with both axes named.
    assert '"title": "k (samples per prompt)"' in text and '"title": "pass@k"' in text


@pytest.mark.e2e
def test_push_and_pull_restore_every_output_byte_for_byte(small_project, tmp_path):
    before = {name: digest(small_project / name) for name in OUTPUTS if name.startswith("data/")}
    sh(f"dvc remote add -f -d storage {tmp_path / 'remote'} && dvc push -q", small_project)
    try:
        shutil.rmtree(small_project / "data")
        shutil.rmtree(small_project / ".dvc" / "cache")
        sh("dvc pull -q", small_project)
        assert {name: digest(small_project / name) for name in before} == before
    finally:
        sh("dvc remote remove storage", small_project)
        sh("git checkout -q .dvc/config", small_project, check=False)


@pytest.mark.e2e
def test_a_malformed_params_value_stops_the_stage_with_one_clear_line(small_project):
    params_path = small_project / "params.yaml"
    original = params_path.read_text()
    try:
        params_path.write_text(original.replace("num_repeats: 4", "num_repeats: four"))
        result = sh("dvc repro collect@dpo", small_project, check=False)
        assert result.returncode != 0
        combined = result.stdout + result.stderr
        assert "objectives.dpo.num_repeats: expected an integer, got 'four'" in combined
        assert "Traceback" not in combined
    finally:
        params_path.write_text(original)


@pytest.mark.e2e
def test_a_failed_collect_keeps_the_previous_rollouts(small_project):
    """A typo used to cost the data: DVC removed the stage's outputs before running it. They persist now."""
    params_path = small_project / "params.yaml"
    original = params_path.read_text()
    rollouts = small_project / "data/generations/sft.jsonl"
    before = digest(rollouts)
    try:
        params = yaml.safe_load(original)
        params["objectives"]["sft"]["num_repeats"] = 0
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        result = sh("dvc repro collect@sft", small_project, check=False)
        assert result.returncode != 0 and "objectives.sft.num_repeats" in result.stdout + result.stderr
        assert digest(rollouts) == before
    finally:
        params_path.write_text(original)
