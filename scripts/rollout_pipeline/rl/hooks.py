"""The RL loop's configured commands: the initial checkpoint, the train command and the update hook.

- `rl.train.cmd` is a template (placeholders {rollouts} {init} {out} {iteration} {prev} {python} {metrics} and
  rl.train's settings: {lr} {steps} {base} {clip} {lora_rank} {lora_alpha} {divide_by_std} {seed}
  {max_token_mult_prob_error}); it is split like a shell would split it (shlex) and run WITHOUT a shell, each word
  formatted on its own, so paths with spaces stay one argument. A leading `python` is the
  interpreter running the stage (the project's virtualenv), whatever PATH says.
- `rl.update` tells a real server to load the checkpoint just trained: `cmd` (a template with
  {checkpoint} {model} {iteration}, run the same way) and/or `url` (a POST of `body`, a JSON object
  whose string values are templates; default {"model", "checkpoint", "iteration"}). Both null = nothing
  to do, as for the embedded server, which reads the checkpoint file named by the model on each request.
  `rl.update.timeout_s` is a deadline for the whole exchange (a server trickling its answer cannot stretch it),
  and a redirect is an error, not followed (a POST would become a GET, perhaps to another host).
Every failure is a one-line error that names the setting to fix.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import orjson
import requests

from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import write_json
from rollout_pipeline.reference.checkpoints import REFERENCE_NAME, REFERENCE_PATH
from rollout_pipeline.rl.names import (
    INIT_KEY,
    INIT_RECORD,
    checkpoint_fingerprint,
    checkpoint_path,
    model_name,
    rollouts_path,
    train_metrics_path,
)
from rollout_pipeline.rl.schedule import iteration_entry
from rollout_pipeline.settings import TRAIN_SETTINGS

DEFAULT_UPDATE_BODY = {"model": "{model}", "checkpoint": "{checkpoint}", "iteration": "{iteration}"}


def command_argv(template: str, values: dict[str, str], setting: str) -> list[str]:
    """shlex-split `template`, then format each word with `values`; `python` first -> this interpreter."""
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise UserError(f"{setting}: cannot split the command ({exc})") from None
    if not words:
        raise UserError(f"{setting}: the command is empty")
    try:
        argv = [word.format(**values) for word in words]
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(
            f"{setting}: bad placeholder ({exc}); placeholders: " + ", ".join("{" + k + "}" for k in values)
        ) from None
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def _run(argv: list[str], setting: str) -> None:
    print(f"$ {shlex.join(argv)}", flush=True)
    try:
        result = subprocess.run(argv, check=False)
    except FileNotFoundError:
        raise UserError(f"{setting}: command not found: {argv[0]}") from None
    except PermissionError:
        raise UserError(f"{setting}: not executable: {argv[0]}") from None
    if result.returncode != 0:
        raise UserError(f"{setting}: the command exited with status {result.returncode}: {shlex.join(argv)}")


def init_checkpoint(params: dict) -> Path:
    """rl_init: copy rl.init ('reference' = the shipped checkpoint, or a file or directory) to iteration 000,
    and record where it came from in metrics/rl/init.json."""
    source_name = params["rl"]["init"]
    source = REFERENCE_PATH if source_name == REFERENCE_NAME else Path(source_name)
    target = checkpoint_path(INIT_KEY)
    if not source.exists():
        raise UserError(
            f"rl.init: {source} does not exist (use 'reference' for the shipped reference checkpoint, "
            "or the path of your initial checkpoint)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        copy = staging / target.name
        if source.is_dir():
            shutil.copytree(source, copy)
        else:
            shutil.copyfile(source, copy)
        if target.is_dir():
            shutil.rmtree(target)
        copy.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(
        INIT_RECORD, {"init": source_name, "checkpoint": str(target), "fingerprint": checkpoint_fingerprint(target)}
    )
    return target


def _placeholder(value: object) -> str:
    """A setting as one command-line word: true/false for a flag, a float's shortest exact form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def train_values(params: dict, key: str) -> dict[str, str]:
    """What the placeholders of rl.train.cmd stand for, for iteration `key`."""
    train = params["rl"]["train"]
    prev = iteration_entry(params, key)["prev"]
    settings = {name: _placeholder(train[name]) for name in TRAIN_SETTINGS}
    return {
        "rollouts": str(rollouts_path(key)),
        "init": str(checkpoint_path(prev)),
        "out": str(checkpoint_path(key)),
        "iteration": key,
        "prev": prev,
        "python": sys.executable,
        "metrics": str(train_metrics_path(key)),
        **settings,
    }


