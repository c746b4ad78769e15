"""The checks of single values the models' types cannot say: URLs, verifiers, templates, bands, iteration keys."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

from rollout_pipeline.errors import UserError, did_you_mean

ITERATION_KEY_RE = re.compile(r"\d{3}")
UPDATE_PLACEHOLDERS = ("checkpoint", "model", "iteration")


def check_url(value: Any) -> str | None:
    urls = value if isinstance(value, list) else [value]
    if not urls:
        return "give at least one URL, or 'embedded'"
    for url in urls:
        if not isinstance(url, str):
            return f"expected a URL string, got {url!r}"
        if url != "embedded" and not re.match(r"^https?://[^\s/]+", url):
            return f"{url!r} is not an http(s) URL or 'embedded'"
    if "embedded" in urls and len(urls) > 1:
        return "'embedded' cannot be mixed with other URLs"
    return None


def check_verifier(value: str) -> str | None:
    if value in ("math", "exact") or re.match(r"^https?://", value) or re.match(r"^[\w.]+:\w+$", value):
        return None
    return f"{value!r} is not a verifier; use math, exact, a /verify URL or module:function{did_you_mean(value, ['math', 'exact'])}"


def validated_verifier(value: str) -> str:
    """A verifier named on a command line, checked as params.yaml's `verifier` is."""
    problem = check_verifier(value)
    if problem:
        raise UserError(f"--verifier: {problem}")
    return value


def check_env_name(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return None
    return "must be the NAME of an environment variable (the key itself never goes in params.yaml)"


def check_iteration_key(value: str) -> str | None:
    if ITERATION_KEY_RE.fullmatch(value):
        return None
    return f'iterations are three digits in quotes, like "004" (got {value!r})'


def template(*allowed: str) -> Callable[[str], str | None]:
    """A check for a str.format template that may only use the `allowed` placeholders."""

    def check(value: str) -> str | None:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            return f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        for name in names:
            if name not in allowed:
                return (
                    f"unknown placeholder {{{name}}}{did_you_mean(name, allowed)}; "
                    f"placeholders: {', '.join('{' + a + '}' for a in allowed)}"
                )
        return None

    return check


def check_http_url(value: str) -> str | None:
    return None if re.match(r"^https?://[^\s/]+", value) else f"{value!r} is not an http(s) URL"


def check_update_body(value: dict) -> str | None:
    check = template(*UPDATE_PLACEHOLDERS)
    for key, item in value.items():
        problem = check(item) if isinstance(item, str) else None
        if problem:
            return f"{key}: {problem}"
    return None


def check_band(value: list[float]) -> str | None:
    if len(value) != 2 or not 0 <= value[0] < value[1] <= 1:
        return f"expected [low, high] with 0 <= low < high <= 1, got {value!r}"
    return None
