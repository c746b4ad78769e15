"""Every bash command in the sampling seed document runs as written, from the project's virtualenv,
against the embedded default server (the project's params.yaml, unchanged)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import PY, ROOT, make_prompts, read_jsonl

DOC = Path(__file__).resolve().parent / "seed_docs" / "000_46c80efc949f60b0.txt"
BLOCKS = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)


def _output_path(command: str) -> str:
    return re.search(r"\+output_jsonl_fpath=(\S+)", command).group(1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("seed")
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    prompts = make_prompts(work / "prompts.jsonl", 60, seed=21)
    shutil.copy(prompts, work / "math_prompts.jsonl")
    return work


def test_the_document_has_the_four_collection_commands():
    assert len(BLOCKS) == 4 and all(block.startswith("ng_collect_rollouts") for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=["basic", "rl", "sft", "dpo"])
def test_each_command_runs_as_written(workdir, block):
    env = {**os.environ, "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-e", "-c", block], cwd=workdir, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    repeats = int(re.search(r"\+num_repeats=(\d+)", block).group(1))
    records = read_jsonl(workdir / _output_path(block))
    assert len(records) == 60 * repeats
    temperature = float(re.search(r"temperature=([\d.]+)", block).group(1))
    assert {r["responses_create_params"]["temperature"] for r in records} == {temperature}
    assert "Found 60 rows!" in result.stdout and '"reward":' in result.stdout


def test_help_names_the_command_as_it_was_called():
    result = subprocess.run(
        [str(Path(PY).parent / "ng_collect_rollouts"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: ng_collect_rollouts")


def test_a_python_without_the_projects_packages_says_which_and_what_to_do(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
    bare = tmp_path / "bare" / "bin" / "python"
    result = subprocess.run(
        [str(bare), str(ROOT / "scripts" / "filter.py"), "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {bare} lacks the project's packages (aiohttp, orjson, yaml, jq)")
    assert "source .venv/bin/activate" in line
