"""Reference-policy checkpoints: the JSON format, loading, caching, and safe name resolution.

A checkpoint is a small JSON file of logits, one per candidate kind, per difficulty class:

    {"format": "reference-policy/1",
     "classes": {"easy": {"correct": 1.2, "off_by_one": 0.1, "carry_slip": 0.2, "swapped_operands": 0.0,
                          "wrong_operation": -0.6, "no_answer": -1.5},
                 "hard": {...same kinds...}},
     ...any other top-level keys (notes, iteration, parent) are kept as metadata}

Every class in `policy.DIFFICULTY_CLASSES` and every kind in `policy.CANDIDATE_KINDS` must be
present (a typo would otherwise silently become "never sampled").

A request's `model` picks the checkpoint: `reference` is the shipped file next to this module;
any other name is a file inside the configured checkpoint directory (`NAME` or `NAME.json`).
Names that leave that directory -- `..`, absolute paths, symlinks resolving outside -- are not
found, exactly like names that do not exist, so the server never reads files outside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rollout_pipeline.jsonl import write_json
from rollout_pipeline.reference.policy import CANDIDATE_KINDS, DIFFICULTY_CLASSES

FORMAT = "reference-policy/1"
REFERENCE_NAME = "reference"
REFERENCE_PATH = Path(__file__).resolve().parent / "checkpoints" / "reference.json"


class CheckpointError(Exception):
    """A checkpoint file exists but is not a valid reference-policy checkpoint."""


class ModelNotFound(Exception):
    """No checkpoint of that name inside the checkpoint directory (or the name tries to leave it)."""


@dataclass(eq=False)
class Checkpoint:
    name: str
    classes: dict[str, dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)
    # Sampling tables derived from the logits, filled by the policy; dropped with the object on reload.
    sampling_cache: dict = field(default_factory=dict, repr=False)

    def logits(self, difficulty: str) -> dict[str, float]:
        return self.classes[difficulty]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            **{k: v for k, v in self.meta.items() if k not in ("format", "classes")},
            "classes": self.classes,
        }


def parse_checkpoint(obj: Any, source: str, name: str | None = None) -> Checkpoint:
    """Validate a decoded checkpoint document; CheckpointError names the source and the key."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a JSON object")
    if obj.get("format") != FORMAT:
        raise CheckpointError(f"{source}: 'format' must be {FORMAT!r}, got {obj.get('format')!r}")
    classes = obj.get("classes")
    if not isinstance(classes, dict):
        raise CheckpointError(f"{source}: 'classes' must be an object of difficulty classes")
    out: dict[str, dict[str, float]] = {}
    for cls in DIFFICULTY_CLASSES:
        logits = classes.get(cls)
        if not isinstance(logits, dict):
            raise CheckpointError(f"{source}: classes.{cls} is missing or not an object")
        unknown = set(logits) - set(CANDIDATE_KINDS)
        if unknown:
            raise CheckpointError(
                f"{source}: classes.{cls}: unknown kinds {sorted(unknown)}; kinds are {', '.join(CANDIDATE_KINDS)}"
            )
        out[cls] = {}
        for kind in CANDIDATE_KINDS:
            value = logits.get(kind)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CheckpointError(f"{source}: classes.{cls}.{kind} must be a finite number, got {value!r}")
            out[cls][kind] = float(value)
    unknown_classes = set(classes) - set(DIFFICULTY_CLASSES)
    if unknown_classes:
        raise CheckpointError(
            f"{source}: unknown classes {sorted(unknown_classes)}; classes are {', '.join(DIFFICULTY_CLASSES)}"
        )
    meta = {k: v for k, v in obj.items() if k not in ("format", "classes")}
    return Checkpoint(name or source, out, meta)


def load_checkpoint(path: str | os.PathLike, name: str | None = None) -> Checkpoint:
    """Read and validate one checkpoint file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    return parse_checkpoint(obj, str(path), name)


def save_checkpoint(path: str | os.PathLike, classes: Mapping[str, Mapping[str, float]], **meta: Any) -> None:
    """Validate and atomically write a checkpoint (what the RL trainer calls); the server picks it up by mtime."""
    doc = {"format": FORMAT, **meta, "classes": {c: dict(v) for c, v in classes.items()}}
    parse_checkpoint(doc, str(path))
    write_json(path, doc)


def reference_checkpoint() -> Checkpoint:
    """The shipped initial checkpoint."""
    return load_checkpoint(REFERENCE_PATH, REFERENCE_NAME)


def _inside(root: str, candidate: str) -> bool:
    return candidate == root or candidate.startswith(root.rstrip(os.sep) + os.sep)


def resolve_model_path(model: str, checkpoint_dir: str | os.PathLike | None) -> Path:
    """The real path of the checkpoint file for `model`; ModelNotFound if none, or if it would leave the directory."""
    if model == REFERENCE_NAME:
        return REFERENCE_PATH
    if not isinstance(model, str) or not model or "\x00" in model or checkpoint_dir is None:
        raise ModelNotFound(model)
    # Refuse escapes by shape before touching the file system, then again by real path (symlinks).
    parts = model.replace("\\", "/").split("/")
    if os.path.isabs(model) or model.startswith(("/", "\\")) or ".." in parts or (len(model) > 1 and model[1] == ":"):
        raise ModelNotFound(model)
    root = os.path.realpath(checkpoint_dir)
    names = [model] if model.endswith(".json") else [model, model + ".json"]
    for name in names:
        real = os.path.realpath(os.path.join(root, name))
        if _inside(root, real) and os.path.isfile(real):
            return Path(real)
    raise ModelNotFound(model)


class CheckpointStore:
    """Checkpoints by model name, cached and reloaded when the file changes (mtime, size or inode)."""

    def __init__(self, checkpoint_dir: str | os.PathLike | None = None):
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self._cache: dict[str, tuple[tuple[int, int, int], Checkpoint]] = {}

    def get(self, model: str) -> Checkpoint:
        """ModelNotFound for unknown or escaping names; CheckpointError for an invalid file."""
        path = resolve_model_path(model, self.checkpoint_dir)
        try:
            st = os.stat(path)
        except OSError:
            raise ModelNotFound(model) from None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache.get(str(path))
        if cached is not None and cached[0] == key:
            return cached[1]
        checkpoint = load_checkpoint(path, model)
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[str(path)] = (key, checkpoint)
        return checkpoint

    def list_models(self) -> list[str]:
        """`reference` plus every regular file directly inside the checkpoint directory, named the way a request
        names it (a `.json` suffix dropped; the RL loop's checkpoints, like `iter_004`, have none)."""
        names = [REFERENCE_NAME]
        if self.checkpoint_dir is not None and self.checkpoint_dir.is_dir():
            root = os.path.realpath(self.checkpoint_dir)
            for entry in sorted(self.checkpoint_dir.iterdir()):
                name = entry.stem if entry.suffix == ".json" else entry.name
                if (
                    name != REFERENCE_NAME
                    and not entry.name.startswith(".")
                    and _inside(root, os.path.realpath(entry))
                    and entry.is_file()
                ):
                    names.append(name)
        return names
