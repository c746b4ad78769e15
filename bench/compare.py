#!/usr/bin/env python3
"""Two or more versions of the collector side by side, against one instant server, runs interleaved.

How the optimisations in RESULTS.md were judged: on a shared machine only an interleaved comparison in one run
means anything. Each VERSION is `.` (the working tree), a git revision (its scripts/ is exported to a temporary
directory), or a directory holding collect.py and rollout_pipeline/. Every round runs the bare aiohttp loop
(default GC and the collector's GC) and then each version once; the table gives every run's rollouts/s and CPU
ms per rollout, and per version the median rollouts/s and the lowest CPU per rollout (the least disturbed run).

    python bench/compare.py HEAD . [--parallel 256] [--rollouts 30000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import orjson

from benchlib import (
    ROOT,
    collect_command,
    instant_server,
    run_bare_client,
    run_measured,
    scratch,
    write_params,
    write_prompts,
)
from rollout_pipeline.collect.run_loop import GC_YOUNG_THRESHOLD


def resolve(version: str, into: Path) -> Path:
    """The scripts directory of a version."""
    if version == ".":
        return ROOT / "scripts"
    path = Path(version)
    if (path / "collect.py").is_file():
        return path
    archive = subprocess.run(["git", "archive", version, "scripts"], cwd=ROOT, capture_output=True, check=True).stdout
    target = Path(tempfile.mkdtemp(prefix="version-", dir=into))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "scripts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", help=". | a git revision | a directory with collect.py")
    parser.add_argument("--parallel", type=int, default=256)
    parser.add_argument("--rollouts", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {}
    with instant_server() as server, scratch("compare") as work:
        trees = {version: resolve(version, work) for version in args.versions}
        params = write_params(work, server.url)
        prompts = write_prompts(work / "prompts.jsonl", args.rollouts // 4)
        for _ in range(args.rounds):
            for label, gc_threshold in (
                ("bare loop, default GC", None),
                ("bare loop, collector's GC", GC_YOUNG_THRESHOLD),
            ):
                measured, loop = run_bare_client(server.url, args.rollouts, args.parallel, gc_threshold)
                results.setdefault(label, []).append((loop["requests_per_s"], 1000 * measured.cpu_s / args.rollouts))
            for version, tree in trees.items():
                command = collect_command(params, prompts, work / "out.jsonl", 4, args.parallel)
                command[1] = str(tree / "collect.py")
                measured = run_measured(command, work).check()
                stats = orjson.loads((work / "out.stats.json").read_bytes())
                results.setdefault(version, []).append(
                    (stats["throughput_rollouts_per_s"], 1000 * measured.cpu_s / args.rollouts)
                )
    reference = statistics.median(rate for rate, _ in results["bare loop, collector's GC"])
    print(
        f"parallel {args.parallel}, {args.rollouts:,} rollouts, {args.rounds} interleaved rounds "
        f"(python bench/compare.py {' '.join(args.versions)} --parallel {args.parallel} --rollouts {args.rollouts} "
        f"--rounds {args.rounds})"
    )
    print("| version | rollouts/s per run | CPU ms/rollout per run | median /s | lowest CPU ms | vs loop (same GC) |")
    print("|---|---|---|---:|---:|---:|")
    for version, runs in results.items():
        median = statistics.median(rate for rate, _ in runs)
        print(
            f"| {version} | {' '.join(f'{rate:,.0f}' for rate, _ in runs)} | {' '.join(f'{cpu:.3f}' for _, cpu in runs)} "
            f"| {median:,.0f} | {min(cpu for _, cpu in runs):.3f} | {median / reference:.2f} |"
        )


if __name__ == "__main__":
    main()
