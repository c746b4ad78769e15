"""Shared fixtures: the embedded reference server as a real subprocess on a free loopback port."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rollout_pipeline.reference.checkpoints import REFERENCE_PATH
from rollout_pipeline.reference.embedded import EmbeddedServer, start_embedded_server


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A checkpoint directory holding a copy of the shipped checkpoint as `iter1.json`."""
    directory = tmp_path_factory.mktemp("checkpoints")
    shutil.copy(REFERENCE_PATH, directory / "iter1.json")
    return directory


@pytest.fixture(scope="session")
def request_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs") / "requests.jsonl"


@pytest.fixture(scope="session")
def embedded_server(checkpoint_dir, request_log) -> EmbeddedServer:
    """`python scripts/serve.py --port 0 --checkpoint-dir DIR --request-log LOG`, shared by the session."""
    with start_embedded_server(["--checkpoint-dir", str(checkpoint_dir), "--request-log", str(request_log)]) as server:
        yield server


@pytest.fixture
def start_server():
    """Factory for servers with their own flags; every server it starts is stopped after the test."""
    started: list[EmbeddedServer] = []

    def start(*flags: str) -> EmbeddedServer:
        server = start_embedded_server(list(flags))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
