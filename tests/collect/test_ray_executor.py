"""The Ray executor on a real two-node Ray cluster started by the tests (no mocks): same bytes as the local executor,
work on both nodes, a killed worker or driver loses nothing, and `COLLECT_EXECUTOR=ray dvc repro` changes nothing."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from dvc_testkit import copy_project, sh
from ray_testkit import RAY_ENV, Cluster, ray_cluster
from rollout_pipeline.collect.ray_executor import NAMESPACE
from rollout_pipeline.collect.ray_worker import RolloutWorker, WorkerSecrets, public_settings, worker_env
from rollout_pipeline.reference.embedded import EmbeddedServer, start_embedded_server
from support import (
    PY,
    SCRIPTS,
    agent,
    collect,
    ctrl_c_default,
    free_port,
    make_prompts,
    objective_run_settings,
    paused,
    wait_for,
    write_params,
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node and a second node on this machine, one CPU each (ray_testkit.py)."""
    with ray_cluster(nodes=2) as started:
        yield started


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    """The reference server, with a little latency so that a run lasts long enough to stop."""
    with start_embedded_server(["--latency-ms", "40"]) as started:
        yield started


@pytest.fixture(scope="module")
def project(tmp_path_factory, server) -> Path:
    """60 prompts and an agent on the server."""
    directory = tmp_path_factory.mktemp("ray-project")
    make_prompts(directory / "prompts.jsonl", 60)
    write_params(directory, {"math_agent": agent(server.url)})
    return directory


def _seed_args(output: str) -> list[str]:
    return [
        "+agent_name=math_agent",
        "+input_jsonl_fpath=prompts.jsonl",
        f"+output_jsonl_fpath={output}",
        "+num_repeats=4",
        "+seed=7",
        "+num_samples_in_parallel=8",
        "--force",
    ]


@pytest.fixture(scope="module")
def local_output(project) -> bytes:
    """The local executor's output for the seeded run: what every Ray run below must reproduce byte for byte."""
    collect(_seed_args("local.jsonl"), project, project / "params.yaml", check=True)
    return (project / "local.jsonl").read_bytes()


def _stats(project: Path, output: str) -> dict:
    return orjson.loads((project / output.replace(".jsonl", ".stats.json")).read_bytes())


def _progress_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n") - 1  # the first line is the run identity
    except FileNotFoundError:
        return 0


