"""The vLLM tier's server command: the flags that make it fast on a small CPU, and LoRA only where it is used."""

from __future__ import annotations

import subprocess
from pathlib import Path

from rollout_pipeline.tooling.vllm_server import cpu_dtype, vllm_server
from support import PY, SCRIPTS


def _tier(tmp_path: Path) -> tuple[str, Path]:
    """A virtualenv-shaped folder with a converted model's config and vLLM's OpenMP runtime (nothing is started)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libiomp5.so").write_bytes(b"")
    model = tmp_path / "models" / "smollm2-135m"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    return str(tmp_path / "bin" / "python"), model


def test_bfloat16_only_on_a_cpu_that_computes_in_it_float32_on_an_avx2_cpu_where_it_is_emulated():
    assert cpu_dtype("flags\t\t: fpu sse2 avx avx2 fma") == "float32"
    assert cpu_dtype("flags\t\t: avx2 avx512f avx512_vnni") == "float32"
    assert cpu_dtype("flags\t\t: avx2 avx512f avx512_bf16") == "bfloat16"
    assert cpu_dtype("flags\t\t: avx2 amx_tile amx_bf16") == "bfloat16"


def test_the_server_for_plain_collection_has_no_runtime_lora_and_the_rl_loops_server_has_it(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", raising=False)
    python, model = _tier(tmp_path)
    plain = vllm_server(python, model, port=1)
    assert "--enable-lora" not in plain.command and "--max-lora-rank" not in plain.command
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in plain.env
    with_lora = vllm_server(python, model, lora=True, port=1)
    assert with_lora.command[with_lora.command.index("--max-lora-rank") + 1] == "8"
    assert with_lora.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_the_server_preloads_the_tiers_openmp_runtime_and_keeps_a_preload_already_set(tmp_path, monkeypatch):
    python, model = _tier(tmp_path)
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    server = vllm_server(python, model, port=1)
    assert server.env["LD_PRELOAD"] == f"{tmp_path / 'lib' / 'libiomp5.so'} /opt/other.so"
    assert server.command[server.command.index("--dtype") + 1] in ("bfloat16", "float32")


def test_serving_by_hand_without_a_converted_model_is_one_line_naming_the_folder_and_the_make_target(tmp_path):
    """`python -m rollout_pipeline.cli.serve_vllm`, the front end over tooling/vllm_server, exits 2 before it starts
    anything."""
    python, model = _tier(tmp_path)
    (model / "config.json").unlink()
    result = subprocess.run(
        [PY, "-m", "rollout_pipeline.cli.serve_vllm", "--python", python],
        cwd=SCRIPTS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"serve_vllm: error: {model}: no converted model (run `make setup-vllm`)\n"
