"""What scored a record (`scored_by`): a verifier's name and a hash of its code, settings and packages."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from pathlib import Path

from rollout_pipeline.collect.protocols import PROTOCOLS
from rollout_pipeline.collect.redact import without_credentials
from rollout_pipeline.collect.verifier_kind import verifier_kind

# The packages the built-in verifiers decide with: their versions are part of what scored a record.
VERIFIER_PACKAGES = ("math-verify", "latex2sympy2_extended", "sympy")


def verifier_fingerprint(protocol: str, verifier: str) -> dict:
    """What scores an agent's rollouts, as recorded on each record (`scored_by`): the verifier, and a hash of its
    code and settings, so a file scored by two versions of a verifier is detectable. The built-in verifiers hash
    their source and the versions of the packages they decide with; module:function its module's source; a
    /verify URL (code on another host) its URL, credentials masked; an agent's own reward, the agent."""
    if PROTOCOLS[protocol].agent_server:
        return {"verifier": "agent"}
    digest = hashlib.sha256(verifier.encode())
    kind = verifier_kind(verifier)
    if kind == "builtin":
        from rollout_pipeline import verify

        for source in sorted(Path(verify.__file__).parent.glob("*.py")):
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
        for package in VERIFIER_PACKAGES:
            try:
                digest.update(f"{package}=={importlib.metadata.version(package)}".encode())
            except importlib.metadata.PackageNotFoundError:
                digest.update(f"{package} absent".encode())
    elif kind == "url":
        verifier = without_credentials(verifier)
        digest = hashlib.sha256(verifier.encode())
    else:
        module = importlib.import_module(verifier.partition(":")[0])
        source = getattr(module, "__file__", None)
        if source and Path(source).is_file():
            digest.update(Path(source).read_bytes())
    return {"verifier": verifier, "hash": digest.hexdigest()[:16]}
