"""The TRL tier: the stages' SFT and DPO files loaded with Hugging Face datasets and checked with TRL's data utilities.

`make test-trl` installs datasets, transformers, TRL and torch's CPU build into their own virtualenv (.venv-trl,
pinned by requirements-trl.lock) and runs these tests there; a plain `make test` skips them. Nothing is downloaded:
the hub is switched off, and the tokenizer is built here, with a chat template in the style of reasoning models'.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before datasets or transformers are imported: any attempt to reach the hub fails instead of downloading.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

# ChatML, with an assistant's `reasoning_content` rendered as <think>...</think> before its answer (as Qwen3's
# template does). A message without it, or with it null (datasets fills absent struct fields with null), has none.
CHAT_TEMPLATE = (
    r"{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    r"{% if message['role'] == 'assistant' and message['reasoning_content'] is string %}"
    r"{{ '<think>\n' + message['reasoning_content'] + '\n</think>\n' }}{% endif %}"
    r"{{ message['content'] + '<|im_end|>\n' }}{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.trl)


@pytest.fixture(scope="session")
def tokenizer():  # a transformers.PreTrainedTokenizerFast (transformers is the TRL tier's, imported inside)
    """A byte-level tokenizer (every byte a token, no merges: any text encodes) with the chat template above."""
    transformers = pytest.importorskip("transformers", reason="the TRL tier runs with `make test-trl`")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={symbol: index for index, symbol in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        additional_special_tokens=SPECIAL_TOKENS,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
