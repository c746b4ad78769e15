"""The gym tier's runs: rows in Gym's shape, and either collector run with NeMo Gym's own command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from gym_stack import GymStack

from support import agent, write_params

OUR_GYM = str(Path(sys.executable).parent / "gym")  # our `gym eval run` entry point, in the project's venv


def write_rows(path: Path, sums: list[tuple[int, int]], wrong: set[int] = frozenset()) -> Path:
    """Arithmetic rows in Gym's math_with_judge shape (question, expected_answer); the rows numbered in `wrong`
    carry a wrong expected answer, so a right reply scores 0 (and, with a judge on, goes to the judge)."""
    with open(path, "wb") as handle:
        for i, (a, b) in enumerate(sums):
            question = f"What is {a} + {b}?"
            expected = a + b + (1000 if i in wrong else 0)
            row = {
                "responses_create_params": {"input": [{"role": "user", "content": question}]},
                "question": question,
                "expected_answer": str(expected),
            }
            handle.write(orjson.dumps(row) + b"\n")
    return path


def our_params(directory: Path, stack: GymStack, **fetch) -> Path:
    """params.yaml naming each of the stack's agents as Gym names it, reached through its environment server."""
    settings = {"protocol": "agent", "model": "reference", "timeout_s": 120, "max_retries": 2, "retry_backoff_s": 0.05}
    agents = {name: agent(url, **{**settings, **fetch}) for name, url in stack.urls.items()}
    return write_params(directory, agents)


def run_ours(directory: Path, params: Path, agent_name: str, rows: Path, out: Path, *flags: str):
    """Our collector through its `gym eval run` entry point: the same flags a NeMo Gym user types."""
    command = [OUR_GYM, "eval", "run", "-a", agent_name, "-i", str(rows), "-o", str(out)]
    command += [*flags, "--params", str(params), "--no-progress"]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=600)


def run_gyms(stack: GymStack, directory: Path, agent_name: str, rows: Path, out: Path, *flags: str):
    """NeMo Gym 0.7.0's own collector against the running stack (`gym eval run --no-serve`)."""
    command = [stack.gym, "eval", "run", "--no-serve", "--config", str(stack.config), "-a", agent_name]
    command += ["-i", str(rows), "-o", str(out), "--no-health-check", *flags]
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
