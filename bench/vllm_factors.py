#!/usr/bin/env python3
"""What the vLLM tier's speed depends on: start the tier's server with one factor changed, then time a bare aiohttp
loop sending make demo-real's requests (50 easy prompts x 4, seeded, temperature 0.8, 64 tokens, logprobs) at
several concurrencies. Not part of `make bench` (each server start costs a minute); bench/RESULTS.md records what it
found ("vLLM tier speed").

    python bench/vllm_factors.py --runs 1x8,8x32,64x128             # the tier's flags: 1 in flight x 8 requests, ...
    python bench/vllm_factors.py --dtype bfloat16 --lora --no-openmp   # the flags the tier had before
    python bench/vllm_factors.py --env VLLM_CPU_NUM_OF_RESERVED_CPU=0 # vLLM's threads on both cores
    python bench/vllm_factors.py --runs "8x32:seed=0;td=none"          # requests unseeded, without logprobs
    python bench/vllm_factors.py --runs "32x200,32x200:max=48"         # max_output_tokens 48 instead of 64
    python bench/vllm_factors.py --env VLLM_ENABLE_V1_MULTIPROCESSING=0 --env OMP_NUM_THREADS=1 \
        --flag "--distributed-executor-backend uni" --runs 32x200      # the model in the engine-core process

Prints one RESULT line (JSON) per run: requests/s, output tokens/s, mean latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import aiohttp
import orjson

from benchlib import ROOT
from rollout_pipeline.collect.fetcher import rollout_seed
from rollout_pipeline.collect.protocols import build_body, sampling_params
from rollout_pipeline.collect.run_input import parse_row
from rollout_pipeline.stages.prompt_sets import write_prompt_set
from rollout_pipeline.tooling.vllm_server import MODEL_NAME, vllm_server


def demo_bodies(
    prompts: Path, seeded: bool, token_data: str | None, temperature: float = 0.8, max_output_tokens: int = 64
) -> list[bytes]:
    """make demo-real's chat bodies (the collector's own builder), 4 rollouts per prompt, run seed 1."""
    bodies = []
    for task_index, raw in enumerate(prompts.read_bytes().splitlines()):
        row = parse_row(raw, prompts, task_index + 1)
        for rollout_index in range(4):
            seed = rollout_seed(1, task_index, rollout_index) if seeded else None
            sampling = {"temperature": temperature, "max_output_tokens": max_output_tokens}
            params = sampling_params("chat", row.row, sampling, seed)
            bodies.append(orjson.dumps(build_body("chat", row, params, MODEL_NAME, token_data=token_data)))
    return bodies


async def load(url: str, bodies: list[bytes], parallel: int) -> dict:
    """Send every body, `parallel` at a time; output tokens from each reply's usage."""
    queue = iter(bodies)
    tokens, latencies = 0, []
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024), timeout=timeout) as session:

        async def worker() -> None:
            nonlocal tokens
            for body in queue:
                started = time.perf_counter()
                headers = {"Content-Type": "application/json"}
                async with session.post(f"{url}/v1/chat/completions", data=body, headers=headers) as reply:
                    decoded = orjson.loads(await reply.read())
                    if reply.status != 200:
                        raise SystemExit(f"{url}: HTTP {reply.status}")
                latencies.append(time.perf_counter() - started)
                tokens += decoded["usage"]["completion_tokens"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        wall = time.perf_counter() - started
    return {
        "requests": len(bodies),
        "parallel": parallel,
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(bodies) / wall, 2),
        "output_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "mean_latency_s": round(sum(latencies) / len(latencies), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", help="replace the tier's --dtype")
    parser.add_argument("--lora", action="store_true", help="runtime LoRA on (--enable-lora --max-lora-rank 8)")
    parser.add_argument("--no-openmp", action="store_true", help="do not preload vLLM's OpenMP runtime")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--flag", action="append", default=[], help="extra server flags, e.g. '--max-num-seqs 16'")
    parser.add_argument(
        "--runs", default="1x8,8x32,64x128", help="PARALLELxREQUESTS[:seed=0|1;td=logprobs|none;max=TOKENS],..."
    )
    args = parser.parse_args()
    python = os.environ.get("VLLM_SERVER_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    server = vllm_server(python, lora=args.lora)
    if args.dtype:
        server.command[server.command.index("--dtype") + 1] = args.dtype
    if args.no_openmp:
        server.env.pop("LD_PRELOAD", None)
    for pair in args.env:
        key, _, value = pair.partition("=")
        server.env[key] = value
    for flags in args.flag:
        server.command += flags.split()
    print("server:", " ".join(server.command[1:]), "| env:", args.env, flush=True)
    started = time.monotonic()
    prompts = Path(server.log_path).with_suffix(".prompts.jsonl")
    write_prompt_set(prompts, 50, "easy", seed=1)
    try:
        server.start()
        print(f"started in {time.monotonic() - started:.0f} s; log {server.log_path}", flush=True)
        asyncio.run(load(server.url, demo_bodies(prompts, True, "logprobs")[:4], 4))  # warm-up
        for run in args.runs.split(","):
            size, _, variant = run.partition(":")
            parallel, total = map(int, size.split("x"))
            options = dict(pair.split("=") for pair in variant.split(";") if pair)
            token_data = options.get("td", "logprobs")
            seeded = options.get("seed", "1") == "1"
            max_tokens = int(options.get("max", 64))
            bodies = demo_bodies(prompts, seeded, None if token_data == "none" else token_data, 0.8, max_tokens)
            result = asyncio.run(load(server.url, (bodies * (1 + total // len(bodies)))[:total], parallel))
            print("RESULT", run, orjson.dumps(result).decode(), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
