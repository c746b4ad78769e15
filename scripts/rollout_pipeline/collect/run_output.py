"""A run's output path: checked before the run touches any file, and whether it already holds this run's rollouts."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import dumps, side_path


def check_output_path(settings: CollectSettings) -> None:
    """One line when the output cannot be written as asked; its directory is created otherwise."""
    output = settings.output_path
    if output.is_dir():
        raise UserError(f"{output}: is a directory; give the output a file name, e.g. {output / 'rollouts.jsonl'}")
    if not output.name.endswith(".jsonl"):
        # Its stats and failures files are named from the stem: `X` and `X.jsonl` would share them.
        raise UserError(
            f"{output}: the output must be a .jsonl file (e.g. {output.name}.jsonl): its stats and "
            "failures files are named after it"
        )
    if output.exists() and settings.input_path.exists() and os.path.samefile(output, settings.input_path):
        raise UserError(
            f"{output}: the output path is the input file, and writing it would replace the prompts; "
            "give another output path"
        )
    directory = output.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{directory}: cannot create the output directory ({exc.strerror})") from None
    if not os.access(directory, os.W_OK):
        raise UserError(f"{directory}: output directory is not writable")


def already_collected(output: Path, identity: dict) -> tuple[bool, dict | None]:
    """(whether the output already holds this run identity's rollouts, untouched since they were written, as
    its stats file records; that stats file)."""
    stats_path = side_path(output, ".stats.json")
    try:
        stats = orjson.loads(stats_path.read_bytes())
        state = output.stat()
    except (OSError, orjson.JSONDecodeError):
        return False, None
    finished = (
        isinstance(stats, dict)
        and stats.get("run_identity") == orjson.loads(dumps(identity))
        and stats.get("output") == {"bytes": state.st_size, "mtime_ns": state.st_mtime_ns}
    )
    return finished, stats if finished else None
