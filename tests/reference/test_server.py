"""The embedded server over real loopback sockets: OpenAI clients, NeMo Gym endpoints, safety, errors, faults."""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from rollout_pipeline.reference import policy
from rollout_pipeline.reference.checkpoints import REFERENCE_PATH, reference_checkpoint, save_checkpoint
from rollout_pipeline.reference.embedded import start_embedded_server
from rollout_pipeline.reference.tokens import count_tokens
from rollout_pipeline.rows import normalize_row, prompt_id
from support import SCRIPTS, wait_for

EASY = "What is 37 + 48? Give the final answer in \\boxed{}."
HARD = "What is (85 - 37) × 6 + 125? Give the final answer in \\boxed{}."


def call(url: str, path: str, body: dict | bytes | None = None, timeout: float = 10.0) -> tuple[int, dict]:
    """POST (or GET without a body) and decode the JSON reply, whatever the status."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def chat(url: str, prompt: str = EASY, **params) -> tuple[int, dict]:
    return call(
        url, "/v1/chat/completions", {"model": "reference", "messages": [{"role": "user", "content": prompt}], **params}
    )


def texts(reply: dict) -> list[str]:
    return [choice["message"]["content"] for choice in reply["choices"]]


def entropy(counts: Counter) -> float:
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


# ---- the OpenAI client -----------------------------------------------------------------------


def test_the_openai_client_parses_chat_completions_with_n_4(embedded_server):
    client = openai.OpenAI(base_url=f"{embedded_server.url}/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.create(
        model="reference", messages=[{"role": "user", "content": EASY}], n=4, temperature=1.0, seed=11, max_tokens=200
    )
    assert completion.object == "chat.completion" and len(completion.choices) == 4
    for choice in completion.choices:
        assert choice.finish_reason == "stop"
        assert policy.classify_output(EASY, choice.message.content) is not None
    # Usage counts regex tokens (tokens.py): 16 for the prompt, the sum over the 4 choices for the output.
    assert completion.usage.prompt_tokens == 16
    assert completion.usage.completion_tokens == sum(count_tokens(c.message.content) for c in completion.choices)


def test_the_openai_client_parses_responses_including_truncation(embedded_server):
    client = openai.OpenAI(base_url=f"{embedded_server.url}/v1", api_key="unused", max_retries=0)
    response = client.responses.create(model="reference", input=EASY, temperature=0)
    assert response.status == "completed" and response.incomplete_details is None
    assert response.output_text == "37 + 48 = 85.\nThe final answer is \\boxed{85}."
    assert response.usage.output_tokens == 16 and response.usage.total_tokens == 16 + response.usage.input_tokens
    cut = client.responses.create(model="reference", input=[{"role": "user", "content": EASY}], max_output_tokens=4)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert "boxed" not in cut.output_text and cut.usage.output_tokens == 4


def test_chat_max_tokens_sets_finish_reason_length(embedded_server):
    for key in ("max_tokens", "max_completion_tokens"):
        status, reply = chat(embedded_server.url, temperature=0, **{key: 3})
        assert status == 200 and reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"]["completion_tokens"] == 3


def test_models_health_and_loopback_binding(embedded_server):
    status, models = call(embedded_server.url, "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["reference", "iter1"]
    assert call(embedded_server.url, "/health") == (200, {"status": "ok"})
    assert embedded_server.url.startswith("http://127.0.0.1:")


def test_pause_holds_generation_requests_until_resume_as_vllms_dev_mode_does(embedded_server):
    url = embedded_server.url
    assert call(url, "/pause", b"") == (200, {"status": "paused"})
    try:
        assert call(url, "/is_paused") == (200, {"is_paused": True, "held": 0})
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(chat, url)
            wait_for(lambda: call(url, "/is_paused")[1]["held"] == 1)
            assert call(url, "/health") == (200, {"status": "ok"}), "only generation waits"
            assert not held.done()
            assert call(url, "/resume", b"") == (200, {"status": "resumed"})
            status, reply = held.result(timeout=60)
        assert status == 200 and reply["choices"]
    finally:
        call(url, "/resume", b"")
    assert call(url, "/is_paused") == (200, {"is_paused": False, "held": 0})


def test_the_default_bind_address_is_not_reachable_from_other_interfaces(embedded_server):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outward interface
        outward = probe.getsockname()[0]
    except OSError:
        outward = None
    finally:
        probe.close()
    if not outward or outward.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    port = int(embedded_server.url.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection((outward, port), timeout=2).close()


# ---- honest sampling over the socket ---------------------------------------------------------


def draws(url: str, prompt: str, temperature: float, top_p: float = 1.0, total: int = 1000) -> Counter:
    """`total` draws as chat requests with n=50 and distinct seeds."""
    counts: Counter = Counter()
    for seed in range(total // 50):
        status, reply = chat(url, prompt, temperature=temperature, top_p=top_p, n=50, seed=seed)
        assert status == 200
        counts.update(texts(reply))
    return counts


def test_sampling_over_the_socket_is_honest_in_temperature_and_top_p(embedded_server):
    url = embedded_server.url
    correct = policy.candidate_texts(EASY)["correct"]
    assert draws(url, EASY, 0.0, total=200) == Counter({correct: 200}), "temperature 0 is greedy"
    by_t = {t: draws(url, EASY, t) for t in (0.3, 0.7, 1.0)}
    shares = [by_t[t][correct] / 1000 for t in (0.3, 0.7, 1.0)]
    assert shares[0] > shares[1] > shares[2], shares
    assert entropy(by_t[0.3]) < entropy(by_t[0.7]) < entropy(by_t[1.0])
    assert entropy(draws(url, EASY, 1.0, top_p=0.5)) < entropy(by_t[1.0])


def test_the_same_seed_gives_the_same_text_across_requests_and_apis(embedded_server):
    url = embedded_server.url
    first = texts(chat(url, HARD, temperature=1.0, seed=5)[1])
    assert first == texts(chat(url, HARD, temperature=1.0, seed=5)[1])
    for seed in (5, "5"):
        status, reply = call(
            url, "/v1/responses", {"model": "reference", "input": HARD, "temperature": 1.0, "metadata": {"seed": seed}}
        )
        assert status == 200 and reply["output"][0]["content"][0]["text"] == first[0]


def test_return_tokens_as_token_ids_writes_each_logprobs_token_as_its_id_as_vllm_does(embedded_server):
    # vLLM's `return_tokens_as_token_ids` (what NeMo Gym's vllm_model asks for with token ids on): each logprobs
    # token is "token_id:<id>", the same ids as `token_ids`; without the flag the tokens stay text.
    asked = {"logprobs": True, "top_logprobs": 0, "return_token_ids": True, "seed": 3}
    _, plain = chat(embedded_server.url, EASY, **asked)
    _, as_ids = chat(embedded_server.url, EASY, **asked, return_tokens_as_token_ids=True)
    choice = as_ids["choices"][0]
    assert [entry["token"] for entry in choice["logprobs"]["content"]] == [f"token_id:{i}" for i in choice["token_ids"]]
    assert [e["logprob"] for e in choice["logprobs"]["content"]] == [
        e["logprob"] for e in plain["choices"][0]["logprobs"]["content"]
    ]
    assert not any(e["token"].startswith("token_id:") for e in plain["choices"][0]["logprobs"]["content"])


def test_n_choices_are_independent_draws(embedded_server):
    # Over 1000 draws, two choices of one request agree about as often as two independent draws would.
    probs = policy.candidate_probabilities(HARD, reference_checkpoint(), 1.0)
    expected_agreement = sum(p * p for p in probs.values())
    agree = pairs = 0
    for seed in range(250):
        choices = texts(chat(embedded_server.url, HARD, temperature=1.0, n=4, seed=seed)[1])
        for i in range(4):
            for j in range(i + 1, 4):
                pairs += 1
                agree += choices[i] == choices[j]
    assert abs(agree / pairs - expected_agreement) < 0.05, (agree / pairs, expected_agreement)


# ---- NeMo Gym endpoints -----------------------------------------------------------------------


def test_run_rewards_agree_with_verify_on_the_same_response(embedded_server):
    rewards = []
    for seed in range(30):
        row = {
            "responses_create_params": {
                "input": [{"role": "user", "content": HARD}],
                "temperature": 1.0,
                "metadata": {"seed": str(seed)},
            },
            "expected_answer": "413",
            "task_id": "t1",
        }
        status, ran = call(embedded_server.url, "/run", row)
        assert status == 200
        assert ran["task_id"] == "t1" and ran["responses_create_params"] == row["responses_create_params"]
        assert ran["response"]["object"] == "response" and "extracted_answer" in ran
        status, verified = call(embedded_server.url, "/verify", {**row, "response": ran["response"]})
        assert status == 200 and verified["task_id"] == "t1"
        assert (verified["reward"], verified["extracted_answer"]) == (ran["reward"], ran["extracted_answer"])
        rewards.append(ran["reward"])
    assert set(rewards) == {0.0, 1.0}


def test_run_and_verify_without_expected_answer_are_400(embedded_server):
    status, reply = call(embedded_server.url, "/run", {"responses_create_params": {"input": EASY}})
    assert status == 400 and reply["error"]["param"] == "expected_answer"
    response = call(embedded_server.url, "/v1/responses", {"input": EASY})[1]
    status, reply = call(
        embedded_server.url, "/verify", {"responses_create_params": {"input": EASY}, "response": response}
    )
    assert status == 400 and "expected_answer" in reply["error"]["message"]


def test_stats_and_request_log_say_which_prompt_hit_the_server(embedded_server, request_log):
    before = call(embedded_server.url, "/stats")[1]
    prompt = normalize_row(
        {"responses_create_params": {"input": [{"role": "user", "content": "What is 2 + 99?"}]}}, "x"
    )
    call(
        embedded_server.url,
        "/v1/responses",
        {"model": "reference", "input": prompt.row["responses_create_params"]["input"], "metadata": {"seed": "77"}},
    )
    chat(embedded_server.url, "What is 2 + 99?", seed=78, n=3)
    after = call(embedded_server.url, "/stats")[1]
    assert after["requests"]["/v1/responses"] == before["requests"].get("/v1/responses", 0) + 1
    assert after["statuses"]["/v1/chat/completions"]["200"] == before["statuses"]["/v1/chat/completions"]["200"] + 1
    entries = [json.loads(line) for line in request_log.read_text().splitlines()][-2:]
    sha = prompt_id(prompt)
    assert entries == [
        {"path": "/v1/responses", "model": "reference", "prompt_sha": sha, "seed": 77, "n": 1, "status": "200"},
        {"path": "/v1/chat/completions", "model": "reference", "prompt_sha": sha, "seed": 78, "n": 3, "status": "200"},
    ]


# ---- checkpoints ------------------------------------------------------------------------------


def test_models_resolve_inside_the_checkpoint_dir_and_escapes_are_404(embedded_server, checkpoint_dir, tmp_path):
    outside = tmp_path / "outside.json"
    shutil.copy(REFERENCE_PATH, outside)
    link = checkpoint_dir / "link.json"
    if not link.exists():
        os.symlink(outside, link)
    for model in ("iter1", "iter1.json"):
        assert chat(embedded_server.url, model=model)[0] == 200
    for model in ("../outside.json", str(outside), "/etc/passwd", "link", "link.json", "missing", "..%2Fx"):
        status, reply = chat(embedded_server.url, model=model)
        assert status == 404, model
        assert reply["error"]["code"] == "model_not_found" and reply["error"]["param"] == "model"
    assert chat(embedded_server.url)[0] == 200, "still serving"


def test_a_changed_checkpoint_file_is_picked_up_by_the_next_request(embedded_server, checkpoint_dir):
    classes = json.loads(REFERENCE_PATH.read_text())["classes"]
    save_checkpoint(checkpoint_dir / "moving.json", classes)
    wrong = texts(chat(embedded_server.url, HARD, model="moving", temperature=0)[1])[0]
    assert policy.classify_output(HARD, wrong) == "off_by_one"
    classes["hard"]["correct"] = 3.0
    save_checkpoint(checkpoint_dir / "moving.json", classes)
    right = texts(chat(embedded_server.url, HARD, model="moving", temperature=0)[1])[0]
    assert policy.classify_output(HARD, right) == "correct"


# ---- bad requests -----------------------------------------------------------------------------

GOOD_CHAT = {"model": "reference", "messages": [{"role": "user", "content": EASY}]}
GOOD_RESPONSES = {"model": "reference", "input": EASY}


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", b"{not json", None),
        ("/v1/chat/completions", b"[1, 2]", None),
        ("/v1/chat/completions", {"model": "reference"}, "messages"),
        ("/v1/chat/completions", {**GOOD_CHAT, "messages": [{"role": "user"}]}, "messages"),
        ("/v1/responses", {"model": "reference"}, "input"),
        ("/v1/responses", {**GOOD_RESPONSES, "input": []}, "input"),
        ("/v1/chat/completions", {**GOOD_CHAT, "temperature": -0.1}, "temperature"),
        ("/v1/chat/completions", {**GOOD_CHAT, "temperature": 2.5}, "temperature"),
        ("/v1/responses", {**GOOD_RESPONSES, "temperature": "hot"}, "temperature"),
        ("/v1/chat/completions", {**GOOD_CHAT, "top_p": 0}, "top_p"),
        ("/v1/responses", {**GOOD_RESPONSES, "top_p": 1.5}, "top_p"),
        ("/v1/chat/completions", {**GOOD_CHAT, "max_tokens": 0}, "max_tokens"),
        ("/v1/chat/completions", {**GOOD_CHAT, "max_completion_tokens": 0}, "max_completion_tokens"),
        ("/v1/responses", {**GOOD_RESPONSES, "max_output_tokens": 0}, "max_output_tokens"),
        ("/v1/chat/completions", {**GOOD_CHAT, "n": 0}, "n"),
        ("/v1/chat/completions", {**GOOD_CHAT, "seed": "abc"}, "seed"),
        ("/v1/responses", {**GOOD_RESPONSES, "metadata": {"seed": "abc"}}, "metadata.seed"),
        ("/v1/chat/completions", {**GOOD_CHAT, "stream": True}, "stream"),
        ("/run", {"expected_answer": "1"}, "responses_create_params"),
        (
            "/run",
            {"responses_create_params": {"input": EASY, "temperature": 9}, "expected_answer": "85"},
            "responses_create_params.temperature",
        ),
    ],
)
def test_a_bad_request_is_a_400_naming_the_field_and_the_server_keeps_serving(embedded_server, path, body, param):
    status, reply = call(embedded_server.url, path, body)
    assert status == 400
    error = reply["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert (param or "JSON") in error["message"]
    good = GOOD_RESPONSES if path == "/v1/responses" else GOOD_CHAT
    assert (
        call(embedded_server.url, "/v1/responses" if path == "/v1/responses" else "/v1/chat/completions", good)[0]
        == 200
    )


# ---- faults and latency -----------------------------------------------------------------------

FAULT_SERVERS = {
    "500": ["--fail-500", "1"],
    "502": ["--fail-502", "1"],
    "503": ["--fail-503", "1"],
    "429": ["--fail-429", "1", "--retry-after", "0.05"],
    "429-date": ["--fail-429-date", "1", "--retry-after", "120"],
    "reset": ["--fail-reset", "1"],
    "hang": ["--fail-hang", "1", "--hang-s", "2"],
    "trickle": ["--fail-trickle", "1", "--hang-s", "1"],
    "malformed": ["--fail-malformed", "1"],
    "missing-fields": ["--fail-missing-fields", "1"],
    "mixed": ["--fail-rate", "1", "--hang-s", "0.2", "--fault-seed", "4"],
    "mixed-again": ["--fail-rate", "1", "--hang-s", "0.2", "--fault-seed", "4"],
    "latency": ["--latency-ms", "150", "--jitter-ms", "20"],
}


@pytest.fixture(scope="module")
def fault_servers():
    """One server per fault kind, started in parallel (each is a real subprocess)."""
    with ThreadPoolExecutor(len(FAULT_SERVERS)) as pool:
        servers = dict(zip(FAULT_SERVERS, pool.map(start_embedded_server, FAULT_SERVERS.values())))
    yield servers
    for server in servers.values():
        server.stop()


@contextlib.contextmanager
def raw_post(url: str, path: str = "/v1/chat/completions", timeout: float = 5.0):
    """POST a good chat request with http.client; yields the response before its body is read."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(
            "POST",
            path,
            json.dumps(GOOD_CHAT if path != "/v1/responses" else GOOD_RESPONSES),
            {"Content-Type": "application/json"},
        )
        yield connection.getresponse()
    finally:
        connection.close()


