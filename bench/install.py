#!/usr/bin/env python3
"""Benchmark 13 — set-up: installing the pinned packages into a fresh virtualenv, pip against uv.

`make setup` is most of a fresh clone's `make test` set-up. Each round creates two fresh virtualenvs and installs
requirements.lock's pins into each, the project editable with its test extra: one with pip alone (byte-compiling,
pip's default), one the way the Makefile does it, pip installing uv and uv installing the rest
(`--compile-bytecode`). The two run one after the other in every round, so the ratio holds on a shared machine; a
first round warms both caches and is not counted (a fresh clone on a used machine has warm caches; CI's first run
on a new machine downloads either way). Figures: wall time and CPU (the installer and its children, os.wait4),
medians over the rounds; the ratio is pip's over uv's. `--smoke` installs one small pinned package instead.

    python bench/install.py [--smoke] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from benchlib import ROOT, Figure, Measured, print_figures, run_measured, scratch, shell

NAME = "install"
LOCK = ROOT / "requirements.lock"


def _pip(python: str, *args: str) -> list[str]:
    return [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(LOCK), *args]


def _installs(work, packages: list[str]) -> dict[str, list[list[str]]]:
    """Each installer's commands, into a virtualenv of its own made fresh here."""
    venvs = {}
    for name in ("pip", "uv"):
        venv = work / f"venv-{name}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        venvs[name] = str(venv / "bin" / "python")
    uv = [str(work / "venv-uv" / "bin" / "uv"), "pip", "install", "-q", "--python", venvs["uv"], "-c", str(LOCK)]
    return {
        "pip": [_pip(venvs["pip"], *packages)],
        "uv": [_pip(venvs["uv"], "uv"), [*uv, "--compile-bytecode", *packages]],
    }


def _measure(commands: list[list[str]]) -> Measured:
    """The commands one after the other, their figures added up."""
    parts = [run_measured(command, ROOT).check() for command in commands]
    return Measured(
        sum(p.wall_s for p in parts), sum(p.cpu_s for p in parts), max(p.max_rss_mb for p in parts), 0, "", ""
    )


def run(smoke: bool = False, rounds: int = 2) -> list[Figure]:
    packages = ["orjson"] if smoke else ["-e", f"{ROOT}[test]"]
    samples: dict[str, list[Measured]] = {"pip": [], "uv": []}
    commands: dict[str, str] = {}
    for round_number in range(1 + (0 if smoke else rounds)):
        with scratch(NAME) as work:
            for name, steps in _installs(work, packages).items():
                measured = _measure(steps)
                commands[name] = " && ".join(shell(step) for step in steps)
                if round_number or smoke:  # round 0 warms the caches
                    samples[name].append(measured)
    case = "one pinned package (smoke)" if smoke else "requirements.lock, the project with its test extra"
    figures = []
    for name in ("pip", "uv"):
        for metric, attribute in (("wall", "wall_s"), ("CPU", "cpu_s")):
            value = statistics.median(getattr(m, attribute) for m in samples[name])
            figures.append(
                Figure(NAME, f"{case}: {name}", f"{metric} (median)", round(value, 1), "s", None, commands[name])
            )
    for metric, attribute in (("wall", "wall_s"), ("CPU", "cpu_s")):
        pip, uv = (statistics.median(getattr(m, attribute) for m in samples[name]) for name in ("pip", "uv"))
        figures.append(
            Figure(
                NAME,
                case,
                f"{metric}: pip / uv",
                round(pip / uv, 2),
                "x",
                None,
                "python bench/install.py",
                f"{len(samples['uv'])} round(s) after a warm-up",
            )
        )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one small package: seconds")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds after the warm-up (default 2)")
    options = parser.parse_args()
    print_figures(run(options.smoke, options.rounds))
