"""The RL loop's real-model recipe (params.rl-real.yaml) end to end: `make rl-iter` over real DVC in a copy of the
project, against the session's genuine vLLM, with the LoRA trainer and runtime LoRA loading.

Tiny settings (3 prompts x 4 repeats, 32 tokens, 2 gradient steps, 2 iterations): the mechanics, not learning. The
trainer of iteration 2 is killed once, mid-way (after its first of two gradient steps), and the loop resumed: that is how the one run covers both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from rollout_pipeline.rl.names import checkpoint_fingerprint
from rollout_pipeline.tooling.demo_rl_real import RECIPE, sync_copy
from rollout_pipeline.tooling.vllm_server import MODEL_NAME
from support import PY, ROOT, read_jsonl, wait_for

VENV = Path(PY).parent.parent
THRESHOLD = 1.1  # params.rl-real.yaml's rl.train.max_token_mult_prob_error


def _tiny(repo: Path, url: str, adapter_prefix: str) -> None:
    """The recipe shrunk to a few seconds of decoding, pointed at the session's server."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    agent = params["rl"]["collect"]["agent_name"]
    params["agents"][agent]["url"] = url
    params["prompts"]["sets"]["tiny"]["count"] = 3
    params["prompts"]["sets"]["tiny_heldout"]["count"] = 2
    rl = params["rl"]
    rl["collect"]["num_repeats"] = 4
    rl["collect"]["responses_create_params"]["max_output_tokens"] = 32
    rl["eval"].update(num_repeats=2, max_output_tokens=16)
    rl["train"]["steps"] = 2
    rl["update"]["url"] = f"{url}/v1/load_lora_adapter"
    rl["update"]["model"] = (
        adapter_prefix + "{iteration}"
    )  # names of this test's own, whatever the server loaded before
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _make_rl_iter(repo: Path, log: Path) -> subprocess.Popen:
    """`make rl-iter N=2` in `repo`, its output to `log` (a file: a pipe nobody reads while waiting could fill)."""
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    with open(log, "w") as handle:
        # -o: the virtualenv is the one running these tests, already set up; never reinstall it from the copy.
        return subprocess.Popen(
            ["make", "--no-print-directory", "-o", str(VENV / ".installed"), "rl-iter", "N=2", f"VENV={VENV}"],
            cwd=repo,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def _finish(process: subprocess.Popen, log: Path) -> tuple[int, str]:
    process.wait(timeout=900)
    return process.returncode, log.read_text()


def _run(repo: Path, log: Path) -> tuple[int, str]:
    return _finish(_make_rl_iter(repo, log), log)


def _stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def _trainer_of(repo: Path, out: str) -> int | None:
    """The PID of the LoRA trainer writing `out` in `repo`, once it runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == str(repo) and any(w.endswith(b"lora_trainer.py") for w in words) and out.encode() in words:
            return int(entry.name)
    return None


@pytest.fixture(scope="module")
def loop(vllm, vllm_python, tmp_path_factory):
    """`make rl-iter N=2` with iteration 2's trainer killed (SIGKILL) after its first gradient step, then again (resumed), then
    once more; with what the checkpoints folder held after the kill."""
    repo = tmp_path_factory.mktemp("rl_real")
    sync_copy(ROOT, repo, ROOT / RECIPE, Path(vllm_python).parent.parent)
    _tiny(repo, vllm.url, f"{MODEL_NAME}-test-{repo.name}-")
    logs = tmp_path_factory.mktemp("logs")
    first = _make_rl_iter(repo, logs / "killed.log")
    trainer: list[int | None] = [None]

    def trained_a_step_or_ended() -> bool:
        """Iteration 2's trainer has made its first gradient step (it says so), or make has ended."""
        log = (logs / "killed.log").read_text()
        if "lora_trainer: step 1/" in log.partition("Running stage 'rl_train@002'")[2]:
            trainer[0] = _trainer_of(repo, "data/rl/checkpoints/iter_002")
        return trainer[0] is not None or first.poll() is not None

    wait_for(trained_a_step_or_ended, timeout=1200, interval=0.2)
    assert trainer[0] is not None, (
        f"make rl-iter ended before iteration 2's trainer made a step:\n{_finish(first, logs / 'killed.log')}"
    )
    os.kill(trainer[0], signal.SIGKILL)
    killed = (*_finish(first, logs / "killed.log"), sorted(p.name for p in (repo / "data/rl/checkpoints").iterdir()))
    resumed = _run(repo, logs / "resumed.log")
    again = _run(repo, logs / "again.log")
    return repo, killed, resumed, again


def _metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / "rl" / name).read_text())