def run_train(params: dict, key: str) -> Path:
    """rl_train@key: run the configured train command, check it wrote its checkpoint, then the update hook.

    The trainer may report on the run in {metrics} (the LoRA trainer: its on-policy check and losses); a trainer
    that does not gets a file naming the checkpoint, so the stage's metrics output always exists."""
    values = train_values(params, key)
    out, metrics = Path(values["out"]), Path(values["metrics"])
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics.unlink(missing_ok=True)  # a report left by an earlier run never passes for this one's
    _run(command_argv(params["rl"]["train"]["cmd"], values, "rl.train.cmd"), "rl.train.cmd")
    if not out.exists():
        raise UserError(f"rl.train.cmd: the command succeeded but wrote nothing at {out} (pass it {{out}})")
    if not metrics.exists():
        write_json(metrics, {"checkpoint": str(out), "fingerprint": checkpoint_fingerprint(out)})
    run_update(params, key)
    return out


def run_update(params: dict, key: str) -> None:
    """Tell the server to load checkpoint `key` (rl.update.cmd, then rl.update.url); nothing when both are null."""
    update = params["rl"]["update"]
    if update["cmd"] is None and update["url"] is None:
        return
    values = {
        "checkpoint": str(checkpoint_path(key).resolve()),
        "model": model_name(params["rl"], key),
        "iteration": key,
    }
    retry = f"fix it and run `python scripts/rl.py update --iteration {key}` (the checkpoint is written)"
    if update["cmd"] is not None:
        try:
            _run(command_argv(update["cmd"], values, "rl.update.cmd"), "rl.update.cmd")
        except UserError as exc:
            raise UserError(f"{exc}; {retry}") from None
    if update["url"] is not None:
        _post_update(update, values, retry)


def _post_update(update: dict, values: dict[str, str], retry: str) -> None:
    template = update.get("body") or DEFAULT_UPDATE_BODY
    try:
        body = {k: v.format(**values) if isinstance(v, str) else v for k, v in template.items()}
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(
            f"rl.update.body: bad placeholder ({exc}); placeholders: {{checkpoint}}, {{model}}, {{iteration}}"
        ) from None
    print(f"POST {update['url']} {orjson.dumps(body).decode()}", flush=True)
    outcome = _post_within(update["url"], orjson.dumps(body), update["timeout_s"])
    if outcome is None:
        raise UserError(
            f"rl.update.url: {update['url']} gave no complete answer within {update['timeout_s']:g} s "
            f"(rl.update.timeout_s); {retry}"
        )
    if isinstance(outcome, requests.RequestException):
        reason = " ".join(str(outcome).split())[:300]
        raise UserError(f"rl.update.url: cannot reach {update['url']} ({reason}); {retry}")
    status, location, detail = outcome
    if 300 <= status < 400:
        raise UserError(
            f"rl.update.url: {update['url']} answered HTTP {status} (a redirect to {location or '?'}), "
            f"which is not followed; set rl.update.url to the final address; {retry}"
        )
    if status >= 400:
        text = " ".join(detail.decode("utf-8", "replace").split())[:300]
        raise UserError(f"rl.update.url: {update['url']} answered HTTP {status} ({text or 'no message'}); {retry}")


_MAX_ANSWER_BYTES = 1 << 20


def _post_within(url: str, body: bytes, deadline_s: float) -> tuple[int, str, bytes] | Exception | None:
    """POST and read the whole answer within `deadline_s` in all: (status, Location, the answer's start), the
    requests error, or None past the deadline. requests' own timeout bounds each read, not the exchange, so the
    exchange runs in a daemon thread that the stage leaves behind when it gives up (it exits right after)."""
    outcome: list = []

    def post() -> None:
        try:
            with requests.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=deadline_s,
                allow_redirects=False,
                stream=True,
            ) as response:
                kept, size = [], 0
                for chunk in response.iter_content(1 << 14):
                    size += len(chunk)
                    if size <= _MAX_ANSWER_BYTES:
                        kept.append(chunk)
                outcome.append((response.status_code, response.headers.get("Location", ""), b"".join(kept)))
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=post, name="rl-update", daemon=True)
    thread.start()
    thread.join(deadline_s)
    return outcome[0] if outcome else None
