"""params.yaml's settings as the entry points read them, without importing pydantic: the names of its parts, the
accessors for one agent, objective or fetch block, and validation results kept by content (`validated_once`)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from rollout_pipeline.errors import UserError, did_you_mean
from rollout_pipeline.paths import PARAMS_FILE

# The RL loop's iterations and its evaluations read their fetch overrides from fetch.objectives.rl_loop / rl_eval.
RL_LOOP_FETCH = "rl_loop"
RL_EVAL_FETCH = "rl_eval"
# The rl.train settings that a training command (rl.train.cmd) may name as placeholders.
TRAIN_SETTINGS = (
    "lr",
    "steps",
    "base",
    "clip",
    "lora_rank",
    "lora_alpha",
    "divide_by_std",
    "seed",
    "max_token_mult_prob_error",
)
FETCH_OVERRIDES = ("agents", "objectives")  # fetch's sections of overrides; its other keys are the defaults

PACKAGE_DIR = Path(__file__).resolve().parent
# Where validation results are kept: $ROLLOUT_PIPELINE_CACHE, else the user's cache directory.
CACHE_ENV = "ROLLOUT_PIPELINE_CACHE"
CACHE_ENTRIES = 512  # past this many, the older half is removed
# The modules whose code decides what params.yaml validates to (kept results are keyed by them too).
PARAMS_CODE = ("settings.py", *sorted(f"params/{path.name}" for path in (PACKAGE_DIR / "params").glob("*.py")))


def fetch_settings(params: dict, agent_name: str, objective_name: str) -> dict:
    """How one objective's rollouts are fetched from one agent: fetch's defaults, then the agent's overrides,
    then the objective's."""
    fetch = params["fetch"]
    defaults = {key: value for key, value in fetch.items() if key not in FETCH_OVERRIDES}
    return {**defaults, **fetch["agents"].get(agent_name, {}), **fetch["objectives"].get(objective_name, {})}


def objective_settings(params: dict, objective: str, source: str = PARAMS_FILE) -> dict:
    """One objective's validated settings; an unknown name lists the known ones."""
    objectives = params["objectives"]
    if objective not in objectives:
        raise UserError(
            f"{source}: unknown objective {objective!r}{did_you_mean(objective, objectives)}; "
            f"known objectives: {', '.join(objectives)}"
        )
    return objectives[objective]


def stage_objective(params: dict, stage: str, source: str = PARAMS_FILE) -> str:
    """The objective whose rollouts a stage reads (`filter.objective`, `pair.objective`); an unknown name lists the
    known ones."""
    name = params[stage]["objective"]
    problem = stage_objective_problem(stage, name, list(params["objectives"]))
    if problem:
        raise UserError(f"{source}: {problem}")
    return name


def stage_objective_problem(stage: str, name: str, objectives: list[str]) -> str | None:
    """What is wrong with a stage's objective (`filter.objective: unknown objective ...`), or None."""
    if name in objectives:
        return None
    return (
        f"{stage}.objective: unknown objective {name!r}{did_you_mean(name, objectives)}; "
        f"known objectives: {', '.join(objectives) or '(none)'}"
    )


def agent_settings(params: dict, name: str, source: str = PARAMS_FILE) -> dict:
    """One agent's validated settings; an unknown name lists the known ones."""
    agents = params["agents"]
    if name not in agents:
        raise UserError(
            f"unknown agent_name {name!r}{did_you_mean(name, agents)}; agents in {source}: {', '.join(agents)}"
        )
    return agents[name]


# ---- validation results kept by content ------------------------------------------------------------------
# Validating params.yaml means importing pydantic and building its models: about 0.2 s, a third of a short run's
# start-up. The result depends only on the input and on the validating code, so it is kept on disk under a hash
# of both, and a run whose input and code are unchanged reads it back instead. Errors are never kept: a bad input
# is validated, and reported, every time.


def validated_once(kind: str, source: bytes, code: Iterable[str], validate: Callable[[], Any]) -> Any:
    """`validate()`'s result for this `source` (the input's bytes), read back from the cache when the same input
    was validated before by the same `code` (module files, relative to the package) and pydantic; else
    `validate()`, whose result is kept when it is JSON."""
    path = _cache_dir() / f"{_key(kind, source, code)}.json"
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        return orjson.loads(path.read_bytes())
    result = validate()
    _keep(path, result)
    return result


def _cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rollout-pipeline" / "validated"


def _key(kind: str, source: bytes, code: Iterable[str]) -> str:
    digest = hashlib.sha256(kind.encode() + b"\0" + source)
    for name in code:
        digest.update(b"\0" + (PACKAGE_DIR / name).read_bytes())
    spec = importlib.util.find_spec("pydantic")  # its version decides what a model accepts
    if spec is not None and spec.origin:
        digest.update(b"\0" + (Path(spec.origin).parent / "version.py").read_bytes())
    return digest.hexdigest()


def _keep(path: Path, result: Any) -> None:
    """Write the result beside the others (a temporary file renamed into place, owner-only as mkstemp makes it: a
    URL in params.yaml may carry a password); a cache that cannot be written (read-only, full) or a result that is
    not JSON only means validating again next time."""
    try:
        data = orjson.dumps(result)
        if orjson.loads(data) != result:  # tuples, non-string keys: JSON would not give it back as it was
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        _prune(path.parent)
    except (OSError, orjson.JSONEncodeError):
        return


def _prune(directory: Path) -> None:
    entries = list(directory.glob("*.json"))
    if len(entries) <= CACHE_ENTRIES:
        return
    entries.sort(key=lambda entry: entry.stat().st_mtime)  # an OSError (removed meanwhile) ends this pruning
    for stale in entries[: len(entries) // 2]:
        stale.unlink(missing_ok=True)
