"""What each RL iteration's files and models are called: iteration keys, paths, model names, a checkpoint's identity."""

from __future__ import annotations

from pathlib import Path

from rollout_pipeline import paths
from rollout_pipeline.errors import UserError

INIT_KEY = "000"
ROLLOUT_DIR = paths.RL_DIR
CHECKPOINT_DIR = paths.CHECKPOINT_DIR
METRICS_DIR = paths.RL_METRICS_DIR
INIT_RECORD = paths.RL_INIT_RECORD
PROGRESS_CSV = paths.RL_PROGRESS_CSV
EVAL_DIR = paths.RL_EVAL_DIR
MAX_ITERATION = 999


def iteration_key(value: int | str) -> str:
    """1, "1", "001" -> "001"; UserError for anything that is not an iteration 1..999."""
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_ITERATION:
        raise UserError(f"iteration must be a number from 1 to {MAX_ITERATION}, got {value!r}")
    return f"{int(text):03d}"


def checkpoint_path(key: str) -> Path:
    """Checkpoint of iteration `key` ("000" = the initial one). A file for the reference policy; a real
    trainer may write a directory there instead."""
    return CHECKPOINT_DIR / f"iter_{key}"


def rollouts_path(key: str) -> Path:
    return ROLLOUT_DIR / f"rl_iter_{key}.jsonl"


def metrics_path(key: str) -> Path:
    return METRICS_DIR / f"iter_{key}.json"


def eval_rollouts_path(key: str) -> Path:
    return EVAL_DIR / f"iter_{key}.jsonl"


def eval_metrics_path(key: str) -> Path:
    return METRICS_DIR / f"eval_{key}.json"


def sampling_metrics_path(key: str) -> Path:
    """What rl_collect@NNN reports of its dynamic sampling (stages/dynamic_sampling.py): prompts drawn, groups kept."""
    return METRICS_DIR / f"sampling_{key}.json"


def train_metrics_path(key: str) -> Path:
    """What rl_train@NNN reports: the trainer's own metrics ({metrics}), such as its on-policy check."""
    return METRICS_DIR / f"train_{key}.json"


def model_name(rl: dict, key: str) -> str:
    """The model name under which the server serves checkpoint `key` (rl.update.model; checkpoint 000 may have its own,
    rl.update.init_model: a real server serves the base model under the name it was started with)."""
    if key == INIT_KEY and rl["update"].get("init_model"):
        return rl["update"]["init_model"]
    return rl["update"]["model"].format(iteration=key)


def prompt_set_name(prompts: str) -> str:
    """data/prompts/easy.jsonl -> easy (the "prompt set" column of the progress table)."""
    name = Path(prompts).name
    return name[: -len(".jsonl")] if name.endswith(".jsonl") else name


def checkpoint_fingerprint(path: Path) -> str:
    """A cheap identity of a checkpoint's content: the bytes of a file, or a directory's listing
    (names, sizes, mtimes). Part of a collect run's identity, so a resume never mixes rollouts of an
    old and a retrained checkpoint."""
    import hashlib

    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    elif path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            st = item.stat()
            digest.update(f"{item.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        return "missing"
    return digest.hexdigest()[:16]
