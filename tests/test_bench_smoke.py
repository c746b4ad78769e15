"""The benchmark suite still runs: `bench/run_all.py --smoke` end to end, in seconds.

No timing is asserted (CI machines are shared and noisy): only that every benchmark family runs, produces the
rows RESULTS.md is made of, and appends a well-formed dated section.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support import PY, ROOT

EXPECTED = {  # family -> (case, figure) pairs that must be present
    "throughput": [
        ("parallel 16", "collector rollouts/s"),
        ("parallel 16", "collector CPU per rollout"),
        ("parallel 16", "bare loop requests/s (default GC)"),
        ("parallel 16", "ratio collector / bare loop (same GC)"),
    ],
    "concurrency": [
        ("parallel 16, 20 ms", "Little's-law limit P/L"),
        ("parallel 16, 20 ms", "collector efficiency"),
        ("parallel 16, 20 ms", "bare loop efficiency (default GC)"),
        ("parallel 16, 20 ms", "bare loop efficiency (collector's GC)"),
    ],
    "collector_memory": [
        ("100 rollouts", "collector peak RSS"),
        ("2,000 rollouts", "collector peak RSS"),
        ("100 -> 2,000 rollouts", "peak RSS growth"),
    ],
    "startup": [
        ("1 row, instant server", "wall time (median)"),
        ("1 row, url: embedded", "peak RSS (median)"),
        ("python -c pass", "wall time (median)"),
        ("1 row, instant server", "ratio to python -c 'import aiohttp'"),
        ("1 row, instant server, first run", "wall time (median)"),
        ("scripts/filter.py --help", "wall time (median)"),
    ],
    "repeat_mode": [
        ("repeat_mode: separate", "requests sent"),
        ("repeat_mode: n", "requests sent"),
        ("n vs separate", "wall-time speed-up"),
    ],
    "pipeline": [
        ("dvc status (smoke)", "wall time"),
        ("filter, 2,000 rollouts", "peak RSS"),
        ("pair, 2,000 rollouts", "wall time"),
        ("metrics, 200 -> 2,000 rollouts", "peak RSS growth"),
    ],
    "token_data": [
        ("1,000-token replies", "ratio collector / bare loop"),
        ("1,000-token replies", "peak RSS growth (large / small run)"),
    ],
    "rate_limits": [
        ("adaptive, ceiling 256", "rate / server capacity"),
        ("adaptive, ceiling 256", "429s per rollout"),
        ("fixed parallelism 16", "rate / server capacity"),
    ],
    "ray_scaling": [
        ("instant server, parallel 256", "ratio Ray / local"),
        ("5 ms CPU verifier", "speed-up from the second node"),
        ("driver", "driver write rate (1 / CPU per rollout)"),
        ("driver", "bytes per rollout written"),
    ],
    "worst_reply": [(f"{kind}, 4 in flight", "collector peak RSS") for kind in ("short", "long-text")],  # smoke
    "install": [
        ("one pinned package (smoke): pip", "CPU (median)"),
        ("one pinned package (smoke): uv", "CPU (median)"),
        ("one pinned package (smoke)", "wall: pip / uv"),
    ],
}


@pytest.mark.bench
@pytest.mark.ray  # family 9 starts a Ray cluster
def test_run_all_smoke_produces_every_benchmark_row(tmp_path):
    results = tmp_path / "RESULTS.md"
    figures_json = tmp_path / "figures.json"
    # Family 10 starts a genuine vLLM (a minute and 3 GB): it runs with the vLLM tier's benchmark, not here.
    run = subprocess.run(
        [
            PY,
            str(ROOT / "bench" / "run_all.py"),
            "--smoke",
            "--results",
            str(results),
            "--json",
            str(figures_json),
            "--only",
            ",".join(EXPECTED),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    figures = json.loads(figures_json.read_text())
    assert set(figures) == set(EXPECTED)
    for family, rows in EXPECTED.items():
        present = {(f["case"], f["metric"]) for f in figures[family]}
        assert set(rows) <= present, (family, sorted(present))
        for figure in figures[family]:
            assert isinstance(figure["value"], (int, float)) and figure["command"], figure

    # The smoke run's numbers are what the code measured: requests sent follow from the settings.
    by_name = {(f["case"], f["metric"]): f["value"] for f in figures["repeat_mode"]}
    assert by_name[("repeat_mode: separate", "requests sent")] == 16 * 8
    assert by_name[("repeat_mode: n", "requests sent")] == 16

    text = results.read_text()
    assert text.startswith("# Benchmark results")
    assert "`make bench` --smoke" in text and "### Targets" in text
    for title in (
        "1. Throughput",
        "2. Concurrency",
        "3. Collector memory",
        "4. Start-up",
        "5. repeat_mode",
        "6. Pipeline overhead",
    ):
        assert f"### {title}" in text
    assert "python scripts/collect.py +agent_name=bench" in text  # each figure names its command


def test_run_all_rejects_an_unknown_family():
    run = subprocess.run(
        [PY, str(ROOT / "bench" / "run_all.py"), "--smoke", "--only", "throughput,nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "nope" in run.stderr


def run_without_its_tier(script: str, vllm_python: Path, *args: str) -> subprocess.CompletedProcess:
    """A benchmark of the vLLM tier run where that tier is missing: it must end well and say it was skipped."""
    run = subprocess.run(
        [PY, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VLLM_SERVER_PYTHON": str(vllm_python)},
    )
    assert run.returncode == 0, run.stderr
    assert "skipped" in run.stdout
    return run


def test_the_vllm_benchmark_says_it_is_skipped_and_why_when_the_vllm_tier_is_not_installed(tmp_path):
    run = run_without_its_tier("vllm_server.py", tmp_path / "no-tier" / "bin" / "python")
    assert f"the vLLM tier is not installed: no converted model in {tmp_path / 'no-tier' / 'models'}" in run.stdout
    assert "(make setup-vllm)" in run.stdout


def test_the_gym_and_vllm_benchmark_says_it_is_skipped_and_names_each_missing_tier(tmp_path):
    run = run_without_its_tier(
        "gym_vllm.py", tmp_path / "no-vllm" / "bin" / "python", "--gym-venv", str(tmp_path / "no-gym")
    )
    assert f"the vLLM tier: no converted model in {tmp_path / 'no-vllm' / 'models'}" in run.stdout
    assert f"the gym tier: no {tmp_path / 'no-gym' / 'bin' / 'python'} (make setup-gym)" in run.stdout
