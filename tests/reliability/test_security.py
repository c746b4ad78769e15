"""Security: the API key never leaks, the embedded server stays on loopback and inside its checkpoint
directory, the jq `where` cannot run commands, and configuration is read with safe loaders only."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import select
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reliability_support import Misbehaving, fast_agent, one_line_error, run_collect, tree_files
from rollout_pipeline.reference.checkpoints import REFERENCE_PATH
from rollout_pipeline.reference.embedded import start_embedded_server
from support import PY, ROOT, SCRIPTS, agent, free_port, read_jsonl, write_params

SECRET = f"sk-rel-{secrets.token_hex(16)}"  # made at run time: in no source file
KEY_ENV = "ROLLOUT_RELIABILITY_KEY"


def _grep(secret: str, root: Path) -> list[str]:
    return [str(path) for path in tree_files(root) if secret.encode() in path.read_bytes()]


# -- the API key ------------------------------------------------------------------------------------------
def test_the_api_key_is_sent_to_the_server_but_never_written_anywhere(tmp_path, prompts, upstream):
    """Every file the runs wrote, every line they printed, the failures' error messages: no key."""
    printed = []
    env = {KEY_ENV: SECRET}
    with Misbehaving(upstream.url, "401,error-200,close", rate=0.5, seed=8) as flaky:
        # A successful run with retries through a flaky proxy (errors and all) ...
        ok = run_collect(
            tmp_path,
            prompts,
            tmp_path / "ok.jsonl",
            fast_agent(flaky.url, api_key_env=KEY_ENV),
            env=env,
            num_repeats=2,
            seed=1,
            max_failure_rate=1.0,
        )
        # ... a run that fails (401 for everything, with the server's message in the failures file) ...
        with Misbehaving(upstream.url, "401", rate=1.0) as denying:
            denied = run_collect(
                tmp_path,
                prompts,
                tmp_path / "denied.jsonl",
                fast_agent(denying.url, api_key_env=KEY_ENV),
                env=env,
                limit=3,
            )
            denied_auth = denying.stats()["auth_sha256"]
        auth = flaky.stats()["auth_sha256"]
    # ... and a key with a trailing newline (as `export KEY=$(cat keyfile)` can leave it) and one that is broken.
    newline = run_collect(
        tmp_path,
        prompts,
        tmp_path / "nl.jsonl",
        fast_agent(upstream.url, api_key_env=KEY_ENV),
        env={KEY_ENV: SECRET + "\n"},
        limit=2,
    )
    control = run_collect(
        tmp_path,
        prompts,
        tmp_path / "cc.jsonl",
        fast_agent(upstream.url, api_key_env=KEY_ENV),
        env={KEY_ENV: SECRET + "\x01x"},
        limit=2,
    )
    printed += [
        ok.stdout,
        ok.stderr,
        denied.stdout,
        denied.stderr,
        newline.stdout,
        newline.stderr,
        control.stdout,
        control.stderr,
    ]

    assert ok.returncode == 0, ok.stderr
    assert denied.returncode == 1 and "HTTP 401" in denied.stderr
    assert newline.returncode == 0, newline.stderr
    assert f"environment variable {KEY_ENV} holds a control character" in one_line_error(control)
    bearer = hashlib.sha256(f"Bearer {SECRET}".encode()).hexdigest()
    assert auth == [bearer] and denied_auth == [bearer], "the key is sent, as a bearer token, stripped"
    assert read_jsonl(tmp_path / "denied.failures.ndjson"), "the failures (with the server's messages) were written"
    assert not _grep(SECRET, tmp_path), "the key is in a file the run wrote"
    assert not [text for text in printed if SECRET in text], "the key was printed"


def test_the_api_key_is_not_sent_to_a_verify_url_on_another_host(tmp_path, prompts, upstream):
    with Misbehaving(upstream.url) as verifier:  # a resources server on another origin (another port)
        result = run_collect(
            tmp_path,
            prompts,
            tmp_path / "out.jsonl",
            fast_agent(upstream.url, api_key_env=KEY_ENV, verifier=f"{verifier.url}/verify"),
            env={KEY_ENV: SECRET},
            limit=2,
        )
        stats = verifier.stats()
    assert result.returncode == 0, result.stderr
    assert stats["paths"] == {"/verify": 2} and stats["auth_sha256"] == []


