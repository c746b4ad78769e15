#!/usr/bin/env python3
"""Benchmark 6 — pipeline overhead: `make run` at default sizes, a no-op `dvc repro`, and the filter, pair and
metrics stages on 1,000,000 rollouts.

`make run` and `dvc repro` run in a scratch copy of the working tree (tracked and untracked-but-not-ignored
files, no data, a fresh `git init`), with this checkout's virtualenv, so the figures are those of a fresh
clone and the checkout's own data/ is never touched. The stages run as their real scripts on files of
realistic records (tests/stage_testkit.py, via bench/stages_memory.py) at 10,000 and 1,000,000 rollouts;
their peak RSS must not grow with the input (they stream). Targets: no-op `dvc repro` under 1.5 s; the stages'
peak RSS at 1,000,000 rollouts within 10 MB of the peak at 10,000.

    python bench/pipeline.py [--smoke]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchlib import ROOT, Figure, print_figures, run_measured, scratch, shell

sys.path.insert(0, str(ROOT / "tests"))  # the realistic record factory the stage tests use
from stage_testkit import random_rollouts, stage_params, write_rollouts  # noqa: E402
from stages_memory import stage_commands  # noqa: E402

NAME = "pipeline"
VENV = Path(sys.executable).parent.parent
STAGE_SIZES = (10_000, 1_000_000)
REPEATS = 4
NOOP_RUNS = 3
NOOP_TARGET_S = 1.5
FLAT_MB = 10.0


def copy_worktree(destination: Path) -> Path:
    """The working tree as a fresh clone would have it, plus uncommitted edits; no data, no virtualenv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source = ROOT / name
        if not source.is_file() or name.startswith(("bench/RESULTS", "data/")) and not name.endswith(".gitignore"):
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q"], cwd=destination, check=True)
    return destination


def pipeline_figures(work: Path, smoke: bool) -> list[Figure]:
    tree = copy_worktree(work / "tree")
    env = {"PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}"}
    figures = []
    if smoke:
        # No full run: just the DVC command surface on the copy (status walks every stage definition).
        status = run_measured([str(VENV / "bin" / "dvc"), "status"], tree, env).check()
        return [Figure(NAME, "dvc status (smoke)", "wall time", round(status.wall_s, 2), "s", command="dvc status")]
    # -o: the shared virtualenv is already set up; re-running its install from the copy would re-point it there.
    make_args = ["make", "run", f"VENV={VENV}", "-o", f"{VENV}/.installed"]
    plan = subprocess.run([*make_args, "-n"], cwd=tree, capture_output=True, text=True, env={**os.environ, **env})
    if plan.returncode != 0 or "pip install" in plan.stdout:  # never let the copy reinstall the shared venv
        raise RuntimeError(
            f"make run in the copy would not run as planned:\n{plan.stdout[-2000:]}{plan.stderr[-2000:]}"
        )
    make = run_measured(make_args, tree, env).check()
    figures.append(
        Figure(
            NAME,
            "make run, default sizes",
            "wall time",
            round(make.wall_s, 1),
            "s",
            command="make run  (in a fresh copy of the tree)",
            note="params.yaml defaults, embedded server; CPU/RSS cover make and its children",
        )
    )
    noops = [run_measured([str(VENV / "bin" / "dvc"), "repro"], tree, env).check() for _ in range(NOOP_RUNS)]
    if not all("up to date" in run.stdout + run.stderr for run in noops):
        raise RuntimeError(f"dvc repro after make run was not a no-op:\n{noops[-1].stdout[-2000:]}")
    wall = statistics.median(run.wall_s for run in noops)
    figures.append(
        Figure(
            NAME,
            "dvc repro, nothing changed",
            "wall time (median)",
            round(wall, 2),
            "s",
            target=("<", NOOP_TARGET_S),
            command="dvc repro",
            note=f"{NOOP_RUNS} runs after make run",
        )
    )
    return figures


def stage_figures(work: Path, smoke: bool) -> list[Figure]:
    sizes = (200, 2_000) if smoke else STAGE_SIZES
    params = stage_params(work)
    peaks: dict[str, dict[int, float]] = {}
    figures = []
    for size in sizes:
        source = write_rollouts(work / f"rollouts_{size}.jsonl", random_rollouts(size // REPEATS, REPEATS, seed=1))
        megabytes = source.stat().st_size / 2**20
        for stage, argv in stage_commands(source, work, params).items():
            run = run_measured(argv, ROOT).check()
            peaks.setdefault(stage, {})[size] = run.max_rss_mb
            case = f"{stage}, {size:,} rollouts"
            figures += [
                Figure(
                    NAME,
                    case,
                    "wall time",
                    round(run.wall_s, 2),
                    "s",
                    command=shell(argv),
                    note=f"input {megabytes:,.0f} MiB, {size / run.wall_s:,.0f} rollouts/s",
                ),
                Figure(NAME, case, "peak RSS", round(run.max_rss_mb, 1), "MB", command=shell(argv)),
            ]
        source.unlink()
    small, big = sizes
    for stage, by_size in peaks.items():
        growth = by_size[big] - by_size[small]
        figures.append(
            Figure(
                NAME,
                f"{stage}, {small:,} -> {big:,} rollouts",
                "peak RSS growth",
                round(growth, 1),
                "MB",
                target=("<=", FLAT_MB),
                command="python bench/pipeline.py",
            )
        )
    return figures


def run(smoke: bool = False) -> list[Figure]:
    with scratch(NAME) as work:
        return pipeline_figures(work, smoke) + stage_figures(work, smoke)


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
