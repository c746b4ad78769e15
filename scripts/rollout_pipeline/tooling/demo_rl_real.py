"""`make demo-rl-real`: the RL loop on a real model (SmolLM2-135M under vLLM, a LoRA trainer), in a copy of the project.

The copy (data/demo-rl-real/, a git repository of its own) has the project's tracked files with params.rl-real.yaml
merged into params.yaml and `.venv-vllm` linked to the vLLM tier; it is kept between runs, so running the demo again
runs only what changed (DVC), and a larger N adds iterations. The demo starts vLLM on the port params.rl-real.yaml
names, loads the adapters trained by earlier runs (a new server knows none), runs `make rl-iter N=...` there, measures
the base model the way rl_eval measures each checkpoint, prints eval reward, collection reward and on-policy
error per iteration with the eval's noise band, and writes the report's RL loop page (reports/rl-loop.html there).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import read_records
from rollout_pipeline.paths import CHECKPOINT_DIR, DATA_DIR, METRICS_DIR, PARAMS_FILE, RL_BASE_EVAL
from rollout_pipeline.tooling.local_server import running
from rollout_pipeline.tooling.vllm_server import vllm_server

ROOT = Path(__file__).resolve().parents[3]
RECIPE = "params.rl-real.yaml"


def merge(base: dict, overlay: dict) -> dict:
    """`base` with `overlay`'s keys: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def recipe_params(project: Path, recipe: Path, iterations: dict, extra: Sequence[Path] = ()) -> dict:
    """The project's params.yaml with the recipe (then each `extra` file) merged in and the copy's own rl.iterations
    (what rl-iter added)."""
    params = yaml.safe_load((project / PARAMS_FILE).read_text())
    for overlay in (recipe, *extra):
        params = merge(params, yaml.safe_load(overlay.read_text()))
    params["rl"]["iterations"] = iterations
    return params


def sync_copy(project: Path, copy: Path, recipe: Path, vllm_venv: Path, extra: Sequence[Path] = ()) -> dict:
    """Bring the copy up to date with the project's files (tracked, and new ones git does not ignore) and the recipe;
    returns its params."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=project,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if name in ("dvc.lock", PARAMS_FILE) or Path(name).parts[0] in (DATA_DIR.name, METRICS_DIR.name):
            continue
        source, target = project / name, copy / name
        if source.is_file() and (not target.is_file() or target.read_bytes() != source.read_bytes()):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    params_path = copy / PARAMS_FILE
    iterations = (yaml.safe_load(params_path.read_text())["rl"].get("iterations") or {}) if params_path.exists() else {}
    params = recipe_params(project, recipe, iterations, extra)
    text = yaml.safe_dump(params, sort_keys=False)
    if not params_path.exists() or params_path.read_text() != text:
        params_path.write_text(text)
    link = copy / ".venv-vllm"
    if not link.exists():
        link.symlink_to(vllm_venv.resolve())
    if not (copy / ".git").exists():
        for command in (
            ["git", "init", "-q"],
            ["git", "add", "-A"],
            [
                "git",
                "-c",
                "user.name=demo",
                "-c",
                "user.email=demo@localhost",
                "commit",
                "-qm",
                "the project with params.rl-real.yaml",
            ],
        ):
            _run(command, copy)
    return params


def _run(command: list[str], cwd: Path, env: dict | None = None) -> None:
    if subprocess.run(command, cwd=cwd, env=env, check=False).returncode != 0:
        raise UserError(f"{cwd}: `{' '.join(command)}` failed (its error is above)")


def server_port(params: dict) -> int:
    """The port of the recipe's agent URL (the server must listen where the DVC params say)."""
    url = params["agents"][params["rl"]["collect"]["agent_name"]]["url"]
    port = urlsplit(url).port
    if port is None:
        raise UserError(f"{RECIPE}: the agent's url {url!r} names no port")
    return port


def reload_adapters(copy: Path, python: str, params: dict) -> None:
    """Load every adapter an earlier run trained into the new server (rl_collect and rl_eval ask for them by name)."""
    for key in sorted(params["rl"]["iterations"]):
        if (copy / CHECKPOINT_DIR / f"iter_{key}" / "adapter_config.json").is_file():
            _run([python, "scripts/rl.py", "update", "--iteration", key], copy)


