"""`python -m rollout_pipeline.cli.serve_vllm --python .venv-vllm/bin/python [--port N]`: serve SmolLM2-135M under a
genuine vLLM (tooling/vllm_server) on loopback until Ctrl-C, for a tier's tests or the RL recipe run by hand."""

from __future__ import annotations

import argparse
import time

from rollout_pipeline.errors import run_cli
from rollout_pipeline.tooling.local_server import running
from rollout_pipeline.tooling.vllm_server import MODEL_NAME, vllm_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve_vllm", description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the vLLM tier's interpreter (.venv-vllm/bin/python)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--logprobs-mode", choices=["raw_logprobs", "processed_logprobs"], default=None)
    parser.add_argument("--lora", action="store_true", help="allow runtime LoRA adapters (the RL loop)")
    args = parser.parse_args(argv)
    server = vllm_server(args.python, port=args.port, logprobs_mode=args.logprobs_mode, lora=args.lora)
    with running(server):
        print(f"vLLM serving {MODEL_NAME} at {server.url} (log: {server.log_path}); Ctrl-C stops it", flush=True)
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    run_cli(main, "serve_vllm")
