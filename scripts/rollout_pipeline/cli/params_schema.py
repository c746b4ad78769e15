"""`make params-schema`: write params.schema.json, the JSON Schema editors use to complete and check params.yaml."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rollout_pipeline.errors import run_cli
from rollout_pipeline.jsonl import atomic_writer
from rollout_pipeline.params import params_json_schema

SCHEMA_FILE = "params.schema.json"


def schema_text() -> str:
    """params.schema.json's content: stable key order, so the committed file changes only with the models."""
    return json.dumps(params_json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0] if argv else SCHEMA_FILE)
    with atomic_writer(path) as handle:
        handle.write(schema_text().encode())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main, "params_schema")
