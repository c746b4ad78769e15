"""Token counting for the reference server's `usage` fields.

The reference policy has no real tokenizer, so usage is counted with one regex,
``\\w+|[^\\w\\s]``: every run of word characters is a token and every other
non-space character is a token of its own; whitespace is free. For example
``37 + 48 = 85.`` is 6 tokens and ``\\boxed{85}`` is 5 (``\\``, ``boxed``, ``{``, ``85``, ``}``).

The same rule counts input and output:
- input tokens = the sum of ``count_tokens(content)`` over the input messages
  (roles and message framing cost nothing);
- output tokens = ``count_tokens(output_text)``, and truncation to ``max_tokens``
  cuts the text right after the last kept token, so a cut output counts exactly
  ``max_tokens`` tokens.

Token ids (asked with `return_token_ids`, vLLM's flag) come from a toy vocabulary: a token's id is a hash of its
text, so the same token always has the same id. They are stable and exact for this server's own tokens, which is
all a test of the pipeline needs; they mean nothing to any real model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Number of tokens in `text` under the regex rule above."""
    return len(TOKEN_RE.findall(text))


def count_message_tokens(contents: Iterable[str]) -> int:
    """Input tokens of a conversation: the sum over its message contents."""
    return sum(len(TOKEN_RE.findall(content)) for content in contents)


def token_ends(text: str) -> list[int]:
    """End offset of each token; `text[:ends[k-1]]` is the text cut to its first k tokens."""
    return [match.end() for match in TOKEN_RE.finditer(text)]


def truncate(text: str, max_tokens: int | None) -> tuple[str, int, bool]:
    """(text cut to at most `max_tokens` tokens, its token count, whether it was cut)."""
    ends = token_ends(text)
    if max_tokens is None or len(ends) <= max_tokens:
        return text, len(ends), False
    return text[: ends[max_tokens - 1]], max_tokens, True


VOCABULARY_SIZE = 50_000


def tokens(text: str) -> list[str]:
    """The tokens of `text` under the regex rule (whitespace is free, so they do not join back into the text)."""
    return TOKEN_RE.findall(text)


def token_id(token: str) -> int:
    """The toy vocabulary's id of a token: stable across runs and machines."""
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big") % VOCABULARY_SIZE