def test_fault_500_is_a_json_server_error(fault_servers):
    status, reply = chat(fault_servers["500"].url)
    assert status == 500 and reply["error"]["type"] == "server_error"


@pytest.mark.parametrize("kind", ["502", "503"])
def test_fault_502_and_503_have_html_bodies(fault_servers, kind):
    with raw_post(fault_servers[kind].url) as response:
        assert response.status == int(kind) and response.getheader("Content-Type").startswith("text/html")
        assert f"<h1>{kind}" in response.read().decode()


def test_fault_429_says_when_to_retry_in_seconds(fault_servers):
    with raw_post(fault_servers["429"].url) as response:
        assert response.status == 429 and response.getheader("Retry-After") == "0.05"
        assert response.getheader("retry-after-ms") == "50"


def test_fault_429_date_says_when_to_retry_as_an_http_date(fault_servers):
    with raw_post(fault_servers["429-date"].url) as response:
        when = email.utils.parsedate_to_datetime(response.getheader("Retry-After"))
        assert response.status == 429 and 100 < when.timestamp() - time.time() < 140


def test_fault_reset_cuts_the_connection_mid_body(fault_servers):
    with raw_post(fault_servers["reset"].url) as response:
        assert response.status == 200
        with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
            response.read()


def test_fault_hang_outlasts_a_client_timeout(fault_servers):
    with pytest.raises(TimeoutError):
        with raw_post(fault_servers["hang"].url, timeout=0.3):
            pass


