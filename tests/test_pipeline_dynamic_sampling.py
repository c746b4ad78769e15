"""DAPO-style dynamic sampling for any objective, over real DVC: collect@<objective> with
`objectives.<objective>.dynamic_sampling` draws prompts in rounds until enough groups have reward variance, the
objective's rollout file keeps only those, no rollout is ever drawn twice (across rounds, or after an interruption),
the sampling metrics and the report say how many were drawn and kept, and an edit to the verifier, which chose the
groups, collects that objective again."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from dvc_testkit import ENV, VENV_BIN, copy_project, sh, stages_run
from rollout_pipeline.collect.fetcher import rollout_seed
from rollout_pipeline.reference.embedded import start_embedded_server
from support import count_lines, held_requests, paused, read_jsonl, start_in_own_group, stop_group, wait_for

PROMPTS = 60
REPEATS = 4
SEED = 103  # objectives.dpo.seed: every rollout's own sampling seed derives from it
GENERATIONS = Path("data/generations")
PROGRESS = GENERATIONS / ".dpo.jsonl.progress.jsonl"
ROUND_NOTE = GENERATIONS / ".dpo.jsonl.sampling-round.json"

pytestmark = pytest.mark.e2e


def set_sampling(project: Path, groups: int, max_prompts: int = PROMPTS) -> None:
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["objectives"]["dpo"]["dynamic_sampling"] = {"groups": groups, "max_prompts": max_prompts}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def requested_seeds(log: Path, start: int = 0) -> list[int]:
    """The per-rollout seeds of the generation requests the server logged, from line `start` on."""
    return [entry["seed"] for entry in read_jsonl(log)[start:]]


def seeds_of(prompts: int) -> set[int]:
    return {rollout_seed(SEED, task, rollout) for task in range(prompts) for rollout in range(REPEATS)}


def reward_sets(path: Path) -> dict[str, set[float]]:
    by_prompt: dict[str, set[float]] = {}
    for record in read_jsonl(path):
        by_prompt.setdefault(record["prompt_id"], set()).add(record["reward"])
    return by_prompt


@dataclass
class FirstRun:
    """What `dvc repro report` left, read at once (a later test changes the project)."""

    project: Path
    log: Path
    server_url: str
    sampling: dict
    other_sampling: dict
    kept: dict[str, set[float]]
    generations_kept: dict[str, set[float]]
    seeds: list[int]
    page: str
    hidden_files: list[str]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A copy of the project whose dpo objective keeps 12 informative groups of 4 (at most 60 prompts), served by a
    server of its own that logs every request, two at a time."""
    log = tmp_path_factory.mktemp("log") / "requests.jsonl"
    with start_embedded_server(["--request-log", str(log), "--latency-ms", "25"]) as server:
        project = copy_project(tmp_path_factory.mktemp("dynsamp"), prompt_count=PROMPTS)
        params_path = project / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        params["agents"]["dpo_agent"] = {**params["agents"]["math_agent"], "url": server.url}
        params["objectives"]["dpo"].update(agent_name="dpo_agent", num_repeats=REPEATS)
        params["fetch"]["objectives"] = {"dpo": {"num_samples_in_parallel": 2}}
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        set_sampling(project, groups=12)
        sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm dynsamp", project)
        sh("dvc repro report", project, timeout=900)
        yield FirstRun(
            project=project,
            log=log,
            server_url=server.url,
            sampling=json.loads((project / "metrics/sampling/dpo.json").read_text()),
            other_sampling=json.loads((project / "metrics/sampling/sft.json").read_text()),
            kept=reward_sets(project / "data/rollouts/dpo.jsonl"),
            generations_kept=reward_sets(project / GENERATIONS / "dpo.jsonl"),
            seeds=requested_seeds(log),
            page=(project / "reports/dpo.html").read_text(),
            hidden_files=sorted(p.name for p in (project / GENERATIONS).glob(".*")),
        )


def test_the_objectives_rollout_file_keeps_exactly_the_requested_groups_all_with_reward_variance(first_run):
    assert len(first_run.kept) == 12
    assert all(len(rewards) > 1 for rewards in first_run.kept.values())
    assert first_run.generations_kept == first_run.kept  # the score stage scored the kept groups to the same verdicts
    sampling = first_run.sampling
    assert sampling["dynamic_sampling"] is True and sampling["groups_kept"] == 12
    assert sampling["requested_groups"] == 12 and sampling["max_prompts"] == PROMPTS
    assert sampling["informative_groups"] >= 12 and 12 < sampling["prompts_drawn"] <= PROMPTS
    assert sampling["rounds"] >= 2, "some of the first 12 groups tie, so more prompts were drawn"


