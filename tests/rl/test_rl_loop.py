"""The RL loop: the trainer on synthetic rollouts, the schedule and params.yaml editing, the configured
commands, and `make rl-iter` end to end -- real make, real DVC, real embedded server -- in a copy of the repo."""

from __future__ import annotations

import csv
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from dvc_testkit import stages_run
from rollout_pipeline.errors import UserError
from rollout_pipeline.params import validate_params
from rollout_pipeline.reference import policy
from rollout_pipeline.reference.checkpoints import REFERENCE_PATH, load_checkpoint, reference_checkpoint
from rollout_pipeline.rl.hooks import command_argv, run_train, run_update
from rollout_pipeline.rl.loop import extend_params
from rollout_pipeline.rl.names import checkpoint_fingerprint, model_name
from rollout_pipeline.rl.progress import format_table, progress_csv, progress_rows
from rollout_pipeline.rl.schedule import scheduled_entry, scheduled_temperature
from rollout_pipeline.rl.trainer import correct_probability, read_batch, train
from rollout_pipeline.stages.prompt_sets import generate_rows
from support import ROOT, agent, write_params

VENV = Path(sys.prefix)
EASY = "What is 37 + 48? Give the final answer in \\boxed{}."
HARD = "What is (85 - 37) × 6 + 125? Give the final answer in \\boxed{}."


# ---- the trainer, on synthetic rollouts --------------------------------------------------------