def test_fault_trickle_sends_the_body_slowly(fault_servers):
    start = time.monotonic()
    with raw_post(fault_servers["trickle"].url) as response:
        assert response.status == 200 and time.monotonic() - start < 0.5, "headers come at once"
        body = response.read()
    assert time.monotonic() - start > 0.8, "the body takes --hang-s"
    assert json.loads(body)["object"] == "chat.completion"


def test_fault_malformed_is_a_200_with_broken_json(fault_servers):
    with raw_post(fault_servers["malformed"].url) as response:
        assert response.status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.read())


def test_fault_missing_fields_is_a_200_without_choices(fault_servers):
    status, reply = chat(fault_servers["missing-fields"].url)
    assert status == 200 and "choices" not in reply
    status, reply = call(fault_servers["missing-fields"].url, "/v1/responses", GOOD_RESPONSES)
    assert status == 200 and "output" not in reply


def test_fail_rate_mixes_the_classic_faults_reproducibly_by_seed(fault_servers):
    def outcomes(server) -> list[str]:
        seen = []
        for _ in range(40):
            try:
                with raw_post(server.url, timeout=2) as response:
                    json.loads(response.read())
                    seen.append(str(response.status))
            except (OSError, http.client.HTTPException, json.JSONDecodeError) as exc:
                seen.append(type(exc).__name__)
        return seen

    first, second = outcomes(fault_servers["mixed"]), outcomes(fault_servers["mixed-again"])
    assert first == second, "same --fault-seed, same faults"
    statuses = call(fault_servers["mixed"].url, "/stats")[1]["statuses"]["/v1/chat/completions"]
    assert set(statuses) == {"fault:500", "fault:429", "fault:reset", "fault:hang", "fault:malformed"}


