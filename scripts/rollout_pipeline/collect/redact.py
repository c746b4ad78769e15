"""Secrets: the Authorization header from the variable api_key_env names, sent only to the agent's own origins; and
kept out of everything the collector writes or prints: the API key's value and a URL's credentials, even when a
server echoes them back in an error body; and the control characters of server text out of every line."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.errors import UserError, printable

MASK = "***"
MIN_SECRET_CHARS = 4  # shorter "secrets" (a user name like "a") would mask ordinary text


def url_credentials(urls: Iterable[str]) -> list[str]:
    """The passwords (and user:password pairs) inside `http://user:password@host` URLs."""
    found = []
    for url in urls:
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        if parts.password:
            found += [parts.password, f"{parts.username}:{parts.password}"]
    return found


def without_credentials(url: Any) -> Any:
    """A URL (or a list of them) with its user:password@ part masked; anything else unchanged."""
    if isinstance(url, list):
        return [without_credentials(u) for u in url]
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Redactor:
    """Replaces each secret, in text and in JSON bytes (raw and JSON-escaped), with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._encoded = [(s.encode(), orjson.dumps(s)[1:-1]) for s in self.secrets]

    def text(self, value: str) -> str:
        """A line to print or keep: each secret masked, and control characters a server sent made inert."""
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return printable(value)

    def json_bytes(self, data: bytes) -> bytes:
        for raw, escaped in self._encoded:
            if raw in data:
                data = data.replace(raw, MASK.encode())
            if escaped != raw and escaped in data:
                data = data.replace(escaped, MASK.encode())
        return data


def agent_headers(agent_name: str, agent: AgentSettings) -> tuple[dict[str, str], Redactor]:
    """The request headers for an agent (its API key, from the variable api_key_env names, as a Bearer token), and
    the redactor that masks that key and the credentials of its URLs and /verify URL."""
    headers = {"Content-Type": "application/json"}
    env_name = agent.api_key_env
    if env_name:
        key = (os.environ.get(env_name) or "").strip()  # a trailing newline from `$(cat keyfile)` is common
        if not key:
            raise UserError(
                f"agent {agent_name!r}: environment variable {env_name} is not set "
                f"(api_key_env names it); export {env_name}=... and run again"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in key):
            # Never echo the value: it is a secret.
            raise UserError(
                f"agent {agent_name!r}: environment variable {env_name} holds a control "
                f"character (value not shown); export {env_name} as the bare key and run again"
            )
        headers["Authorization"] = f"Bearer {key}"
    urls = agent.urls
    key = [headers["Authorization"][len("Bearer ") :]] if "Authorization" in headers else []
    verifier = agent.verifier
    redactor = Redactor(key + url_credentials([*urls, verifier]))
    keyed = [*urls, *([verifier] if "Authorization" in headers_for(verifier, urls, headers) else [])]
    if key and url_credentials(keyed):
        raise UserError(
            f"agent {agent_name!r}: a URL with user:password@ and api_key_env would both set "
            "the Authorization header; give the credentials one way"
        )
    return headers, redactor


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def headers_for(url: str, agent_urls: list[str], headers: dict[str, str]) -> dict[str, str]:
    """Headers for a request to `url` (a /verify URL): the agent's API key goes only to the agent's own origins,
    never to another host."""
    if not url.startswith(("http://", "https://")) or any(_origin(url) == _origin(u) for u in agent_urls):
        return headers
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}