@pytest.mark.parametrize("script", ["collect.py", "filter.py", "pair.py", "metrics.py", "prompts.py", "serve.py"])
def test_help_output_never_shows_the_api_key(script):
    result = subprocess.run(
        [PY, str(SCRIPTS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, KEY_ENV: SECRET, "OPENAI_API_KEY": SECRET},
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.e2e
def test_the_api_key_is_not_in_dvc_lock_or_any_file_of_a_dvc_repro(dvc_project):
    """The dvc repro (interrupted, then resumed) ran with the key exported and the agent's api_key_env set."""
    assert dvc_project.second.returncode == 0, dvc_project.second.stderr
    lock = (dvc_project.root / "dvc.lock").read_text()
    assert "ROLLOUT_RELIABILITY_KEY" in lock, "dvc.lock records the variable's NAME (a param) ..."
    assert dvc_project.secret not in lock, "... never its value"
    assert not _grep(dvc_project.secret, dvc_project.root)
    for run in (dvc_project.first, dvc_project.second):
        assert dvc_project.secret not in (run.stdout or "") + (run.stderr or "")


# -- the embedded server: loopback only, and never outside its checkpoint directory -------------------------
def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    words = [bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8)]
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent; this just picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_embedded_server_listens_only_on_loopback_by_default():
    port = free_port()
    # `serve.py` as a user runs it, with no --host: the default must be loopback.
    process = subprocess.Popen(
        [PY, str(SCRIPTS / "serve.py"), "--port", str(port), "--exit-with-parent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline().decode() if ready else ""
        assert line.strip() == f"listening on http://127.0.0.1:{port}", line
        assert _listening_addresses(port) == {"127.0.0.1"}
        other = _non_loopback_address()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=2).close()
    finally:
        process.stdin.close()
        process.wait(10)
    help_text = subprocess.run(
        [PY, str(SCRIPTS / "serve.py"), "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "default 127.0.0.1, loopback only" in help_text


def test_the_servers_the_collector_starts_listen_only_on_loopback():
    with start_embedded_server([]) as server:
        port = int(server.url.rsplit(":", 1)[1])
        assert server.url.startswith("http://127.0.0.1:") and _listening_addresses(port) == {"127.0.0.1"}


@pytest.fixture(scope="module")
def jailed_server(tmp_path_factory):
    """A server whose checkpoint directory holds iter1.json, a subdirectory, and a symlink that points outside;
    outside it lies a VALID checkpoint (so reading it would succeed with a 200)."""
    base = tmp_path_factory.mktemp("jail")
    jail, outside = base / "checkpoints", base / "outside"
    jail.mkdir()
    outside.mkdir()
    shutil.copy(REFERENCE_PATH, jail / "iter1.json")
    (jail / "sub").mkdir()
    shutil.copy(REFERENCE_PATH, outside / "secret.json")
    (jail / "escape.json").symlink_to(outside / "secret.json")
    (jail / "sub" / "link").symlink_to(outside)
    with start_embedded_server(["--checkpoint-dir", str(jail)]) as server:
        server.outside = outside / "secret.json"
        server.jail = jail
        yield server


def _post(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


ESCAPES = [
    "../outside/secret",
    "../outside/secret.json",
    "{outside}",
    "{outside_noext}",
    "sub/../../outside/secret",
    "..\\outside\\secret",
    "escape",
    "escape.json",
    "sub/link/secret",
    "./../outside/secret",
    "/etc/passwd",
    "/proc/self/environ",
    "../../../../../../etc/passwd",
    "%2e%2e/outside/secret",
    "C:\\Windows\\win.ini",
    "iter1\x00.json",
    "~/.bashrc",
    "sub",
    ".",
]


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/responses"])
def test_the_model_field_cannot_read_files_outside_the_checkpoint_directory(jailed_server, endpoint):
    def body(model: str) -> dict:
        if endpoint == "/v1/chat/completions":
            return {"model": model, "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
        return {"model": model, "input": "What is 2 + 2?"}

    status, _ = _post(jailed_server.url + endpoint, body("iter1"))
    assert status == 200, "a checkpoint inside the directory is served"
    outside = str(jailed_server.outside)
    for template in ESCAPES:
        model = template.format(outside=outside, outside_noext=outside[: -len(".json")])
        status, text = _post(jailed_server.url + endpoint, body(model))
        assert status == 404 and "model_not_found" in text, (model, status, text)
        assert "root:" not in text and "classes" not in text, "no file content in the error"
    with urllib.request.urlopen(jailed_server.url + "/v1/models", timeout=10) as reply:
        listed = {m["id"] for m in json.loads(reply.read())["data"]}
    assert listed == {"reference", "iter1"}, "the escaping symlink is not listed either"


# -- jq `where` --------------------------------------------------------------------------------------------
@pytest.fixture
def rollout_file(tmp_path) -> Path:
    path = tmp_path / "rollouts.jsonl"
    path.write_text(
        json.dumps(
            {
                "prompt_id": "p",
                "task_index": 0,
                "rollout_index": 0,
                "output": "4",
                "reward": 1.0,
                "input": [{"role": "user", "content": "2+2?"}],
            }
        )
        + "\n"
    )
    return path


@pytest.mark.parametrize(
    "where,compiles",
    [
        ('system("touch SENTINEL")', False),
        ('"touch SENTINEL" | @sh | length > 0', True),
        ('@sh "touch \\(.output) SENTINEL" | length > 0', True),
        ("$__prog_args", "refused"),
        ('"SENTINEL" | open', False),
        ('import "/etc/passwd" as $p; true', False),
        ("input_filename == null", True),
        ('"x" | halt_error', True),
    ],
)
def test_the_where_expression_cannot_run_shell_commands(tmp_path, rollout_file, where, compiles):
    params = write_params(tmp_path, {"math_agent": agent()}, filter={"where": where, "min_reward": 0.0})
    result = subprocess.run(
        [
            PY,
            str(SCRIPTS / "filter.py"),
            "--in",
            str(rollout_file),
            "--out",
            str(tmp_path / "sft.jsonl"),
            "--params",
            str(params),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not (tmp_path / "SENTINEL").exists(), "a command ran"
    assert "Traceback" not in result.stderr
    if compiles == "refused":  # depends on the command line, not the record: refused before jq sees it
        assert "filter.where: '$__prog_args' is not allowed" in one_line_error(result, "filter")
    elif compiles:
        assert result.returncode == 0, result.stderr
    else:
        assert "filter.where: invalid jq expression" in one_line_error(result, "filter")


@pytest.mark.parametrize(
    "where,outcome",
    [
        ("$ENV.OPENAI_API_KEY | tonumber", "error"),  # jq's message would quote the value it could not parse
        ("env.OPENAI_API_KEY | tonumber", "error"),
        ('error("key: \\($ENV.OPENAI_API_KEY)")', "error"),
        ("env.OPENAI_API_KEY == null and $ENV == {}", "kept"),  # the expression sees no environment at all
    ],
)
def test_the_where_expression_cannot_read_the_api_key_from_the_environment(tmp_path, rollout_file, where, outcome):
    params = write_params(
        tmp_path, {"math_agent": agent(api_key_env="OPENAI_API_KEY")}, filter={"where": where, "min_reward": 0.0}
    )
    result = subprocess.run(
        [
            PY,
            str(SCRIPTS / "filter.py"),
            "--in",
            str(rollout_file),
            "--out",
            str(tmp_path / "sft.jsonl"),
            "--params",
            str(params),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENAI_API_KEY": SECRET},
    )
    # jq shortens long values in its messages, so look for the start of the key's random part too.
    for leaked in (SECRET, SECRET[len("sk-rel-") :][:6]):
        assert leaked not in result.stdout + result.stderr
        assert not any(leaked in path.read_text(errors="replace") for path in tree_files(tmp_path))
    if outcome == "kept":
        assert result.returncode == 0 and len(read_jsonl(tmp_path / "sft.jsonl")) == 1, result.stderr
    else:
        assert "filter.where" in one_line_error(result, "filter")


# -- safe loaders only -------------------------------------------------------------------------------------
PYTHON_TAGS = [
    "!!python/object/apply:os.system ['touch SENTINEL']",
    "!!python/object/new:subprocess.Popen [['touch', 'SENTINEL']]",
    "!!python/name:os.system",
]


@pytest.mark.parametrize(
    "script,tag",
    [
        ("collect.py", PYTHON_TAGS[0]),
        ("filter.py", PYTHON_TAGS[1]),
        ("pair.py", PYTHON_TAGS[2]),
        ("metrics.py", PYTHON_TAGS[0]),
    ],
)
def test_a_python_tag_in_params_yaml_is_rejected_clearly(tmp_path, prompts, tag, script):
    params = tmp_path / "params.yaml"
    params.write_text(
        f"agents:\n  math_agent:\n    model: {tag}\nobjectives:\n  rl: {{agent_name: math_agent, prompts: {prompts}}}\n"
    )
    argv = {
        "collect.py": ["+agent_name=math_agent", f"+input_jsonl_fpath={prompts}", "+output_jsonl_fpath=o.jsonl"],
        "filter.py": ["--in", str(prompts), "--out", "o.jsonl"],
        "pair.py": ["--in", str(prompts), "--out", "o.jsonl"],
        "metrics.py": ["--objective", "rl", "--in", str(prompts), "--out", "o.json"],
    }[script]
    result = subprocess.run(
        [PY, str(SCRIPTS / script), *argv, "--params", str(params)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_line_error(result, script.removesuffix(".py").replace("collect", "collect.py"))
    assert f"{params}:3: invalid YAML (could not determine a constructor for the tag" in line
    assert not (tmp_path / "SENTINEL").exists()


def test_yaml_tags_in_seed_arguments_and_prompt_files_stay_inert(tmp_path, prompts):
    params = write_params(tmp_path, {"math_agent": agent(f"http://127.0.0.1:{free_port()}", max_retries=0)})
    tag = "!!python/object/apply:os.system ['touch SENTINEL']"
    as_argument = subprocess.run(
        [
            PY,
            str(SCRIPTS / "collect.py"),
            "+agent_name=math_agent",
            f"+input_jsonl_fpath={prompts}",
            "+output_jsonl_fpath=o.jsonl",
            f"+num_repeats={tag}",
            "--params",
            str(params),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Hydra's grammar has no tags: the argument is refused as it stands, and quoted it is a plain string.
    assert f"argument {f'+num_repeats={tag}'!r} is not a Hydra override" in one_line_error(as_argument)
    quoted = subprocess.run(
        [
            PY,
            str(SCRIPTS / "collect.py"),
            "+agent_name=math_agent",
            f"+input_jsonl_fpath={prompts}",
            "+output_jsonl_fpath=o.jsonl",
            f'+num_repeats="{tag}"',
            "--params",
            str(params),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"+num_repeats: expected an integer, got {tag!r}" in one_line_error(quoted)
    bad_prompts = tmp_path / "prompts.jsonl"
    bad_prompts.write_text(f"{tag}\n")
    as_prompt = subprocess.run(
        [
            PY,
            str(SCRIPTS / "collect.py"),
            "+agent_name=math_agent",
            f"+input_jsonl_fpath={bad_prompts}",
            "+output_jsonl_fpath=o.jsonl",
            "--params",
            str(params),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"{bad_prompts}:1: not valid JSON" in one_line_error(as_prompt)
    assert not (tmp_path / "SENTINEL").exists()


def test_the_code_uses_only_safe_loaders():
    """No unsafe YAML loader, pickle, marshal, eval or exec anywhere in the library or the stage scripts."""
    unsafe = re.compile(
        r"yaml\.(load|unsafe_load|full_load|load_all)\(|Loader\s*=|\bpickle\b|\bmarshal\b|"
        r"(?<![.\w])eval\(|(?<![.\w])exec\("
    )
    offenders = []
    for path in sorted((ROOT / "scripts").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if unsafe.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders
