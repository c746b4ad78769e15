"""The adaptive curriculum: each iteration's prompts chosen from a pool by the pass rates the previous iteration
measured; the choice on files, the params `make rl-iter` writes, and the loop over real DVC."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from dvc_testkit import copy_project, sh, stages_run
from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import write_json
from rollout_pipeline.rl.curriculum import select, selection_entry
from rollout_pipeline.rl.loop import extend_params
from rollout_pipeline.stages.prompt_sets import generate_rows
from stage_testkit import make_rollout, write_rollouts
from support import ROOT, read_jsonl

BAND = [0.1, 0.9]


def pool_file(tmp_path, count=12, name="pool.jsonl"):
    rows = generate_rows(count, "mixed", seed=5)
    write_rollouts(tmp_path / name, rows)
    return tmp_path / name, [row["task_id"] for row in rows]


def entry(tmp_path, pool, size, key="001", seed=1, band=BAND):
    previous = tmp_path / "rollouts.jsonl"
    adaptive = {"prompts_per_iteration": size, "band": band}
    made = selection_entry(int(key), adaptive, str(pool), seed, str(previous))
    if key != "001":
        made["state"] = str(tmp_path / "state.json")
    return made


def measured(tmp_path, passes: dict[str, int], n: int = 8):
    """A rollout file where prompt id `i` passed `passes[i]` of its `n` rollouts."""
    records = [
        make_rollout(identifier, task, index, 1.0 if index < passed else 0.0, "x")
        for task, (identifier, passed) in enumerate(passes.items())
        for index in range(n)
    ]
    return write_rollouts(tmp_path / "rollouts.jsonl", records)


def test_iteration_one_draws_the_size_from_the_pool_by_a_seeded_order_that_ignores_the_pools_order(tmp_path):
    pool, ids = pool_file(tmp_path)
    first = select(entry(tmp_path, pool, 5), "001", 1.0)
    assert len(first.chosen) == 5 and set(first.chosen) <= set(ids)
    assert first.chosen == [i for i in ids if i in set(first.chosen)], "written in the pool's order"
    assert select(entry(tmp_path, pool, 5), "001", 1.0).chosen == first.chosen, "deterministic given the seed"
    assert set(select(entry(tmp_path, pool, 5, seed=2), "001", 1.0).chosen) != set(first.chosen)
    reversed_pool = write_rollouts(tmp_path / "reversed.jsonl", reversed(read_jsonl(pool)))
    assert set(select(entry(tmp_path, reversed_pool, 5), "001", 1.0).chosen) == set(first.chosen)
    assert first.counts["refilled_unprofiled"] == 5 and first.counts["kept"] == 0


def test_iteration_one_with_a_profiling_run_of_checkpoint_000_keeps_its_in_band_prompts_first(tmp_path):
    pool, ids = pool_file(tmp_path)
    profile = measured(tmp_path, dict(zip(ids[:6], (0, 8, 4, 4, 2, 8))))  # ids[2:5] in the band
    adaptive = {"prompts_per_iteration": 5, "band": BAND, "initial_rollouts": str(profile)}
    first_entry = selection_entry(1, adaptive, str(pool), 1, "unused")
    assert first_entry["measured"] == str(profile) and first_entry["state"] == str(pool)
    first = select(first_entry, "001", 1.0)
    assert set(ids[2:5]) <= set(first.chosen) and not {ids[0], ids[1], ids[5]} & set(first.chosen)
    assert first.counts["kept"] == 3 and first.counts["refilled_unprofiled"] == 2
    assert first.counts["dropped_below_band"] == 1 and first.counts["dropped_above_band"] == 2


def test_the_next_iteration_keeps_the_in_band_prompts_drops_solved_and_unsolved_and_refills_unprofiled_first(tmp_path):
    pool, ids = pool_file(tmp_path)
    chosen = ids[:5]
    # 0/8 unsolved, 8/8 solved, 1/8 and 7/8 at the band's edges, 4/8 in the middle
    passes = dict(zip(chosen, (0, 8, 1, 7, 4)))
    measured(tmp_path, passes)
    write_json(tmp_path / "state.json", {"chosen": chosen, "pass_rates": {}})
    second = select(entry(tmp_path, pool, 5, key="002"), "002", 1.0)
    assert set(chosen[2:]) <= set(second.chosen) and not {chosen[0], chosen[1]} & set(second.chosen)
    refill = set(second.chosen) - set(chosen)
    assert len(refill) == 2 and not refill & set(passes), "refilled from prompts never profiled"
    assert second.counts == {
        "chosen": 5,
        "kept": 3,
        "dropped_below_band": 1,
        "dropped_above_band": 1,
        "refilled_unprofiled": 2,
        "refilled_profiled": 0,
        "profiled_in_pool": 5,
        "pool": 12,
    }
    assert second.pass_rates[chosen[2]] == 1 / 8


def test_when_the_pool_has_no_unprofiled_prompt_left_in_band_ones_come_back_first_then_the_nearest(tmp_path):
    pool, ids = pool_file(tmp_path, count=6)
    # measured earlier: ids[3] in band, ids[4] solved, ids[5] unsolved; this iteration ids[:3], all solved
    write_json(
        tmp_path / "state.json",
        {"chosen": ids[:3], "pass_rates": {ids[3]: 0.5, ids[4]: 1.0, ids[5]: 0.0}},
    )
    measured(tmp_path, dict.fromkeys(ids[:3], 8))
    third = select(entry(tmp_path, pool, 2, key="003"), "003", 1.0)
    assert third.counts["kept"] == 0 and third.counts["dropped_above_band"] == 3
    assert ids[3] in third.chosen and third.counts["refilled_profiled"] == 2


def test_a_pool_with_two_rows_of_one_id_and_a_missing_state_are_clear_errors(tmp_path):
    pool, ids = pool_file(tmp_path, count=3)
    rows = read_jsonl(pool)
    doubled = write_rollouts(tmp_path / "doubled.jsonl", [*rows, rows[0]])
    with pytest.raises(UserError, match=r"doubled.jsonl:4: prompt id .* appears twice"):
        select(entry(tmp_path, doubled, 2), "001", 1.0)
    measured(tmp_path, {ids[0]: 4})
    with pytest.raises(UserError, match=r"state.json: missing; the previous iteration's rl_select writes it"):
        select(entry(tmp_path, pool, 2, key="002"), "002", 1.0)


def test_extend_in_adaptive_mode_writes_a_selection_per_iteration_and_points_the_iteration_at_its_choice(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("curriculum_mode: fixed ", "curriculum_mode: adaptive "))
    assert extend_params(tmp_path / "params.yaml", 2) == ["001", "002"]
    written = (tmp_path / "params.yaml").read_text()
    assert '    "002": {prev: "001", temperature: 0.833, prompts: data/rl/curriculum/iter_002.jsonl, seed: 202}\n' in (
        written
    )
    assert (
        '    "002": {prev: "001", pool: data/prompts/math.jsonl, measured: data/rl/rl_iter_001.jsonl, '
        "state: data/rl/curriculum/iter_001.state.json, size: 300, band: [0.1, 0.9], seed: 202}\n"
    ) in written
    selections = yaml.safe_load(written)["rl"]["selections"]
    assert selections["001"]["measured"] == selections["001"]["state"] == "data/prompts/math.jsonl"


def test_extend_in_fixed_mode_writes_no_selection(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    extend_params(tmp_path / "params.yaml", 2)
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["rl"]["selections"] == {}


# ---- over real DVC ---------------------------------------------------------------------------------------------


def loop_to(project, n: int) -> str:
    sh(f"python scripts/rl.py extend --to {n}", project)
    targets = sh(f"python scripts/rl.py targets --to {n}", project).stdout.strip()
    return sh(f"dvc repro {targets}", project, timeout=600).stdout


@pytest.fixture(scope="module")
def adaptive_loop(tmp_path_factory):
    """A copy with 60 prompts per set, the adaptive curriculum choosing 20 prompts per iteration, run to 3."""
    project = copy_project(tmp_path_factory.mktemp("adaptive"), prompt_count=60)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["rl"]["schedule"]["curriculum_mode"] = "adaptive"
    params["rl"]["schedule"]["adaptive"]["prompts_per_iteration"] = 20
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm adaptive", project)
    output = loop_to(project, 3)
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm loop", project)
    return project, output


def ids_of(path) -> set[str]:
    return {record["prompt_id"] for record in read_jsonl(path)}


@pytest.mark.e2e
def test_each_iteration_collects_exactly_the_prompts_its_select_stage_chose(adaptive_loop):
    project, output = adaptive_loop
    assert {"rl_select@001", "rl_select@002", "rl_select@003"} <= stages_run(output)
    for key in ("001", "002", "003"):
        state = json.loads((project / f"data/rl/curriculum/iter_{key}.state.json").read_text())
        rows = read_jsonl(project / f"data/rl/curriculum/iter_{key}.jsonl")
        assert len(state["chosen"]) == len(rows) == 20
        assert (
            {row["task_id"] for row in rows} == set(state["chosen"]) == ids_of(project / f"data/rl/rl_iter_{key}.jsonl")
        )


@pytest.mark.e2e
def test_iteration_two_keeps_what_iteration_one_measured_in_band_and_refills_from_unprofiled_prompts(adaptive_loop):
    project, _ = adaptive_loop
    rollouts = read_jsonl(project / "data/rl/rl_iter_001.jsonl")
    rates = {}
    for record in rollouts:
        passed, n = rates.get(record["prompt_id"], (0, 0))
        rates[record["prompt_id"]] = (passed + (record["reward"] >= 1.0), n + 1)
    in_band = {i for i, (passed, n) in rates.items() if 0.1 <= passed / n <= 0.9}
    second = set(json.loads((project / "data/rl/curriculum/iter_002.state.json").read_text())["chosen"])
    assert in_band <= second and not (set(rates) - in_band) & second
    counts = json.loads((project / "metrics/rl/curriculum_002.json").read_text())
    assert counts["kept"] == len(in_band) and counts["refilled_unprofiled"] == 20 - len(in_band)
    assert counts["dropped_below_band"] + counts["dropped_above_band"] == 20 - len(in_band)
    progress = (project / "metrics/rl_progress.csv").read_text().splitlines()
    assert progress[0].split(",")[5] == "zero_variance_fraction" and len(progress) == 4


@pytest.mark.e2e
def test_the_choice_is_in_dvc_lock_and_a_band_change_reruns_that_iteration_and_later_only(adaptive_loop):
    project, _ = adaptive_loop
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    outs = {out["path"] for out in lock["rl_select@002"]["outs"]}
    assert {"data/rl/curriculum/iter_002.jsonl", "data/rl/curriculum/iter_002.state.json"} <= outs
    assert stages_run(loop_to(project, 3)) == set(), "a second run does nothing: the choice is deterministic"
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["rl"]["selections"]["002"]["band"] = [0.3, 0.7]
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert "rl.selections.002.band" in sh("dvc params diff", project).stdout
    ran = stages_run(sh("dvc repro rl_progress", project, timeout=600).stdout)
    assert {"rl_select@002", "rl_collect@002", "rl_select@003", "rl_collect@003"} <= ran
    assert not {stage for stage in ran if stage.endswith("@001")}
    sh("git checkout -q params.yaml dvc.lock", project)
