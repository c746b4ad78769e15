"""Fixtures of the reliability suite: prompts, a healthy upstream server, fault-free baselines per protocol."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reliability_support import count_lines, fast_agent, run_collect
from rollout_pipeline.reference.embedded import start_embedded_server
from support import PY, ROOT, make_prompts, start_in_own_group, stop_group

# The baseline shape every fault test compares against: 12 prompts x 2 repeats, seed 21.
BASE_RUN = {"num_repeats": 2, "seed": 21}


@pytest.fixture(scope="session")
def prompts(tmp_path_factory) -> Path:
    return make_prompts(tmp_path_factory.mktemp("rel-prompts") / "prompts.jsonl", 12, seed=17)


@pytest.fixture(scope="session")
def upstream():
    """A healthy embedded server: the upstream of the misbehaving proxy and the source of the baselines."""
    with start_embedded_server([]) as server:
        yield server


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """30 ms per request, logging every request (with its per-rollout seed) to a file; one per test module."""
    log = tmp_path_factory.mktemp("slow-log") / "requests.jsonl"
    with start_embedded_server(["--latency-ms", "30", "--request-log", str(log)]) as server:
        server.log = log
        yield server


@pytest.fixture(scope="session")
def baseline(tmp_path_factory, prompts, upstream):
    """baseline(protocol) -> the output file of a fault-free seeded run (computed once per protocol)."""
    cache: dict[str, Path] = {}

    def get(protocol: str = "chat") -> Path:
        if protocol not in cache:
            work = tmp_path_factory.mktemp(f"baseline-{protocol}")
            out = work / "baseline.jsonl"
            result = run_collect(work, prompts, out, fast_agent(upstream.url, protocol=protocol), **BASE_RUN)
            assert result.returncode == 0, result.stderr
            cache[protocol] = out
        return cache[protocol]

    return get


# -- a real DVC project: a copy of this repository in a temporary git repo --------------------------------
# Made at run time, so the value is in no source file (the project copy holds this file too).
DVC_SECRET = f"sk-rel-{secrets.token_hex(16)}"


@dataclass
class DvcProject:
    root: Path
    first: subprocess.CompletedProcess  # `dvc repro`, interrupted (SIGINT to its process group) during collect@rl
    second: subprocess.CompletedProcess  # the next `dvc repro`
    kept: int  # rollouts in rl's progress file after the interruption
    rl_total: int
    secret: str


def _copy_project(root: Path) -> None:
    """Every file git knows (tracked, and new files not ignored), as they are in the working tree now."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.split(b"\0")
    for name in filter(None, names):
        source = ROOT / name.decode()
        if source.is_file():
            target = root / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, timeout=30)


def _small_params(root: Path) -> int:
    """Small prompt counts, a slow-enough embedded server to interrupt, and an API key by env name."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for prompt_set in params["prompts"]["sets"].values():
        prompt_set["count"] = 16
    params["fetch"]["num_samples_in_parallel"] = 4
    for objective in params["objectives"].values():
        objective.update(limit=None)
        objective["num_repeats"] = min(objective["num_repeats"], 2)
    params["objectives"]["rl"].update(num_repeats=8)
    params["fetch"]["objectives"] = {"rl": {"num_samples_in_parallel": 2}}
    agent = params["agents"][params["objectives"]["rl"]["agent_name"]]
    agent.update(embedded_args=["--latency-ms", "25"], api_key_env="ROLLOUT_RELIABILITY_KEY")
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return 16 * 8


@pytest.fixture(scope="session")
def dvc_project(tmp_path_factory) -> DvcProject:
    root = tmp_path_factory.mktemp("dvc-project")
    _copy_project(root)
    rl_total = _small_params(root)
    env = {
        **os.environ,
        "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ROLLOUT_RELIABILITY_KEY": DVC_SECRET,
    }
    progress = root / "data" / "generations" / ".rl.jsonl.progress.jsonl"  # the collect stage generates
    # Interrupt like Ctrl-C in a terminal: SIGINT to the whole process group (dvc, its shell, the collector).
    process = start_in_own_group([str(Path(PY).parent / "dvc"), "repro"], root, env)
    deadline = time.monotonic() + 120
    while count_lines(progress) < 40 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    stdout, stderr = stop_group(process)
    first = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    kept = count_lines(progress) - 1
    second = subprocess.run(
        [str(Path(PY).parent / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    return DvcProject(root, first, second, kept, rl_total, DVC_SECRET)
