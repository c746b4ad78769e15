"""Peak RSS and wall time of the filter, pair and metrics stages at 2,000 vs 200,000 rollouts.

    .venv/bin/python bench/stages_memory.py [--sizes 2000 200000] [--repeats 4] [--keep DIR]

Each stage runs as its own process (the real `python scripts/<stage>.py`) under a tiny parent that
reports the child's peak RSS from getrusage(RUSAGE_CHILDREN): the stages stream, so peak RSS should
stay roughly flat while the input grows 100x. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the realistic record factory the stage tests use

from stage_testkit import random_rollouts, stage_params, write_rollouts  # noqa: E402

# Runs argv as a child and prints "<peak RSS KiB> <seconds> <exit code>" (ru_maxrss is KiB on Linux).
MEASURE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, code)"
)


def measure(argv: list[str]) -> tuple[float, float]:
    """(peak RSS MiB, wall seconds) of one stage process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], cwd=ROOT, capture_output=True, text=True, check=True)
    rss_kib, seconds, code = out.stdout.split()
    if code != "0":
        raise SystemExit(f"stage failed: {' '.join(argv)}")
    return int(rss_kib) / 1024, float(seconds)


def stage_commands(source: Path, work: Path, params: Path) -> dict[str, list[str]]:
    script = lambda name: [sys.executable, str(ROOT / "scripts" / f"{name}.py")]  # noqa: E731
    return {
        "filter": [*script("filter"), "--in", str(source), "--out", str(work / "sft.jsonl"), "--params", str(params)],
        "pair": [*script("pair"), "--in", str(source), "--out", str(work / "pairs.jsonl"), "--params", str(params)],
        "metrics": [
            *script("metrics"),
            "--objective",
            "rl",
            "--in",
            str(source),
            "--out",
            str(work / "rl.json"),
            "--curve",
            str(work / "curve.json"),
            "--params",
            str(params),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 200_000], help="rollouts per file")
    parser.add_argument("--repeats", type=int, default=4, help="rollouts per prompt (more prompts = more ids held)")
    parser.add_argument("--keep", type=Path, help="write the files here instead of a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        params = stage_params(work)
        rows = []
        for size in args.sizes:
            source = write_rollouts(
                work / f"rollouts_{size}.jsonl", random_rollouts(size // args.repeats, args.repeats, seed=1)
            )
            megabytes = source.stat().st_size / 2**20
            for stage, argv in stage_commands(source, work, params).items():
                rss, seconds = measure(argv)
                rows.append(
                    f"| {stage} | {size:,} | {megabytes:.1f} | {seconds:.2f} | {size / seconds:,.0f} | {rss:.1f} |"
                )
        print("| stage | rollouts | input MiB | wall s | rollouts/s | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|---:|")
        print("\n".join(sorted(rows, key=lambda row: row.split("|")[1])))


if __name__ == "__main__":
    main()
