"""`python scripts/serve.py` / `python -m rollout_pipeline.cli.serve`: the embedded reference server's command line
(its flags, then reference/server.py's `run`). The embedded launcher (reference/embedded.py) starts this module."""

from __future__ import annotations

import argparse
import os

from rollout_pipeline.errors import UserError, run_cli
from rollout_pipeline.reference.faults import FAULT_HELP, FAULT_KINDS, FaultPlan
from rollout_pipeline.reference.server import DEFAULT_HOST, ServerConfig, run
from rollout_pipeline.verify import VERIFIER_KINDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve",
        description="The embedded reference server (a sampler for arithmetic prompts, not a language model): "
        "OpenAI chat/Responses APIs plus NeMo Gym /run and /verify.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = pick a free one; the URL is printed)")
    parser.add_argument("--checkpoint-dir", help="directory in which non-'reference' model names are resolved")
    parser.add_argument("--verifier", default="math", choices=VERIFIER_KINDS, help="verifier for /run and /verify")
    parser.add_argument("--request-log", help="append one JSON line per POST request to this file")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when stdin reaches EOF or the parent process dies (used by the embedded launcher)",
    )
    knobs = parser.add_argument_group("latency and fault injection (tests and benchmarks; off by default)")
    knobs.add_argument("--latency-ms", type=float, default=0.0, help="added latency per generation request")
    knobs.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +- jitter on the latency")
    knobs.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        help="fraction of generation requests that fail, spread over 500, 429, reset, hang, malformed",
    )
    for kind in FAULT_KINDS:
        knobs.add_argument(
            f"--fail-{kind}",
            type=float,
            default=0.0,
            metavar="R",
            dest=f"fail_{kind.replace('-', '_')}",
            help=f"fraction of generation requests answered with {FAULT_HELP[kind]}",
        )
    knobs.add_argument("--fault-seed", type=int, default=None, help="seed for the fault and latency RNG")
    knobs.add_argument(
        "--hang-s", type=float, default=30.0, help="how long 'hang' hangs and 'trickle' trickles (default 30)"
    )
    knobs.add_argument(
        "--retry-after",
        type=float,
        default=1.0,
        help="Retry-After seconds on 429 (default 1; 0 and fractions allowed as a test knob)",
    )
    knobs.add_argument("--shutdown-timeout", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--reasoning",
        action="store_true",
        help="replies carry the policy's working as reasoning: chat message.reasoning (vLLM), "
        "a Responses reasoning item",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0-65535, got {args.port}")
    if args.checkpoint_dir is not None and not os.path.isdir(args.checkpoint_dir):
        raise UserError(f"--checkpoint-dir {args.checkpoint_dir}: not a directory")
    per_kind = {kind: getattr(args, f"fail_{kind.replace('-', '_')}") for kind in FAULT_KINDS}
    plan = FaultPlan.from_flags(
        args.fail_rate,
        per_kind,
        seed=args.fault_seed,
        hang_s=args.hang_s,
        retry_after=args.retry_after,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
    )
    return ServerConfig(
        host=args.host,
        port=args.port,
        checkpoint_dir=args.checkpoint_dir,
        request_log=args.request_log,
        verifier=args.verifier,
        faults=plan,
        reasoning=args.reasoning,
        exit_with_parent=args.exit_with_parent,
        shutdown_timeout=args.shutdown_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    run(config_from_args(build_parser().parse_args(argv)))
    return 0


def script_main() -> None:
    """Entry point of `python scripts/serve.py` and of `python -m rollout_pipeline.cli.serve`."""
    run_cli(main, "serve")


if __name__ == "__main__":
    script_main()