# Connects to the cluster (argv: address, namespace), says so, then kills the worker named on its stdin.
KILLER = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
print("connected", flush=True)
ray.kill(ray.get_actor(sys.stdin.readline().strip(), namespace=sys.argv[2]))
print("killed", flush=True)
"""


def _start_collect(project: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """The collector as a user starts it: Ctrl-C (SIGINT) reaches it with its default meaning, whatever this
    process's own disposition is."""
    return subprocess.Popen(
        [PY, str(SCRIPTS / "collect.py"), *args, "--no-progress", "--params", "params.yaml"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        preexec_fn=ctrl_c_default,
    )


def _wait_for_progress(process: subprocess.Popen, progress: Path, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while _progress_lines(progress) < at_least:
        assert process.poll() is None, f"the run ended before the test could interrupt it:\n{process.communicate()}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)


@pytest.mark.e2e
@pytest.mark.ray
def test_a_seeded_run_on_two_nodes_is_byte_identical_to_the_local_executor_and_both_nodes_did_work(
    cluster, project, local_output
):
    result = collect(
        [*_seed_args("ray.jsonl"), "--executor", "ray"], project, project / "params.yaml", env=cluster.env, check=True
    )
    assert (project / "ray.jsonl").read_bytes() == local_output
    assert (project / "ray.failures.ndjson").read_bytes() == (project / "local.failures.ndjson").read_bytes()
    stats = _stats(project, "ray.jsonl")
    assert stats["executor"] == "ray" and stats["ray"]["workers"] == 2  # one per CPU the cluster offers
    by_node = stats["ray"]["rollouts_by_node"]
    assert len(by_node) == 2 and all(count > 0 for count in by_node.values()), by_node
    assert sum(by_node.values()) == stats["new_rollouts"] == 240
    assert stats["requests"] == 240 and stats["latency_s"]["p50"] is not None  # the workers' own counters came back
    assert '"reward"' in result.stdout


@pytest.mark.e2e
@pytest.mark.ray
def test_a_worker_killed_mid_run_hands_its_unfinished_rollouts_to_another_and_nothing_is_lost_or_doubled(
    cluster, project, local_output, server
):
    # The killer connects to the cluster first, so that the kill lands at once when the run is under way.
    killer = subprocess.Popen(
        [PY, "-c", KILLER, cluster.address, NAMESPACE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **cluster.env},
    )
    assert killer.stdout.readline() == "connected\n"
    process = _start_collect(project, [*_seed_args("killed.jsonl"), "--executor", "ray"], cluster.env)
    _wait_for_progress(process, project / ".killed.jsonl.progress.jsonl", at_least=20)
    with paused(server.url):  # the run cannot finish before the kill lands: the worker dies with work unfinished
        killed, _ = killer.communicate(f"rollout-worker-{process.pid}-0\n", timeout=60)
        assert killed == "killed\n" and _progress_lines(project / ".killed.jsonl.progress.jsonl") < 240
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Ray worker 0 died" in stderr and "go to the other workers" in stderr
    assert (project / "killed.jsonl").read_bytes() == local_output  # every rollout, each once, the same bytes
    stats = _stats(project, "killed.jsonl")
    assert stats["ray"]["workers_died"] == [0]
    assert stats["new_rollouts"] == 240 and stats["failures"] == 0


@pytest.mark.e2e
@pytest.mark.ray
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_a_stopped_driver_keeps_what_finished_and_the_next_run_resumes(cluster, project, local_output, server, stop):
    output = f"resumed-{stop.name}.jsonl"
    args = [*_seed_args(output), "--executor", "ray"]
    progress = project / f".{output}.progress.jsonl"
    process = _start_collect(project, args, cluster.env)
    _wait_for_progress(process, progress, at_least=20)
    with paused(server.url):  # the run cannot finish before the signal lands
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=60)
    kept = _progress_lines(progress)
    assert 20 <= kept < 240
    if stop == signal.SIGINT:  # a clean stop, as with the local executor
        assert process.returncode == 130
        assert f"interrupted: {kept} of 240 rollouts done and kept in" in stderr
    result = collect([a for a in args if a != "--force"], project, project / "params.yaml", env=cluster.env, check=True)
    assert f"resuming: {kept} of 240 rollouts already done" in result.stdout
    assert (project / output).read_bytes() == local_output
    assert _stats(project, output)["new_rollouts"] == 240 - kept


@pytest.mark.ray
def test_with_no_address_the_run_starts_a_local_ray_instance_and_shuts_it_down(project, local_output):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    try:
        result = subprocess.run(
            [
                PY,
                str(SCRIPTS / "collect.py"),
                *_seed_args("alone.jsonl"),
                "--executor",
                "ray",
                "--no-progress",
                "--params",
                "params.yaml",
            ],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=180,
            env={**env, **RAY_ENV, "RAY_TMPDIR": str(ray_tmp)},
        )
        assert result.returncode == 0, result.stderr
        assert (project / "alone.jsonl").read_bytes() == local_output
        assert _stats(project, "alone.jsonl")["ray"]["nodes"] == 1
        wait_for(lambda: _processes_with_env(f"RAY_TMPDIR={ray_tmp}") == [])  # every process of that instance goes
    finally:
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)


