"""The RL seed document's loop script runs as written, with two substitutions a user makes too:
NUM_ITERATIONS is 3 (not 10) to keep the test short, and `train_rl.py` -- the user's own trainer in the
document -- is a shim onto this project's trainer. The agent keeps the model name the script gives it,
so the loop here shows the collection and bookkeeping work; `make rl-iter` is the loop that also swaps
checkpoints (tests/test_rl_loop.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from rollout_pipeline.reference.checkpoints import REFERENCE_PATH
from support import PY, ROOT, SCRIPTS, make_prompts, read_jsonl

DOC = (Path(__file__).resolve().parent / "seed_docs" / "002_e2d8e0e22c428514.txt").read_text()
LOOP = next(block for block in re.findall(r"```bash\n(.*?)```", DOC, flags=re.S) if block.startswith("#!/bin/bash"))

TRAIN_RL_SHIM = f"""import argparse, subprocess, sys
parser = argparse.ArgumentParser()
parser.add_argument("--input"); parser.add_argument("--checkpoint"); parser.add_argument("--steps", type=int)
args = parser.parse_args()
import os; os.makedirs(os.path.dirname(args.checkpoint) or ".", exist_ok=True)
sys.exit(subprocess.call([sys.executable, {str(SCRIPTS / "train.py")!r}, "--rollouts", args.input,
                          "--init", {str(REFERENCE_PATH)!r}, "--out", args.checkpoint, "--steps", "5"]))
"""


def test_the_rl_seed_loop_runs_as_written(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    make_prompts(tmp_path / "rl_tasks.jsonl", 40, seed=5)
    (tmp_path / "train_rl.py").write_text(TRAIN_RL_SHIM)
    script = LOOP.replace("NUM_ITERATIONS=10", "NUM_ITERATIONS=3")
    assert script != LOOP
    env = {**os.environ, "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]

    out = result.stdout
    assert out.count("Found 40 rows!") == 3 and "Querying with 15 concurrent requests" in out
    for iteration in ("001", "002", "003"):
        assert f"=== RL Iteration {iteration} ===" in out
        records = read_jsonl(tmp_path / "outputs" / f"rl_iter_{iteration}.jsonl")
        assert len(records) == 40 and {r["responses_create_params"]["temperature"] for r in records} == {0.5}
        mean = sum(r["reward"] for r in records) / 40
        printed = float(re.search(rf"Iteration {iteration}: avg_reward=([\d.]+)", out).group(1))
        assert abs(printed - mean) < 1e-9
        assert (tmp_path / "models" / f"rl_checkpoint_{iteration}.pt").exists()
    assert "Reward progression:" in out and out.count("rl_iter_") >= 3
