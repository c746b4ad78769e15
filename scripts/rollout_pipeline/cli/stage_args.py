"""Arguments every file-to-file stage script takes, defined once."""
from __future__ import annotations

import argparse

from rollout_pipeline.params import PARAMS_FILE


def stage_parser(prog: str, doc: str, input_default: str | None, output_default: str | None,
                 input_help: str = "rollout JSONL", output_help: str = "file to write") -> argparse.ArgumentParser:
    """A parser with --in, --out and --params; the stage adds its own overrides."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    default = " (default: %(default)s)"
    parser.add_argument("--in", dest="input", metavar="PATH", default=input_default,
                        help=input_help + (default if input_default else ""))
    parser.add_argument("--out", dest="output", metavar="PATH", default=output_default,
                        help=output_help + (default if output_default else ""))
    parser.add_argument("--params", default=PARAMS_FILE, help="params file" + default)
    return parser
