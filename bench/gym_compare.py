#!/usr/bin/env python3
"""Our collector beside NeMo Gym 0.7.0's own, `ng_collect_rollouts` and `gym eval run --no-serve`, on one agent.

The agent is bench/instant_server.py answering /run instantly (a verified rollout: a Responses object and its
reward), so what is measured is each collector. Gym's collector reaches it as it reaches any agent: its real head
server (bench/gym_head_server.py, run by the gym tier's interpreter) serves the config, whose environment server
and agent both sit on the instant server's port. Ours reaches it as protocol `agent`. Every size runs the three
collectors in turn, with the same rows, repeats and requests in flight, for `--rounds` interleaved rounds (the
tables give each collector's median); Gym's post-run aggregation
and health checks are off (they would ask the instant agent for metrics it cannot give, and they are no part of
collecting). Wall time and CPU (the process and its reaped children) and peak RSS come from os.wait4.

    python bench/gym_compare.py [--gym-venv .venv-gym] [--sizes 8000 80000] [--parallel 256] [--rounds 1]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
from contextlib import contextmanager
from pathlib import Path

import yaml

from benchlib import (
    PY,
    ROOT,
    Measured,
    collect_command,
    instant_server,
    run_measured,
    scratch,
    shell,
    write_params,
    write_prompts,
)

REPEATS = 4
TARGETS = {"wall": 4.0, "peak memory": 6.0}  # ours at least this many times better than 0.7.0's collectors


def gym_config(directory: Path, agent_port: int, head_port: int) -> Path:
    """Gym's config for the side-by-side: the head server, and an agent and its environment server on the instant
    server's port (the resources and model servers are named, as Gym requires, and never reached)."""
    host = "127.0.0.1"
    config = {
        "head_server": {"host": host, "port": head_port},
        "bench": {
            "responses_api_agents": {
                "simple_agent": {
                    "entrypoint": "app.py",
                    "host": host,
                    "port": agent_port,
                    "resources_server": {"type": "resources_servers", "name": "bench_resources"},
                    "model_server": {"type": "responses_api_models", "name": "bench_model"},
                }
            }
        },
        "bench_environment_server": {
            "environment_servers": {
                "legacy_agent": {
                    "entrypoint": "app.py",
                    "host": host,
                    "port": agent_port,
                    "agent_server": {"type": "responses_api_agents", "name": "bench"},
                }
            }
        },
        "bench_resources": {
            "resources_servers": {
                "math_with_judge": {"entrypoint": "app.py", "host": host, "port": 1, "domain": "math"}
            }
        },
        "bench_model": {"responses_api_models": {"vllm_model": {"entrypoint": "app.py", "host": host, "port": 2}}},
    }
    path = directory / "gym.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def gym_head_server(gym_python: str, config: Path):
    process = subprocess.Popen(
        [gym_python, str(ROOT / "bench" / "gym_head_server.py"), f"+config_paths=[{config}]"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=config.parent,
        text=True,
    )
    try:
        for line in process.stdout:  # type: ignore[union-attr]  # uvicorn's access log comes first
            if line.strip() == "listening":
                break
        else:
            raise RuntimeError("NeMo Gym's head server did not start")
        yield
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        process.wait(timeout=30)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commands(gym_bin: Path, config: Path, params: Path, prompts: Path, parallel: int) -> dict[str, list[str]]:
    ours = collect_command(Path(params.name), Path(prompts.name), Path("ours.jsonl"), REPEATS, parallel, progress=False)
    legacy = [
        str(gym_bin / "ng_collect_rollouts"),
        f"+config_paths=[{config.name}]",
        "+agent_name=bench",
        f"+input_jsonl_fpath={prompts.name}",
        "+output_jsonl_fpath=ng.jsonl",
        f"+num_repeats={REPEATS}",
        f"+num_samples_in_parallel={parallel}",
        "+disable_aggregation=true",
        "+disable_health_check=true",
    ]
    eval_run = [
        str(gym_bin / "gym"),
        "eval",
        "run",
        "--no-serve",
        "--config",
        config.name,
        "-a",
        "bench",
        "-i",
        prompts.name,
        "-o",
        "eval.jsonl",
        "--num-repeats",
        str(REPEATS),
        "--concurrency",
        str(parallel),
        "--disable-aggregation",
        "--no-health-check",
    ]
    return {"ours": ours, "ng_collect_rollouts": legacy, "gym eval run --no-serve": eval_run}


def median_run(runs: list[Measured]) -> Measured:
    """Each figure's median over the rounds."""
    return Measured(
        statistics.median(r.wall_s for r in runs),
        statistics.median(r.cpu_s for r in runs),
        statistics.median(r.max_rss_mb for r in runs),
        0,
        "",
        "",
    )


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gym-venv", default=str(ROOT / ".venv-gym"), help="the gym tier's virtualenv")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8_000, 80_000], help="rollouts per run")
    parser.add_argument("--parallel", type=int, default=256, help="requests in flight, for every collector")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (a shared machine is noisy)")
    args = parser.parse_args()
    gym_bin = Path(args.gym_venv).absolute() / "bin"
    outputs = {"ours": "ours.jsonl", "ng_collect_rollouts": "ng.jsonl", "gym eval run --no-serve": "eval.jsonl"}
    results: dict[int, dict[str, list[Measured]]] = {}
    with instant_server(agent=True) as server, scratch("gym-compare") as work:
        config = gym_config(work, int(server.url.rsplit(":", 1)[1]), free_port())
        params = write_params(work, server.url, protocol="agent", timeout_s=60)
        with gym_head_server(str(gym_bin / "python"), config):
            for size in args.sizes:
                write_prompts(work / f"prompts_{size}.jsonl", size // REPEATS)
            for _, size in itertools.product(range(args.rounds), args.sizes):
                prompts = work / f"prompts_{size}.jsonl"
                for label, command in commands(gym_bin, config, params, prompts, args.parallel).items():
                    measured = run_measured(command, work).check()
                    written = count_lines(work / outputs[label])
                    if written != size:
                        raise RuntimeError(f"{shell(command)} wrote {written} rollouts, not {size}")
                    (work / outputs[label]).unlink()
                    results.setdefault(size, {}).setdefault(label, []).append(measured)
                    print(
                        f"{size:>7,} {label:<26} {measured.wall_s:8.2f} s wall {measured.cpu_s:8.2f} s CPU "
                        f"{measured.max_rss_mb:7.0f} MB",
                        flush=True,
                    )
            example = commands(gym_bin, config, params, work / "prompts_N.jsonl", args.parallel)
    print()
    print(
        f"python bench/gym_compare.py --sizes {' '.join(map(str, args.sizes))} --parallel {args.parallel} "
        f"--rounds {args.rounds}"
    )
    print("| rollouts | collector | wall s | CPU s | peak RSS MB | wall ratio | CPU ratio | memory ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    missed = []
    for size, by_label in results.items():
        runs = {label: median_run(measured) for label, measured in by_label.items()}
        ours = runs["ours"]
        for label, measured in runs.items():
            ratios = (measured.wall_s / ours.wall_s, measured.cpu_s / ours.cpu_s, measured.max_rss_mb / ours.max_rss_mb)
            print(
                f"| {size:,} | {label} | {measured.wall_s:.2f} | {measured.cpu_s:.2f} | {measured.max_rss_mb:.0f} "
                f"| {ratios[0]:.1f}x | {ratios[1]:.1f}x | {ratios[2]:.1f}x |"
            )
            if label != "ours":
                missed += [f"{size:,} {label}: wall {ratios[0]:.1f}x"] if ratios[0] < TARGETS["wall"] else []
                missed += [f"{size:,} {label}: memory {ratios[2]:.1f}x"] if ratios[2] < TARGETS["peak memory"] else []
    print()
    print("Ratios are theirs / ours (higher: ours is better). Commands (N = rollouts / 4 rows):")
    for label, command in example.items():
        print(f"- {label}: `{shell(command).replace(PY, 'python')}`")
    print("targets (>= 4x wall, >= 6x memory): " + ("met" if not missed else "NOT MET: " + "; ".join(missed)))


if __name__ == "__main__":
    main()
