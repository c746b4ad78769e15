"""Shared fixtures: the embedded reference server as a real subprocess on a free loopback port; the session's own
cache of validated params; the Ray tests skipped, saying how to install Ray, when the extra is not installed."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from rollout_pipeline.reference.checkpoints import REFERENCE_PATH
from rollout_pipeline.reference.embedded import EmbeddedServer, start_embedded_server
from rollout_pipeline.settings import CACHE_ENV

# Validation results are kept by content (settings.validated_once). The session keeps its own, in a fresh
# directory that every process it starts inherits, so that the tests neither read nor fill the user's cache.
SESSION_CACHE = os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="rollout-validated-")

RAY_MISSING = "the Ray executor's extra is not installed: `make setup-ray` installs it (pip install -e '.[ray]')"


def pytest_sessionfinish(session):
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(items):
    """Tests marked `ray` need Ray; without the extra (`make setup` alone) they skip and say how to install it."""
    if importlib.util.find_spec("ray") is not None:
        return
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.skip(reason=RAY_MISSING))


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
