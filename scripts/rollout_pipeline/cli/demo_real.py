"""`make demo-real`: collect a small objective from a real model (SmolLM2-135M, offline) and show its metrics."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from rollout_pipeline.cli.collect import main as collect_main
from rollout_pipeline.cli.llama_server import MODEL_ALIAS, llama_server
from rollout_pipeline.errors import run_cli
from rollout_pipeline.stages.prompt_sets import write_prompt_set
from rollout_pipeline.stages.rollout_metrics import run_metrics

DEMO_DIR = Path("data/demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_real.py", description=__doc__)
    parser.add_argument("--server-python", required=True, help="the interpreter that has llama-cpp-python[server]")
    parser.add_argument("--prompts", type=int, default=10, help="prompts to ask (default 10)")
    parser.add_argument("--repeats", type=int, default=4, help="rollouts per prompt (default 4)")
    parser.add_argument("--max-output-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    prompts = DEMO_DIR / "prompts.jsonl"
    write_prompt_set(prompts, args.prompts, "easy", seed=1)
    with llama_server(args.server_python) as url:
        agent = {"protocol": "chat", "url": url, "model": MODEL_ALIAS, "verifier": "math", "token_data": "logprobs"}
        params = DEMO_DIR / "params.yaml"
        params.write_text(yaml.safe_dump({"agents": {"smollm2": agent}, "objectives": {}}, sort_keys=False))
        print(f"SmolLM2-135M (llama-cpp-python) at {url}; agent settings:\n"
              + yaml.safe_dump({"smollm2": {**agent, "url": "http://127.0.0.1:PORT"}}, sort_keys=False))
        code = collect_main([
            "+agent_name=smollm2", f"+input_jsonl_fpath={prompts}", f"+output_jsonl_fpath={DEMO_DIR / 'rollouts.jsonl'}",
            f"+num_repeats={args.repeats}", "+num_samples_in_parallel=1", "+seed=1",
            "+responses_create_params.temperature=0.8", f"+responses_create_params.max_output_tokens={args.max_output_tokens}",
            "--params", str(params)])
    if code != 0:
        return code
    result = run_metrics(DEMO_DIR / "rollouts.jsonl", DEMO_DIR / "metrics.json", 1.0)
    print("\n".join(result.lines(DEMO_DIR / "metrics.json")))
    print(json.dumps(result.metrics, indent=2))
    return 0


def script_main() -> None:
    """Entry point of `python scripts/demo_real.py`."""
    run_cli(main, "demo_real.py")
