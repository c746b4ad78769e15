"""bench/gym_compare.py's smoke run: the side-by-side runs all three collectors against the instant agent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT


@pytest.mark.bench
def test_the_side_by_side_runs_ours_and_both_gym_collectors_and_prints_each_ratio(gym_python, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gym_compare.py"),
            "--sizes",
            "400",
            "--gym-venv",
            str(Path(gym_python).parents[1]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 400 |")]
    assert [row.split(" | ")[1] for row in rows] == ["ours", "ng_collect_rollouts", "gym eval run --no-serve"]
    assert "python bench/gym_compare.py --sizes 400 --parallel 256 --rounds 1" in done.stdout
    assert "targets (>= 4x wall, >= 6x memory): " in done.stdout
