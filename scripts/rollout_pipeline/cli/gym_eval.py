"""`gym eval run`: NeMo Gym 0.7.0's command line (-a/-i/-o, --num-repeats, --concurrency, ...) mapped onto the
same collector run as the seed syntax (`+agent_name=... +input_jsonl_fpath=...`)."""

from __future__ import annotations

import argparse
import sys

from rollout_pipeline.errors import UserError

# gym's flag -> the seed syntax's key (its value is passed through, checked by the seed syntax's model).
VALUE_FLAGS = {
    "agent": "agent_name",
    "input": "input_jsonl_fpath",
    "output": "output_jsonl_fpath",
    "num_repeats": "num_repeats",
    "concurrency": "num_samples_in_parallel",
    "limit": "limit",
    "seed": "seed",
    "temperature": "responses_create_params.temperature",
    "top_p": "responses_create_params.top_p",
    "max_output_tokens": "responses_create_params.max_output_tokens",
}


class _Parser(argparse.ArgumentParser):
    """argparse, with every mistake as one line naming the flag (a UserError) instead of usage plus exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"eval run: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gym eval run",
        allow_abbrev=False,
        description="Collect scored rollouts with NeMo Gym's `gym eval run` flags "
        "(the same run as ng_collect_rollouts +agent_name=... +input_jsonl_fpath=... ...).",
    )
    parser.add_argument("-a", "--agent", help="the agent (an entry of params.yaml's agents)")
    parser.add_argument("-i", "--input", help="input JSONL (NeMo Gym rows)")
    parser.add_argument("-o", "--output", help="output JSONL")
    parser.add_argument("--num-repeats", type=int, help="rollouts per row")
    parser.add_argument("--concurrency", type=int, help="requests in flight")
    parser.add_argument("--limit", type=int, help="use only the first N rows")
    parser.add_argument("--seed", type=int, help="the run's seed (per-rollout seeds derive from it)")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--max-output-tokens", type=int)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the rollouts already collected for these settings; without it a finished output is "
        "collected again, as NeMo Gym does (an interrupted run's progress is always kept)",
    )
    parser.add_argument(
        "--no-serve",
        action="store_true",
        help="accepted for NeMo Gym's sake: the servers are params.yaml's agents (url: embedded "
        "starts the bundled one)",
    )
    parser.add_argument(
        "--retry-masked", action="store_true", help="send again the rollouts NeMo Gym masked in an earlier run"
    )
    parser.add_argument("--params", default=None, help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _hydra_value(value: object) -> str:
    """A value as a Hydra override's right-hand side: numbers as they are, text quoted."""
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "\\'") + "'"


def seed_argv(argv: list[str]) -> list[str]:
    """The collector's arguments (seed syntax plus its options) for `gym eval run ARGS`."""
    if argv[:2] != ["eval", "run"]:
        shown = " ".join(argv[:2]) or "(nothing)"
        raise UserError(f"only `gym eval run ...` is supported, got `gym {shown}`")
    options, unknown = _parser().parse_known_args(argv[2:])
    if unknown:
        flag = next((a for a in unknown if a.startswith("-")), unknown[0])
        raise UserError(
            f"eval run: unknown flag {flag!r}; known flags: -a/--agent, -i/--input, -o/--output, "
            "--num-repeats, --concurrency, --limit, --seed, --temperature, --top-p, --max-output-tokens, "
            "--resume, --no-serve, --retry-masked, --params, --no-progress"
        )
    values = vars(options)
    missing = [flag for flag in ("agent", "input", "output") if values[flag] is None]
    if missing:
        raise UserError("eval run: missing " + ", ".join(f"-{flag[0]}/--{flag}" for flag in missing))
    converted = [
        f"+{key}={_hydra_value(values[flag])}" for flag, key in VALUE_FLAGS.items() if values[flag] is not None
    ]
    if not options.resume:
        converted.append("--force")
    if options.retry_masked:
        converted.append("--retry-masked")
    if options.no_progress:
        converted.append("--no-progress")
    if options.params:
        converted += ["--params", options.params]
    return converted


def main(argv: list[str] | None = None) -> int:
    from rollout_pipeline.cli.collect import main as collect_main

    return collect_main(seed_argv(sys.argv[1:] if argv is None else argv), prog="gym eval run")
