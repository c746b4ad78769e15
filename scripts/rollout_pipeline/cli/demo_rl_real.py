"""`python scripts/demo_rl_real.py` (make demo-rl-real): the RL loop on SmolLM2-135M under vLLM with runtime LoRA and
the LoRA trainer, in a copy of the project (tooling/demo_rl_real does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rollout_pipeline.errors import run_cli
from rollout_pipeline.paths import DEMO_RL_REAL_DIR
from rollout_pipeline.tooling.demo_rl_real import RECIPE, run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_rl_real.py", description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-venv", default=".venv-vllm", help="the vLLM tier's virtualenv (make setup-vllm)")
    parser.add_argument("--iterations", type=int, default=5, metavar="N", help="bring the loop up to iteration N")
    parser.add_argument("--dir", default=str(DEMO_RL_REAL_DIR), help=f"the project copy (default {DEMO_RL_REAL_DIR})")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="YAML",
        help=f"params merged in after {RECIPE} (repeatable), e.g. params.rl-real-adaptive.yaml; give each variant "
        "its own --dir: existing iterations are never rewritten",
    )
    args = parser.parse_args(argv)
    run_demo(
        Path(args.vllm_venv).resolve(),
        args.iterations,
        Path(args.dir).resolve(),
        [Path(path).resolve() for path in args.also],
    )
    return 0


def script_main() -> None:
    """Entry point of `python scripts/demo_rl_real.py`."""
    run_cli(main, "demo_rl_real.py")