def test_no_rollout_is_drawn_twice_across_the_rounds(first_run):
    drawn = first_run.sampling["prompts_drawn"]
    assert len(first_run.seeds) == len(set(first_run.seeds)), "a rollout was requested again in a later round"
    assert set(first_run.seeds) == seeds_of(drawn)  # exactly the first `drawn` prompts' rollouts, each once


def test_the_rounds_leave_neither_progress_nor_round_note_behind(first_run):
    assert first_run.hidden_files == []


def test_an_objective_without_dynamic_sampling_keeps_every_prompt_it_drew(first_run):
    assert first_run.other_sampling == {
        "dynamic_sampling": False,
        "requested_groups": None,
        "max_prompts": None,
        "prompts_drawn": PROMPTS,
        "informative_groups": None,  # generate-only: the verdicts are the score stage's
        "groups_kept": PROMPTS,
        "rounds": 1,
    }


def test_the_report_says_how_many_prompts_were_drawn_and_how_many_groups_kept(first_run):
    drawn = first_run.sampling["prompts_drawn"]
    assert "<h2>Dynamic sampling</h2>" in first_run.page
    assert f"drawn {drawn}, kept 12" in first_run.page
    sft_page = (first_run.project / "reports/sft.html").read_text()
    assert "Dynamic sampling" not in sft_page


def test_a_repro_interrupted_in_a_later_round_resumes_that_round_and_draws_nothing_again(first_run):
    project, log = first_run.project, first_run.log
    set_sampling(project, groups=20)
    start = count_lines(log)
    round_one = 20 * REPEATS
    # Interrupt like Ctrl-C in a terminal (SIGINT to dvc's process group) while the server holds round 2's requests.
    process = start_in_own_group([str(VENV_BIN / "dvc"), "repro", "score@dpo"], project, ENV)
    wait_for(lambda: count_lines(log) - start > round_one or process.poll() is not None, timeout=300)
    with paused(first_run.server_url):
        assert process.poll() is None, "the collection ended before its second round"
        wait_for(lambda: held_requests(first_run.server_url) > 0, timeout=60)
        stdout, stderr = stop_group(process, timeout=120)
    assert process.returncode != 0, stdout + stderr
    assert "interrupted: " in stdout + stderr
    note = json.loads((project / ROUND_NOTE).read_text())
    assert note["rounds"] >= 1 and note["limit"] > 20
    finished = {
        rollout_seed(SEED, record["task_index"], record["rollout_index"])
        for record in read_jsonl(project / PROGRESS)[1:]
        if "reward" in record
    }
    assert len(finished) > round_one  # round 1's rollouts, taken over, and some of round 2's
    interrupted_at = count_lines(log)

    resumed = sh("dvc repro score@dpo", project, timeout=600)
    assert f"resuming: {len(finished)} of " in resumed.stdout
    again = set(requested_seeds(log, interrupted_at)) & finished
    assert not again, f"{len(again)} finished rollouts were requested again after the interruption"
    sampling = json.loads((project / "metrics/sampling/dpo.json").read_text())
    kept = reward_sets(project / "data/rollouts/dpo.jsonl")
    assert sampling["groups_kept"] == len(kept) == 20
    assert all(len(rewards) > 1 for rewards in kept.values())
    assert not (project / ROUND_NOTE).exists() and not (project / PROGRESS).exists()


def test_an_edit_to_the_verifier_collects_again_the_objective_whose_groups_it_chose_and_no_other(first_run):
    project = first_run.project
    verifier = project / "scripts/rollout_pipeline/verify/math_answer.py"
    verifier.write_text(verifier.read_text() + "\n# an edit to the math verifier\n")
    ran = stages_run(sh("dvc repro objective_settings", project).stdout)
    assert ran == {f"objective_settings@{objective}" for objective in ("rl", "sft", "dpo")}
    changed = set(json.loads(sh("dvc status --json", project).stdout))
    # dpo's rounds kept the groups the old verifier gave reward variance: choosing them again needs new draws; the
    # other objectives' generations stand, and are only scored again
    assert {stage for stage in changed if stage.startswith("collect@")} == {"collect@dpo"}
    assert {"score@sft", "score@rl"} <= changed
