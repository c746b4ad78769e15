"""Secrets out of everything the collector writes or prints: the API key's value and a URL's credentials, even
when a server echoes them back in an error body; and the control characters of server text out of every line."""
from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

import orjson

from rollout_pipeline.errors import printable

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