def test_faults_spare_health_and_stats(fault_servers):
    assert call(fault_servers["500"].url, "/health") == (200, {"status": "ok"})
    assert call(fault_servers["500"].url, "/stats")[0] == 200


def test_latency_is_added_to_generation_requests(fault_servers):
    start = time.monotonic()
    assert chat(fault_servers["latency"].url)[0] == 200
    assert time.monotonic() - start >= 0.12


# ---- process life ------------------------------------------------------------------------------


def test_serve_py_prints_its_url_first_and_exits_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "scripts/serve.py", "--host", "127.0.0.1", "--port", "0"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        assert call(line.split()[-1], "/health")[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        process.stdout.close()


def test_the_embedded_server_is_started_as_a_module_by_the_copy_of_the_package_that_asks_for_it(tmp_path):
    """No file path to a script: the child is `python -m rollout_pipeline.cli.serve`, with the folder of the package
    that started it first on its PYTHONPATH, so a copy of the package with no scripts/ folder beside it starts a
    server from its own code."""
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(
        SCRIPTS / "rollout_pipeline", elsewhere / "rollout_pipeline", ignore=shutil.ignore_patterns("*.pyc")
    )
    code = (
        "import json, rollout_pipeline\n"
        "from rollout_pipeline.reference.embedded import start_embedded_server\n"
        "with start_embedded_server([]) as server:\n"
        "    command = open(f'/proc/{server.pid}/cmdline').read().split('\\0')\n"
        "    environ = open(f'/proc/{server.pid}/environ').read().split('\\0')\n"
        "    path = next(e.split('=', 1)[1] for e in environ if e.startswith('PYTHONPATH='))\n"
        "    print(json.dumps({'package': rollout_pipeline.__file__, 'command': command, 'path': path}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(elsewhere)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["package"] == str(elsewhere / "rollout_pipeline" / "__init__.py")
    assert seen["command"][1:3] == ["-m", "rollout_pipeline.cli.serve"]
    assert seen["path"].split(os.pathsep)[0] == str(elsewhere)


def test_the_server_dies_with_its_parent(tmp_path):
    parent_code = (
        "from rollout_pipeline.reference.embedded import start_embedded_server\n"
        "import time\n"
        "server = start_embedded_server([])\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()  # SIGKILL: no cleanup code runs in the parent
    parent.wait()
    parent.stdout.close()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_a_server_that_cannot_start_reports_why(tmp_path):
    from rollout_pipeline.errors import UserError

    with pytest.raises(UserError, match="checkpoint-dir"):
        start_embedded_server(["--checkpoint-dir", str(tmp_path / "nope")])


def test_checkpoints_without_a_json_suffix_are_listed_and_served(start_server, tmp_path):
    # The RL loop writes checkpoints as data/rl/checkpoints/iter_NNN; a trainer may write any file name.
    shutil.copy(REFERENCE_PATH, tmp_path / "iter_004")
    shutil.copy(REFERENCE_PATH, tmp_path / "warm.json")
    (tmp_path / ".iter_005.tmp").write_text("{}")
    server = start_server("--checkpoint-dir", str(tmp_path))
    status, models = call(server.url, "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["reference", "iter_004", "warm"]
    status, reply = chat(server.url, model="iter_004", temperature=0)
    assert status == 200 and reply["model"] == "iter_004"