def base_eval(copy: Path, python: str, params: dict) -> list[dict]:
    """The base model measured as rl_eval measures each checkpoint (same prompts, sampling and seed)."""
    evaluation, agent_name = params["rl"]["eval"], params["rl"]["collect"]["agent_name"]
    out = copy / RL_BASE_EVAL
    if not out.exists():
        arguments = [
            f"+agent_name={agent_name}",
            f"+input_jsonl_fpath={evaluation['prompts']}",
            f"+output_jsonl_fpath={RL_BASE_EVAL}",
            f"+num_repeats={evaluation['num_repeats']}",
            f"+seed={evaluation['seed']}",
            "+num_samples_in_parallel=8",
            "--no-progress",
        ]
        arguments += [
            f"+responses_create_params.{key}={evaluation[key]}" for key in ("temperature", "top_p", "max_output_tokens")
        ]
        _run([python, "scripts/collect.py", *arguments], copy)
    return list(read_records(out))


def noise_band(records: list[dict]) -> tuple[float, float]:
    """(mean reward, half-width of its 95% band): 1.96 standard errors over the prompts' mean rewards, since a
    prompt's repeats are not independent of each other."""
    by_prompt: dict[object, list[float]] = {}
    for record in records:
        by_prompt.setdefault(record["task_index"], []).append(float(record["reward"]))
    means = [sum(r) / len(r) for r in by_prompt.values()]
    mean = sum(means) / len(means)
    variance = sum((m - mean) ** 2 for m in means) / max(len(means) - 1, 1)
    return mean, 1.96 * math.sqrt(variance / len(means))


def run_demo(vllm_venv: Path, iterations: int, copy: Path, also: Sequence[Path] = ()) -> None:
    """Bring the loop in `copy` up to iteration `iterations` against a vLLM of the tier in `vllm_venv`, with the
    recipe and then each of `also` merged into its params; print the base model's eval and the wall time."""
    server_python = str(vllm_venv / "bin" / "python")
    if not Path(server_python).exists():
        raise UserError(f"{vllm_venv}: no vLLM tier here (run `make setup-vllm`)")
    copy.mkdir(parents=True, exist_ok=True)
    params = sync_copy(ROOT, copy, ROOT / RECIPE, vllm_venv, also)
    python = sys.executable
    venv = Path(python).parent.parent
    started = time.monotonic()
    with running(vllm_server(server_python, lora=True, port=server_port(params))) as server:
        print(
            f"vLLM serving SmolLM2-135M at {server.url} (log: {server.log_path}); the loop runs in {copy}", flush=True
        )
        reload_adapters(copy, python, params)
        env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        held_out = Path(params["rl"]["eval"]["prompts"]).stem
        if held_out in params["prompts"]["sets"]:  # the base model's eval needs them before any iteration runs
            _run([str(venv / "bin" / "dvc"), "repro", f"prompts@{held_out}"], copy, env)
        base = base_eval(copy, python, params)
        mean, band = noise_band(base)
        print(f"base model (checkpoint 000), evaluated as rl_eval: eval_reward {mean:.3f} +- {band:.3f}", flush=True)
        _run(
            [
                "make",
                "--no-print-directory",
                "-o",
                str(venv / ".installed"),
                "rl-iter",
                f"N={iterations}",
                f"VENV={venv}",
            ],
            copy,
            env,
        )
    # Only the RL loop's page: the demo collects no objectives, so the full report has nothing else to draw.
    _run([python, "scripts/report.py", "--rl-loop-only", "--out", "reports"], copy)
    print(
        f"\nbase model (checkpoint 000), evaluated as rl_eval: eval_reward {mean:.3f} +- {band:.3f} "
        f"(95% band over {len({r['task_index'] for r in base})} held-out prompts)"
    )
    print(f"demo wall time: {time.monotonic() - started:.0f} s (the per-iteration files are in {copy})")
