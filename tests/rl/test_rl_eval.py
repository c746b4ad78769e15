"""The fixed-temperature evaluation (rl_eval@NNN): the collector on held-out prompts with checkpoint NNN itself,
at rl.eval's temperature and seed; the same checkpoint and settings give the same bytes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from rollout_pipeline.reference.checkpoints import REFERENCE_PATH
from support import PY, SCRIPTS, agent, make_prompts, read_jsonl, write_params

ITERATIONS = {"001": {"prev": "000", "temperature": 0.4, "prompts": "train.jsonl", "seed": 11}}


def eval_setup(directory: Path, **evaluation) -> Path:
    make_prompts(directory / "heldout.jsonl", 25, seed=3)
    settings = {"prompts": "heldout.jsonl", "temperature": 1.0, "num_repeats": 3, "seed": 7, **evaluation}
    write_params(
        directory,
        {"math_agent": agent()},
        {},
        rl={"collect": {"agent_name": "math_agent"}, "eval": settings, "iterations": ITERATIONS},
    )
    return directory


def rl_eval(directory: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [PY, str(SCRIPTS / "rl_eval.py"), "--iteration", "1", "--no-progress"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def set_eval(directory: Path, **changes) -> None:
    params = yaml.safe_load((directory / "params.yaml").read_text())
    params["rl"]["eval"].update(changes)
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_the_eval_samples_the_checkpoint_itself_at_the_eval_temperature_and_writes_its_metrics(tmp_path):
    directory = eval_setup(tmp_path)
    result = rl_eval(directory, check=False)
    assert result.returncode != 0 and "data/rl/checkpoints/iter_001: checkpoint missing" in result.stderr
    assert "dvc repro rl_train@001" in result.stderr
    (directory / "data/rl/checkpoints").mkdir(parents=True)
    shutil.copy(REFERENCE_PATH, directory / "data/rl/checkpoints/iter_001")
    result = rl_eval(directory)
    records = read_jsonl(directory / "data/rl/eval/iter_001.jsonl")
    assert len(records) == 25 * 3
    assert {r["responses_create_params"]["temperature"] for r in records} == {1.0}, "rl.eval's, not the iteration's 0.4"
    assert {r["response"]["model"] for r in records} == {"iter_001"}
    metrics = json.loads((directory / "metrics/rl/eval_001.json").read_text())
    assert metrics["rollouts"] == 75 and metrics["reward_mean"] == round(sum(r["reward"] for r in records) / 75, 6)
    assert f"Iteration 001: eval_reward={metrics['reward_mean']}" in result.stdout


def test_the_same_checkpoint_and_seed_give_the_same_bytes_and_another_seed_other_draws(tmp_path):
    directory = eval_setup(tmp_path)
    (directory / "data/rl/checkpoints").mkdir(parents=True)
    shutil.copy(REFERENCE_PATH, directory / "data/rl/checkpoints/iter_001")
    outputs = directory / "data/rl/eval/iter_001.jsonl", directory / "metrics/rl/eval_001.json"
    rl_eval(directory)
    first = [path.read_bytes() for path in outputs]
    assert "already collected" not in rl_eval(directory).stdout, "the stage collects again (DVC decides when)"
    assert [path.read_bytes() for path in outputs] == first
    set_eval(directory, seed=8)
    rl_eval(directory)
    assert outputs[0].read_bytes() != first[0]
