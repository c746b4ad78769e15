"""The one place an agent's `verifier` setting is classified: a built-in verifier, a /verify URL or module:function."""

from __future__ import annotations

from typing import Literal

from rollout_pipeline.verify import VERIFIER_KINDS

Kind = Literal["builtin", "url", "function"]


def verifier_kind(verifier: str) -> Kind:
    """How a `verifier` setting is run: one of VERIFIER_KINDS in process ("builtin"), a resources server's /verify
    URL ("url"), or a module:function ("function")."""
    if verifier in VERIFIER_KINDS:
        return "builtin"
    if verifier.startswith(("http://", "https://")):
        return "url"
    return "function"
