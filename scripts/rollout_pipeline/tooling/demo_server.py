"""The real model server `make demo-real` collects from: vLLM or llama-cpp-python's, started, with the requests in
flight it serves best."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from rollout_pipeline.tooling.llama_server import MODEL_ALIAS, llama_server
from rollout_pipeline.tooling.local_server import running
from rollout_pipeline.tooling.vllm_server import MODEL_NAME, vllm_server

KINDS = ("vllm", "llama")


@dataclass(frozen=True)
class DemoServer:
    """A started server: where it listens, the model name it answers to, how many requests to keep in flight."""

    url: str
    model: str
    parallel: int


@contextlib.contextmanager
def demo_server(kind: str, python: str) -> Iterator[DemoServer]:
    """Start a server of that kind (one of KINDS) under the tier's interpreter `python`; stop it on leaving."""
    if kind == "vllm":
        with running(vllm_server(python)) as server:
            # 32 in flight: 1.7 rollouts/s here, against 1.2 at 8; 48 and 64 gain nothing more (bench/RESULTS.md).
            yield DemoServer(server.url, MODEL_NAME, 32)
    else:
        with llama_server(python) as url:
            yield DemoServer(url, MODEL_ALIAS, 1)  # it answers one request at a time
