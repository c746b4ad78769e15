"""The gym benchmarks' smoke runs: bench/gym_compare.py against the instant agent, bench/gym_vllm.py against vLLM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rollout_pipeline.tooling.vllm_server import default_model_dir
from support import ROOT


def _run_bench(script: str, gym_python: str, directory: Path, *args: str, timeout: float, env: dict | None = None):
    """Run bench/<script> with the gym tier's virtualenv; it must succeed."""
    command = [sys.executable, str(ROOT / "bench" / script), *args, "--gym-venv", str(Path(gym_python).parents[1])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=directory, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.bench
def test_the_side_by_side_runs_ours_and_both_gym_collectors_and_prints_each_ratio(gym_python, tmp_path):
    done = _run_bench("gym_compare.py", gym_python, tmp_path, "--sizes", "400", timeout=300)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 400 |")]
    assert [row.split(" | ")[1] for row in rows] == ["ours", "ng_collect_rollouts", "gym eval run --no-serve"]
    assert "python bench/gym_compare.py --sizes 400 --parallel 256 --rounds 1" in done.stdout
    assert "targets (>= 4x wall, >= 6x memory): " in done.stdout


@pytest.mark.bench
def test_against_one_genuine_vllm_every_collector_scores_every_rollout_and_gyms_agent_scores_equal_texts_alike(
    gym_python, tmp_path
):
    # bench/gym_vllm.py's smoke run: vLLM, Gym's real stack in front of it, and the three collectors. The bench fails
    # when a collector writes fewer rollouts than asked. Its comparisons mean something only if the seed reaches vLLM
    # on every route, so that texts meet, and if a text scored by Gym's agent gets one verdict whoever collects it.
    vllm_python = os.environ.get("VLLM_SERVER_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not (default_model_dir(vllm_python) / "config.json").is_file():
        pytest.skip("the vLLM tier is not installed (make setup-vllm)")
    environment = {**os.environ, "VLLM_SERVER_PYTHON": vllm_python}
    done = _run_bench("gym_vllm.py", gym_python, tmp_path, "--smoke", timeout=900, env=environment)
    wall = [line for line in done.stdout.splitlines() if re.search(r"\): wall|agent: wall", line)]
    assert len(wall) == 3, done.stdout
    texts = re.findall(r"same text: (.*?) +(\d+) of (\d+)", done.stdout)
    assert len(texts) == 3 and all(int(same) >= 1 for _, same, _ in texts), done.stdout  # every pair of collectors
    alike = re.search(
        r"same reward where the text is the same: ours -> Gym's agent / ng_collect.* (\d+) of (\d+)", done.stdout
    )
    assert alike and int(alike[2]) >= 1 and alike[1] == alike[2], done.stdout
