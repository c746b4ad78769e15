"""Real DVC in temporary git repositories: a copy of this project, and shell commands run in it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from support import PY, ROOT

VENV_BIN = Path(PY).parent
# What `make run` writes (a sample: every stage's kind of output).
OUTPUTS = [
    "data/prompts/math.jsonl",
    "data/rollouts/rl.jsonl",
    "data/rollouts/sft.jsonl",
    "data/rollouts/dpo.jsonl",
    "data/sft/train.jsonl",
    "data/dpo/pairs.jsonl",
    "metrics/rl.json",
    "metrics/sft.json",
    "metrics/dpo.json",
    "reports/index.html",
    "reports/rl.html",
    "reports/rl-loop.html",
]
ENV = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` ran, from its output."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def sh(command: str, cwd: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, shell=True, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"`{command}` failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def copy_project(destination: Path, prompt_count: int | None = None) -> Path:
    """The project's tracked files in a new git repository (generated data and dvc.lock left behind)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if name == "dvc.lock" or name.startswith("metrics/"):
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    if prompt_count is not None:
        params_path = destination / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        for prompt_set in params["prompts"]["sets"].values():
            prompt_set["count"] = prompt_count
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", destination)
    return destination