def test_a_killed_trainer_fails_its_stage_and_leaves_no_checkpoint_behind(loop):
    _, (code, output, checkpoints), _, _ = loop
    assert code != 0
    assert "rl.train.cmd: the command exited with status -9" in output, output[-3000:]
    assert checkpoints == ["iter_000", "iter_001"]  # no iter_002, whole or half-written


def test_the_resumed_loop_runs_the_killed_training_again_and_nothing_that_finished_before_the_kill(loop):
    _, (_, killed, _), (code, output), _ = loop
    assert code == 0, output[-3000:]
    finished = set(_stages_run(killed)) - {"rl_train@002"}
    resumed = set(_stages_run(output))
    assert "rl_train@002" in resumed and not resumed & finished, (resumed, finished)
    assert {"rl_init", "rl_collect@001", "rl_train@001", "rl_collect@002"} <= finished


def test_a_second_make_rl_iter_runs_nothing(loop):
    _, _, _, (code, output) = loop
    assert code == 0, output[-3000:]
    assert _stages_run(output) == [], output[-3000:]


def test_each_adapter_is_loaded_into_the_server_and_served_under_its_new_name(loop, vllm):
    repo = loop[0]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    served = {m["id"]: m for m in requests.get(f"{vllm.url}/v1/models", timeout=60).json()["data"]}
    for key in ("001", "002"):
        name = params["rl"]["update"]["model"].format(iteration=key)
        assert name in served, sorted(served)
        assert served[name]["root"] == str((repo / f"data/rl/checkpoints/iter_{key}").resolve())
        evaluated = read_jsonl(repo / f"data/rl/eval/iter_{key}.jsonl")
        assert evaluated and all(r["policy_version"]["model"] == name for r in evaluated)


def test_iteration_2_was_sampled_by_checkpoint_001_and_iteration_1_by_the_base_model(loop):
    repo = loop[0]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    first, second = (read_jsonl(repo / f"data/rl/rl_iter_{key}.jsonl") for key in ("001", "002"))
    assert len(first) == len(second) == 3 * 4
    base = checkpoint_fingerprint(repo / "data/rl/checkpoints/iter_000")
    assert {json.dumps(r["policy_version"]) for r in first} == {json.dumps({"model": MODEL_NAME, "checkpoint": base})}
    adapter = {
        "model": params["rl"]["update"]["model"].format(iteration="001"),
        "checkpoint": checkpoint_fingerprint(repo / "data/rl/checkpoints/iter_001"),
    }
    assert {json.dumps(r["policy_version"]) for r in second} == {json.dumps(adapter)}


def test_the_trainer_and_the_server_agree_on_what_was_sampled_in_both_iterations(loop):
    repo = loop[0]
    for key in ("001", "002"):
        check = _metrics(repo, f"train_{key}.json")["on_policy"]
        assert check["passed"] and 1 <= check["token_mult_prob_error"] < THRESHOLD, (key, check)
        print(f"on-policy, iteration {key}: {check}")
    with open(repo / "metrics/rl_progress.csv") as handle:
        header, *rows = handle.read().splitlines()
    assert "token_mult_prob_error" in header.split(",") and len(rows) == 2