def _processes_with_env(entry: str) -> list[int]:
    """Processes whose environment holds `entry` (the Ray instance's processes inherit the run's environment)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.e2e
@pytest.mark.ray
def test_COLLECT_EXECUTOR_ray_dvc_repro_reruns_nothing_and_forced_gives_the_same_outputs(cluster, tmp_path):
    project = copy_project(tmp_path / "project", prompt_count=20)
    sh("dvc repro metrics@rl", project)  # prompts, collect@rl, score@rl, metrics@rl: one objective stands for all
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm repro", project)
    ray_env = " ".join(f"{key}={value}" for key, value in {"COLLECT_EXECUTOR": "ray", **cluster.env}.items())
    assert "Running stage" not in sh(f"{ray_env} dvc repro metrics@rl", project).stdout  # fetching is no param
    forced = sh(f"{ray_env} dvc repro --force --single-item collect@rl", project)
    assert "Running stage 'collect@rl'" in forced.stdout
    assert orjson.loads((project / "data/generations/rl.stats.json").read_bytes())["executor"] == "ray"
    assert sh("git status --porcelain", project).stdout == ""  # dvc.lock (every output's hash) and metrics unchanged


@pytest.mark.ray
def test_an_unreachable_cluster_is_one_line_that_names_the_address(project):
    address = f"127.0.0.1:{free_port()}"
    result = collect(
        _seed_args("unreachable.jsonl") + ["--executor", "ray", "--ray-address", address],
        project,
        project / "params.yaml",
        timeout=60,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"cannot reach the Ray cluster at {address}" in errors[0], result.stderr
    assert not (project / "unreachable.jsonl").exists()


def test_an_unknown_COLLECT_EXECUTOR_is_one_line_with_the_closest_name(project):
    result = collect(_seed_args("typo.jsonl"), project, project / "params.yaml", env={"COLLECT_EXECUTOR": "rya"})
    assert result.returncode == 2
    assert "COLLECT_EXECUTOR='rya': expected one of local, ray (did you mean 'ray'?)" in result.stderr


def test_secrets_are_in_neither_the_workers_arguments_nor_their_environment(tmp_path):
    settings = objective_run_settings(
        {
            "agents": {
                "a": {
                    "url": ["http://user:url-secret@gpu-1:8000"],
                    "verifier": "http://user:verify-secret@judge:9000/verify",
                    "api_key_env": "KEY",
                }
            },
            "objectives": {"o": {"agent_name": "a", "prompts": str(tmp_path / "in.jsonl")}},
        },
        tmp_path / "out.jsonl",
        "o",
    )
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-key-secret"}
    secrets = WorkerSecrets(settings.agent.urls, settings.agent, headers)
    shown = pickle.dumps(public_settings(settings)) + orjson.dumps(worker_env()) + repr(secrets).encode()
    for secret in ("url-secret", "verify-secret", "sk-key-secret"):
        assert secret.encode() not in shown


def test_a_worker_states_the_logprobs_kind_of_the_agents_own_url_not_of_the_embedded_server_it_asks(tmp_path):
    """`url: embedded` means processed logprobs (the embedded server's are those it sampled from); a worker asks the
    server the run started, by its URL, and must still say so, as a collection in this process does."""
    settings = objective_run_settings(
        {
            "agents": {"a": {"url": "embedded", "token_data": "logprobs"}},
            "objectives": {"o": {"agent_name": "a", "prompts": str(tmp_path / "in.jsonl")}},
        },
        tmp_path / "out.jsonl",
        "o",
    )
    started = ["http://127.0.0.1:8123"]
    worker = RolloutWorker(public_settings(settings), 1, WorkerSecrets(started, settings.agent, {}))
    assert worker.settings == settings
    assert worker.fetcher.logprobs_mode == "processed_logprobs"
    assert worker.fetcher.urls == started


@pytest.mark.e2e
@pytest.mark.ray
def test_the_api_key_and_url_passwords_are_in_no_file_of_the_ray_session_nor_any_output(cluster, tmp_path):
    """Ray writes a runtime_env's env_vars to runtime_env_agent.log (world-readable, kept after the run): the
    secrets travel as a Ray object instead. Every file under the cluster's temp dir is read after the run."""
    key, verify_password = "sk-ray-3f9a1c7e5b2d", "verify-pw-6d2b9f"
    make_prompts(tmp_path / "prompts.jsonl", 6)
    with start_embedded_server([]) as server:
        # The key goes to the agent; the /verify URL (another host name: no key) carries the URL credentials.
        verify_host = server.url.replace("127.0.0.1", "localhost").removeprefix("http://")
        write_params(
            tmp_path,
            {
                "math_agent": agent(
                    server.url,
                    api_key_env="RAY_TEST_KEY",
                    verifier=f"http://judge:{verify_password}@{verify_host}/verify",
                )
            },
        )
        result = collect(
            [*_seed_args("secret.jsonl"), "--executor", "ray"],
            tmp_path,
            tmp_path / "params.yaml",
            env={**cluster.env, "RAY_TEST_KEY": key},
        )
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "secret.jsonl").read_bytes().splitlines()) == 24  # the workers did get the secrets
    files = [
        path
        for path in [*cluster.temp_dir.rglob("*"), *tmp_path.rglob("*")]
        if path.is_file() and not path.is_symlink() and path.name != "params.yaml"
    ]
    assert any(path.name == "runtime_env_agent.log" for path in files)
    for secret in (key, verify_password):
        assert secret not in result.stdout + result.stderr
        leaks = [str(path) for path in files if secret.encode() in _read(path)]
        assert not leaks, f"{secret} in {leaks}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # a socket, or a file a node removed meanwhile
        return b""


# Loaded into a pytest run with -p: Ray cannot be imported there, as after `make setup` alone.
WITHOUT_RAY = "import sys\nsys.modules['ray'] = None\n"


def test_without_the_ray_extra_the_ray_tests_skip_and_say_make_setup_ray(tmp_path):
    (tmp_path / "without_ray.py").write_text(WITHOUT_RAY)
    run = subprocess.run(
        [
            PY,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "without_ray",
            "-m",
            "ray",
            "-p",
            "no:cacheprovider",
            str(Path(__file__)),
        ],
        cwd=SCRIPTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ skipped, \d+ deselected in .*", summary), summary  # none passed, failed or errored
    reasons = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all(line.endswith("`make setup-ray` installs it (pip install -e '.[ray]')") for line in reasons)
