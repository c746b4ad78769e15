"""Arguments every file-to-file stage script takes, defined once, and params.yaml as the entry points load it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rollout_pipeline import paths
from rollout_pipeline.cli.start_guard import guarded_imports
from rollout_pipeline.settings import PARAMS_CODE, PARAMS_FILE, stage_objective, validated_once


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict:
    """params.yaml, validated: by the models in params/ (pydantic) the first time this content is seen, read
    back from the cache after that. A broken file is reported in one line every time."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        data = None  # params.load_params says what is wrong with the path, in one line

    def validate() -> dict:
        with guarded_imports():
            from rollout_pipeline.params import load_params as load_and_validate
            from rollout_pipeline.params import parse_params
        return load_and_validate(path) if data is None else parse_params(data, path)

    return validate() if data is None else validated_once("params", data, PARAMS_CODE, validate)


def with_flags(params: dict, section: str, args: argparse.Namespace, *keys: str) -> dict:
    """`params` with the flags given on the command line (`--min-margin` for `min_margin`; a flag not given is
    absent: its default is argparse.SUPPRESS) set in one section, validated by its model as params.yaml is, so the
    defaults are the model's alone; pydantic is imported only when a flag is given."""
    flags = {key: getattr(args, key) for key in keys if hasattr(args, key)}
    if not flags:
        return params
    with guarded_imports():
        from rollout_pipeline.params import apply_flags
    return apply_flags(params, section, flags)


def objective_input(args: argparse.Namespace, params: dict, stage: str) -> str:
    """--in, else the rollouts of the objective the stage's section of params.yaml names (`filter.objective`)."""
    return args.input or str(paths.rollouts(stage_objective(params, stage, args.params)))


def stage_parser(
    prog: str,
    doc: str,
    input_default: str | None,
    output_default: str | None,
    input_help: str = "rollout JSONL",
    output_help: str = "file to write",
) -> argparse.ArgumentParser:
    """A parser with --in, --out and --params; the stage adds its own overrides."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    default = " (default: %(default)s)"
    parser.add_argument(
        "--in",
        dest="input",
        metavar="PATH",
        default=input_default,
        help=input_help + (default if input_default else ""),
    )
    parser.add_argument(
        "--out",
        dest="output",
        metavar="PATH",
        default=output_default,
        help=output_help + (default if output_default else ""),
    )
    parser.add_argument("--params", default=PARAMS_FILE, help="params file" + default)
    return parser