def rollout(
    task: int,
    index: int,
    prompt: str,
    kind: str | None,
    reward: float,
    temperature: float = 0.8,
    output: str | None = None,
) -> dict:
    text = output if output is not None else policy.candidate_texts(prompt)[kind]
    return {
        "prompt_id": f"p{task}",
        "task_index": task,
        "rollout_index": index,
        "input": [{"role": "user", "content": prompt}],
        "output": text,
        "reward": reward,
        "responses_create_params": {"temperature": temperature, "top_p": 0.95},
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_gradient_moves_probability_toward_the_rewarded_kind_and_away_from_the_others(tmp_path):
    records = [
        rollout(0, 0, HARD, "correct", 1.0),
        rollout(0, 1, HARD, "off_by_one", 0.0),
        rollout(0, 2, HARD, "carry_slip", 0.0),
        rollout(0, 3, HARD, "correct", 1.0),
    ]
    batch = read_batch(write_jsonl(tmp_path / "r.jsonl", records))
    start = reference_checkpoint()
    trained = train(batch, start, lr=0.5, steps=5)
    before = policy.candidate_probabilities(HARD, start, 1.0)
    after = policy.candidate_probabilities(HARD, trained, 1.0)
    assert after["correct"] > before["correct"] + 0.05
    assert after["off_by_one"] < before["off_by_one"] and after["carry_slip"] < before["carry_slip"]
    assert trained.classes["easy"] == start.classes["easy"], "only the class that was sampled moves"
    assert start.classes == reference_checkpoint().classes, "the initial checkpoint object is not modified"


def test_the_direction_follows_the_reward_not_the_kind(tmp_path):
    # A verifier that rewards off_by_one: the update must raise off_by_one and lower correct.
    records = [
        rollout(0, i, EASY, kind, float(kind == "off_by_one"))
        for i, kind in enumerate(["correct", "off_by_one", "correct", "off_by_one"])
    ]
    batch = read_batch(write_jsonl(tmp_path / "r.jsonl", records))
    trained = train(batch, reference_checkpoint(), lr=0.5, steps=5)
    after = policy.candidate_probabilities(EASY, trained, 1.0)
    before = policy.candidate_probabilities(EASY, reference_checkpoint(), 1.0)
    assert after["off_by_one"] > before["off_by_one"] and after["correct"] < before["correct"]


def test_groups_without_reward_variance_and_unusable_rollouts_leave_the_logits_alone(tmp_path):
    records = [
        rollout(0, 0, HARD, "correct", 1.0),
        rollout(0, 1, HARD, "correct", 1.0),  # tied group
        rollout(1, 0, EASY, "correct", 1.0, temperature=0.0),  # greedy
        rollout(1, 1, EASY, None, 0.0, output="something the policy never says"),
    ]  # foreign text
    batch = read_batch(write_jsonl(tmp_path / "r.jsonl", records))
    assert batch.zero_variance_prompts == 1
    assert dict(batch.skipped) == {"greedy": 1, "unclassified_output": 1}
    assert train(batch, reference_checkpoint(), lr=1.0, steps=3).classes == reference_checkpoint().classes


def test_the_trainer_script_writes_a_valid_checkpoint_atomically_and_deterministically(tmp_path):
    rows = generate_rows(30, "mixed", seed=5)
    records = []
    for task, row in enumerate(rows):
        prompt = row["responses_create_params"]["input"][0]["content"]
        for index, sample in enumerate(policy.sample(prompt, reference_checkpoint(), temperature=0.9, n=4, seed=task)):
            records.append(rollout(task, index, prompt, None, float(sample.kind == "correct"), 0.9, sample.text))
    rollouts = write_jsonl(tmp_path / "rollouts.jsonl", records)
    outputs = []
    for name in ("a", "b"):
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts/train.py"),
                "--rollouts",
                str(rollouts),
                "--init",
                str(REFERENCE_PATH),
                "--out",
                str(tmp_path / name),
                "--lr",
                "0.3",
                "--steps",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    trained = load_checkpoint(tmp_path / "a")
    for difficulty in policy.DIFFICULTY_CLASSES:
        assert correct_probability(trained, difficulty) > correct_probability(reference_checkpoint(), difficulty)
    assert trained.meta["trainer"]["used"] == len(records) and trained.meta["parent"] == REFERENCE_PATH.name
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temp files left behind"


# ---- schedule, params.yaml ------------------------------------------------------------------------


def test_temperature_annealing_shapes():
    spec = {"start": 0.9, "end": 0.3, "over": 10}
    linear = [scheduled_temperature({**spec, "shape": "linear"}, k) for k in range(1, 13)]
    assert linear[0] == 0.9 and linear[9] == 0.3 and linear[11] == 0.3 and linear[4] == pytest.approx(0.633)
    for shape in ("cosine", "exponential"):
        values = [scheduled_temperature({**spec, "shape": shape}, k) for k in range(1, 11)]
        assert values[0] == 0.9 and values[-1] == 0.3 and values == sorted(values, reverse=True)
    cosine = [scheduled_temperature({**spec, "shape": "cosine"}, k) for k in (1, 2, 5, 6)]
    assert cosine[0] - cosine[1] < 0.05 < cosine[2] - cosine[3], "cosine: slow at the ends, fast in the middle"
    expo = [scheduled_temperature({**spec, "shape": "exponential"}, k) for k in (1, 2, 9, 10)]
    assert expo[1] / expo[0] == pytest.approx(expo[3] / expo[2], abs=0.01), "exponential: a constant ratio"


def rl_params(tmp_path: Path, **rl) -> Path:
    return write_params(tmp_path, {"math_agent": agent()}, {}, rl={"collect": {"agent_name": "math_agent"}, **rl})


def test_extend_adds_missing_iterations_from_the_schedule_and_keeps_the_file_otherwise_byte_identical(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    original = (tmp_path / "params.yaml").read_text()
    assert extend_params(tmp_path / "params.yaml", 3) == ["001", "002", "003"]
    text = (tmp_path / "params.yaml").read_text()
    assert text.startswith(original.split("  iterations: {}")[0]), "every comment and key before the entries is kept"
    assert '    "002": {prev: "001", temperature: 0.833, prompts: data/prompts/mixed.jsonl, seed: 202}\n' in text
    # Existing entries are never rewritten, even after the schedule changes; gaps are filled in order.
    edited = text.replace("temperature: 0.833", "temperature: 0.5").replace("start: 0.9", "start: 1.0")
    edited = re.sub(r'    "003": .*\n', "", edited)
    (tmp_path / "params.yaml").write_text(edited)
    assert extend_params(tmp_path / "params.yaml", 4) == ["003", "004"]
    entries = yaml.safe_load((tmp_path / "params.yaml").read_text())["rl"]["iterations"]
    assert list(entries) == ["001", "002", "003", "004"]
    assert entries["002"]["temperature"] == 0.5 and entries["001"]["temperature"] == 0.9
    assert entries["003"]["temperature"] == pytest.approx(1.0 - 0.7 * 2 / 9, abs=1e-3)
    before = (tmp_path / "params.yaml").stat().st_mtime_ns
    assert extend_params(tmp_path / "params.yaml", 4) == [] and (tmp_path / "params.yaml").stat().st_mtime_ns == before


def test_curriculum_phases_pick_the_prompt_file_per_iteration(tmp_path):
    params = validate_params(
        yaml.safe_load(
            rl_params(
                tmp_path,
                schedule={"curriculum": [{"from": 1, "prompts": "easy.jsonl"}, {"from": 4, "prompts": "hard.jsonl"}]},
            ).read_text()
        )
    )
    assert [scheduled_entry(params["rl"], k)["prompts"] for k in range(1, 7)] == ["easy.jsonl"] * 3 + ["hard.jsonl"] * 3


@pytest.mark.parametrize(
    "rl, message",
    [
        ({"trian": {}}, "rl.trian: unknown key (did you mean 'train'?)"),
        ({"train": {"cmd": "python t.py --out {output}"}}, "unknown placeholder {output} (did you mean 'out'?)"),
        ({"schedule": {"temperature": {"shape": "cosin"}}}, "(did you mean 'cosine'?)"),
        (
            {"iterations": {4: {"prev": "003", "temperature": 0.5, "prompts": "p.jsonl"}}},
            'iterations are three digits in quotes, like "004"',
        ),
        (
            {"iterations": {"001": {"prev": "000", "temperature": 0.5, "prompts": "p.jsonl", "temprature": 1}}},
            "rl.iterations.001.temprature: unknown key (did you mean 'temperature'?)",
        ),
        (
            {"iterations": {"002": {"prev": "001", "temperature": 0.5, "prompts": "p.jsonl"}}},
            "rl.iterations.002.prev: no iteration '001'",
        ),
        ({"collect": {"agent_name": "math_agnt"}}, "unknown agent 'math_agnt' (did you mean 'math_agent'?)"),
        (
            {"collect": {"agent_name": "math_agent", "responses_create_params": {"temperature": 0.5}}},
            "the temperature is set per iteration",
        ),
        (
            {"schedule": {"curriculum": [{"from": 2, "prompts": "p.jsonl"}]}},
            "the first phase must start at iteration 1",
        ),
    ],
)
def test_rl_params_are_validated_with_the_key_and_a_suggestion(tmp_path, rl, message):
    raw = {
        "agents": {"math_agent": {"url": "embedded"}},
        "objectives": {},
        "rl": {"collect": {"agent_name": "math_agent"}},
    }
    raw["rl"].update(rl)
    with pytest.raises(UserError, match=re.escape(message)):
        validate_params(raw)


# ---- the configured commands -----------------------------------------------------------------------


def loop_params(tmp_path: Path, **rl) -> dict:
    rl.setdefault("iterations", {"001": {"prev": "000", "temperature": 0.8, "prompts": "p.jsonl"}})
    return validate_params(yaml.safe_load(rl_params(tmp_path, **rl).read_text()))


FAKE_TRAINER = (
    "import sys, pathlib; args = dict(zip(sys.argv[1::2], sys.argv[2::2])); "
    "pathlib.Path(args['--out']).write_text(repr(args))"
)


def test_the_train_stage_runs_the_configured_command_with_its_placeholders_and_no_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = f'python -c "{FAKE_TRAINER}" --in {{rollouts}} --init {{init}} --out {{out}} --it {{iteration}} --x "$HOME;"'
    run_train(loop_params(tmp_path, train={"cmd": cmd, "lr": 0.2}), "001")
    written = eval((tmp_path / "data/rl/checkpoints/iter_001").read_text())  # the fake trainer's argv
    assert written == {
        "--in": "data/rl/rl_iter_001.jsonl",
        "--init": "data/rl/checkpoints/iter_000",
        "--out": "data/rl/checkpoints/iter_001",
        "--it": "001",
        "--x": "$HOME;",
    }
    assert command_argv("python x.py {lr}", {"lr": "0.2"}, "s") == [sys.executable, "x.py", "0.2"]


def test_every_train_setting_is_a_placeholder_and_the_stage_always_leaves_its_metrics_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = (
        f'python -c "{FAKE_TRAINER}" --out {{out}} --metrics {{metrics}} --base {{base}} --clip {{clip}} '
        "--rank {lora_rank} --alpha {lora_alpha} --std {divide_by_std} --seed {seed} "
        "--max {max_token_mult_prob_error} --steps {steps}"
    )
    train = {
        "cmd": cmd,
        "base": "models/base",
        "clip": 0.3,
        "lora_rank": 4,
        "lora_alpha": 8.0,
        "divide_by_std": True,
        "seed": 7,
        "max_token_mult_prob_error": 1.05,
        "steps": 2,
    }
    stale = tmp_path / "metrics/rl/train_001.json"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"on_policy": {"token_mult_prob_error": 9}}')  # an earlier run's: never this run's
    run_train(loop_params(tmp_path, train=train), "001")
    written = eval((tmp_path / "data/rl/checkpoints/iter_001").read_text())
    assert written == {
        "--out": "data/rl/checkpoints/iter_001",
        "--metrics": "metrics/rl/train_001.json",
        "--base": "models/base",
        "--clip": "0.3",
        "--rank": "4",
        "--alpha": "8.0",
        "--std": "true",
        "--seed": "7",
        "--max": "1.05",
        "--steps": "2",
    }
    # This trainer reports nothing, so the stage names the checkpoint it trained.
    assert json.loads(stale.read_text()) == {
        "checkpoint": "data/rl/checkpoints/iter_001",
        "fingerprint": checkpoint_fingerprint(Path("data/rl/checkpoints/iter_001")),
    }


def test_checkpoint_000_is_asked_for_by_init_model_when_the_server_calls_the_base_model_otherwise(tmp_path):
    params = loop_params(
        tmp_path,
        update={"model": "policy-{iteration}", "init_model": "base-model"},
        collect={"agent_name": "math_agent"},
    )
    assert model_name(params["rl"], "000") == "base-model"
    assert model_name(params["rl"], "001") == "policy-001"
    assert model_name(loop_params(tmp_path)["rl"], "000") == "iter_000"


def test_the_progress_table_carries_the_on_policy_error_a_trainer_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = loop_params(tmp_path)
    (tmp_path / "metrics/rl").mkdir(parents=True)
    (tmp_path / "metrics/rl/iter_001.json").write_text('{"reward_mean": 0.25, "pass@1": 0.25}')
    rows = progress_rows(params, missing_ok=True)
    assert rows[0]["token_mult_prob_error"] is None and "on_policy_err" not in format_table(rows)
    (tmp_path / "metrics/rl/train_001.json").write_text(
        '{"on_policy": {"token_mult_prob_error": 1.0345, "max_abs_logp_error": 0.2}}'
    )
    rows = progress_rows(params, missing_ok=True)
    assert (rows[0]["token_mult_prob_error"], rows[0]["max_abs_logp_error"]) == (1.0345, 0.2)
    assert "on_policy_err" in format_table(rows) and "1.034" in format_table(rows)
    assert progress_csv(rows).splitlines()[0].endswith(",token_mult_prob_error,max_abs_logp_error")


@pytest.mark.parametrize(
    "cmd, message",
    [
        ("python -c 'import sys; sys.exit(3)'", "rl.train.cmd: the command exited with status 3"),
        ("python -c pass", "rl.train.cmd: the command succeeded but wrote nothing at data/rl/checkpoints/iter_001"),
        ("no-such-trainer --out {out}", "rl.train.cmd: command not found: no-such-trainer"),
    ],
)
def test_a_failing_train_command_is_a_clear_error(tmp_path, monkeypatch, cmd, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=re.escape(message)):
        run_train(loop_params(tmp_path, train={"cmd": cmd}), "001")


def test_the_update_hook_runs_its_command_and_posts_to_its_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200 if len(received) == 1 else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1/load_lora_adapter"
        write_args = "import sys, pathlib; pathlib.Path('hook.txt').write_text(' '.join(sys.argv[1:]))"
        hook = f'python -c "{write_args}" {{model}} {{checkpoint}}'
        params = loop_params(
            tmp_path,
            update={
                "model": "policy-{iteration}",
                "cmd": hook,
                "url": url,
                "body": {"lora_name": "{model}", "lora_path": "{checkpoint}"},
            },
        )
        run_update(params, "001")
        checkpoint = str((tmp_path / "data/rl/checkpoints/iter_001").resolve())
        assert (tmp_path / "hook.txt").read_text() == f"policy-001 {checkpoint}"
        assert received == [{"lora_name": "policy-001", "lora_path": checkpoint}]
        retry = r"rl.update.url: .* answered HTTP 503.*scripts/rl.py update --iteration 001"
        with pytest.raises(UserError, match=retry):
            run_update(params, "001")
    finally:
        server.shutdown()
        server.server_close()


class _RawServer:
    """A loopback server that answers every connection with `answer(socket)`: anything an HTTP server can do."""

    def __init__(self, answer) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1/load_lora_adapter"
        self.connections = 0
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                connection.recv(65536)
                try:
                    self.answer(connection)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def _trickle(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        connection.sendall(b" ")
        time.sleep(0.2)


def test_an_update_url_that_trickles_its_answer_fails_at_the_deadline_not_per_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = _RawServer(_trickle)
    try:
        params = loop_params(tmp_path, update={"url": server.url, "timeout_s": 1.0})
        started = time.monotonic()
        with pytest.raises(
            UserError,
            match=r"rl.update.url: .* gave no complete answer within 1 s "
            r"\(rl.update.timeout_s\); fix it and run",
        ):
            run_update(params, "001")
        assert time.monotonic() - started < 3  # the trickle lasts 20 s; each read takes 0.2 s
    finally:
        server.close()


def test_an_update_url_that_redirects_to_another_host_is_an_error_and_is_not_followed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = _RawServer(lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    redirect = _RawServer(
        lambda c: c.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: " + elsewhere.url.encode() + b"\r\nContent-Length: 0\r\n\r\n"
        )
    )
    try:
        params = loop_params(tmp_path, update={"url": redirect.url})
        with pytest.raises(
            UserError,
            match=r"answered HTTP 302 \(a redirect to http://127.0.0.1:\d+/v1/"
            r"load_lora_adapter\), which is not followed",
        ):
            run_update(params, "001")
        assert elsewhere.connections == 0
    finally:
        redirect.close()
        elsewhere.close()


def test_collect_settings_ask_for_the_previous_checkpoint_and_a_retrained_one_is_never_resumed(tmp_path, monkeypatch):
    from rollout_pipeline.cli.collect import settings_from_rl_iteration

    monkeypatch.chdir(tmp_path)
    entry = {"prev": "000", "temperature": 0.7, "prompts": "p.jsonl", "seed": 7}
    params = rl_params(
        tmp_path,
        iterations={"001": entry},
        collect={"agent_name": "math_agent", "num_repeats": 4, "responses_create_params": {"top_p": 0.9}},
    )
    with pytest.raises(UserError, match=r"data/rl/checkpoints/iter_000: checkpoint missing .*`dvc repro rl_init`"):
        settings_from_rl_iteration("1", str(params), None)
    checkpoint = tmp_path / "data/rl/checkpoints/iter_000"
    checkpoint.parent.mkdir(parents=True)
    shutil.copy(REFERENCE_PATH, checkpoint)
    settings = settings_from_rl_iteration("1", str(params), None)
    assert (settings.agent.model, settings.agent.checkpoint_dir) == ("iter_000", str(checkpoint.parent))
    assert settings.output_path == Path("data/rl/rl_iter_001.jsonl") and settings.num_repeats == 4
    assert settings.responses_create_params == {"temperature": 0.7, "top_p": 0.9} and settings.seed == 7
    identity = settings.identity("sha")
    checkpoint.write_text(checkpoint.read_text().replace('"correct": 0.6', '"correct": 0.9'))
    assert settings_from_rl_iteration("1", str(params), None).identity("sha") != identity


# ---- make rl-iter, end to end in a copy of the repo -------------------------------------------------


def project_copy(destination: Path, **set_params) -> Path:
    """The project's files (tracked and new, not ignored) in a fresh git repo, with params.yaml keys set.

    dvc.lock stays behind: the RL stages do not need the main pipeline's entries, and DVC re-parses the
    whole lock file (pure-Python YAML) around every stage it runs."""
    from ruamel.yaml import YAML

    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and name != "dvc.lock" and not name.startswith(("data/rl/", "metrics/rl/")):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    handler = YAML()
    handler.preserve_quotes = True
    document = handler.load((destination / "params.yaml").read_text())
    for dotted, value in set_params.items():
        *parents, last = dotted.split("__")
        node = document
        for key in parents:
            node = node[key]
        node[last] = value
    document["rl"]["iterations"] = {}
    with open(destination / "params.yaml", "w") as handle:
        handler.dump(document, handle)
    git(destination, "init", "-q")
    commit(destination, "copy of the project")
    return destination


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def commit(cwd: Path, message: str) -> None:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-qm", message)


def run(cwd: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_rl_iter(cwd: Path, n: int | None) -> subprocess.CompletedProcess:
    # -o: the virtualenv is the one running these tests, already set up; never reinstall it from the copy.
    return run(
        cwd,
        "make",
        "--no-print-directory",
        "-o",
        str(VENV / ".installed"),
        "rl-iter",
        *([f"N={n}"] if n is not None else []),
        f"VENV={VENV}",
        check=n is not None,
    )


def progress_table(repo: Path) -> list[dict]:
    with open(repo / "metrics/rl_progress.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def rewards(repo: Path) -> list[float]:
    return [json.loads((repo / f"metrics/rl/iter_{k:03d}.json").read_text())["reward_mean"] for k in range(1, 6)]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """The shipped schedule (annealing, curriculum, trainer, lr, steps) on 60 prompts, run to iteration 5."""
    repo = project_copy(
        tmp_path_factory.mktemp("rl_repo"), prompts__sets__mixed__count=60, prompts__sets__heldout__count=60
    )
    return repo, make_rl_iter(repo, 5)


@pytest.mark.e2e
def test_make_rl_iter_5_learns_mean_reward_rises_by_at_least_0_1(loop):
    repo, _ = loop
    values = rewards(repo)
    steps = [b - a for a, b in zip(values, values[1:])]
    assert values[4] >= values[0] + 0.1, values
    assert sum(step > 0 for step in steps) >= 3 and min(steps) > -0.05, f"rises overall: {values}"
    # The rise is the trainer's doing, not only the annealing: the checkpoint itself got better on both classes.
    start = load_checkpoint(repo / "data/rl/checkpoints/iter_000")
    end = load_checkpoint(repo / "data/rl/checkpoints/iter_005")
    for difficulty in policy.DIFFICULTY_CLASSES:
        assert correct_probability(end, difficulty) > correct_probability(start, difficulty) + 0.05, difficulty
    table = progress_table(repo)
    assert len(table) == 5 and (table[4]["iteration"], table[4]["temperature"], table[4]["prompts"]) == (
        "5",
        "0.633",
        "mixed",
    )
    records = [json.loads(line) for line in (repo / "data/rl/rl_iter_003.jsonl").read_text().splitlines()]
    assert len(records) == 60 * 8 and {r["responses_create_params"]["temperature"] for r in records} == {0.767}
    assert {r["response"]["model"] for r in records} == {"iter_002"}, "iteration 3 collects with checkpoint 002"


@pytest.mark.e2e
def test_make_rl_iter_prints_like_the_seed(loop):
    repo, result = loop
    out = result.stdout
    for k in range(1, 6):
        banner, line = f"=== RL Iteration {k:03d} ===", f"Iteration {k:03d}: avg_reward={rewards(repo)[k - 1]:.3f}"
        assert banner in out and line in out and out.index(banner) < out.index(line)
    assert "Reward progression:" in out
    assert (
        '"005": {prev: "004", temperature: 0.633, prompts: data/prompts/mixed.jsonl, seed: 205}'
        in (repo / "params.yaml").read_text()
    )


@pytest.mark.e2e
def test_a_second_make_rl_iter_5_does_nothing(loop):
    repo, _ = loop
    params_before = (repo / "params.yaml").read_bytes()
    result = make_rl_iter(repo, 5)
    assert stages_run(result.stdout) == set() and "Data and pipelines are up to date." in result.stdout
    assert (repo / "params.yaml").read_bytes() == params_before


@pytest.mark.e2e
def test_changing_iteration_4_temperature_reruns_iterations_4_and_5_only(loop):
    repo, _ = loop
    commit(repo, "iterations 1-5")
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(
        params.replace('"004": {prev: "003", temperature: 0.7,', '"004": {prev: "003", temperature: 0.55,')
    )
    diff = run(repo, "dvc", "params", "diff", "--json").stdout
    changed = json.loads(diff)["params.yaml"]
    assert list(changed) == ["rl.iterations.004.temperature"], changed
    change = changed["rl.iterations.004.temperature"]
    assert (change["old"], change["new"]) == (0.7, 0.55)
    before = rewards(repo)
    result = make_rl_iter(repo, 5)
    assert stages_run(result.stdout) == {
        "rl_collect@004",
        "rl_metrics@004",
        "rl_train@004",
        "rl_eval@004",
        "rl_collect@005",
        "rl_metrics@005",
        "rl_train@005",
        "rl_eval@005",
        "rl_progress",
    }
    after = rewards(repo)
    assert after[:3] == before[:3] and after[3] != before[3]


def eval_rewards(repo: Path) -> list[float]:
    return [json.loads((repo / f"metrics/rl/eval_{k:03d}.json").read_text())["reward_mean"] for k in range(1, 6)]


@pytest.mark.e2e
def test_the_fixed_temperature_eval_measures_each_checkpoint_and_rises_with_training(loop):
    repo, _ = loop
    values = eval_rewards(repo)
    assert values[4] >= values[0] + 0.05, values
    table = progress_table(repo)
    assert [float(row["eval_reward_mean"]) for row in table] == values
    assert all(row["zero_variance_fraction"] != "" for row in table)
    records = [json.loads(line) for line in (repo / "data/rl/eval/iter_003.jsonl").read_text().splitlines()]
    assert len(records) == 60 * 4, "rl.eval: the 60 held-out prompts x num_repeats 4"
    assert {r["responses_create_params"]["temperature"] for r in records} == {1.0}
    assert {r["response"]["model"] for r in records} == {"iter_003"}, "eval 3 samples checkpoint 003 itself"


def _edit_params(repo: Path, old: str, new: str) -> tuple[list[str], set[str]]:
    """Replace `old` by `new` in the finished loop's params.yaml: the keys `dvc params diff` names and the stages
    `dvc status` finds stale upstream of rl_progress (what `dvc repro` would run first); the file is restored."""
    if git(repo, "status", "--porcelain"):  # the loop's results, committed once: params diff compares with HEAD
        commit(repo, f"before {new.strip()}")
    params = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(params.replace(old, new, 1))
        changed = list(json.loads(run(repo, "dvc", "params", "diff", "--json").stdout)["params.yaml"])
        return changed, set(json.loads(run(repo, "dvc", "status", "--json", "--with-deps", "rl_progress").stdout))
    finally:
        (repo / "params.yaml").write_text(params)


@pytest.mark.e2e
def test_changing_rl_eval_makes_the_evaluations_stale_and_nothing_else(loop):
    changed, stale = _edit_params(loop[0], "    temperature: 1.0  ", "    temperature: 0.7  ")
    assert changed == ["rl.eval.temperature"]
    # What `dvc repro` would run (then rl_progress, downstream of the new eval metrics): no collect, no train.
    assert stale == {f"rl_eval@{k:03d}" for k in range(1, 6)}, stale


@pytest.mark.e2e
def test_changing_a_trainer_setting_makes_the_training_stale_and_no_collection(loop):
    changed, stale = _edit_params(loop[0], "    clip: 0.2 ", "    clip: 0.3 ")
    assert changed == ["rl.train.clip"]
    # Every training is stale; collections and evaluations follow only through the checkpoints they read.
    assert stale == {f"rl_train@{k:03d}" for k in range(1, 6)}, stale


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("source", "stale"),
    [
        ("scripts/rollout_pipeline/rl/trainer.py", {f"rl_train@{k:03d}" for k in range(1, 6)}),
        ("scripts/train.py", {f"rl_train@{k:03d}" for k in range(1, 6)}),
        # The real-model recipe's trainer (params.rl-real.yaml): the deps are the same whichever params file is used.
        ("scripts/rollout_pipeline/rl/lora_trainer.py", {f"rl_train@{k:03d}" for k in range(1, 6)}),
        ("scripts/rollout_pipeline/stages/report_pages.py", set()),
    ],
)
def test_an_edit_to_the_trainer_makes_only_the_train_stages_stale(loop, source, stale):
    """Then what follows them re-runs only if a checkpoint changed; never the collection of the main pipeline."""
    repo, _ = loop
    path = repo / source
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        assert set(json.loads(run(repo, "dvc", "status", "--json", "--with-deps", "rl_progress").stdout)) == stale
    finally:
        path.write_text(original)


@pytest.mark.e2e
def test_a_curriculum_switch_at_iteration_4_makes_iterations_4_and_later_use_the_hard_prompts(tmp_path):
    repo = project_copy(
        tmp_path,
        prompts__sets__easy__count=15,
        prompts__sets__hard__count=15,
        prompts__sets__heldout__count=15,
        rl__collect__num_repeats=2,
        rl__eval__num_repeats=2,
        rl__schedule__curriculum=[
            {"from": 1, "prompts": "data/prompts/easy.jsonl"},
            {"from": 4, "prompts": "data/prompts/hard.jsonl"},
        ],
    )
    assert "which iteration? e.g. make rl-iter N=5" in make_rl_iter(repo, None).stderr
    make_rl_iter(repo, 5)
    for k in range(1, 6):
        difficulties = {json.loads(line)["difficulty"] for line in (repo / f"data/rl/rl_iter_{k:03d}.jsonl").open()}
        assert difficulties == ({"easy"} if k < 4 else {"hard"}), k
    assert [row["prompts"] for row in progress_table(repo)] == ["easy"] * 3 + ["hard"] * 2
