"""Rollout-data pipeline for LLM post-training. Core modules here (errors, jsonl, params, schema, rows); the layers
are subpackages: collect/, verify/, stages/, rl/, reference/, cli/ (see ARCHITECTURE.md)."""

import importlib.util as _util
import sys as _sys

# The stage scripts run with whatever `python` is first on PATH; DVC runs them that way too. Without the project's
# packages, say which interpreter that was and what to do, instead of a ModuleNotFoundError traceback.
_MISSING = [name for name in ("aiohttp", "orjson", "yaml", "jq") if _util.find_spec(name) is None]
if _MISSING:
    print(
        f"error: {_sys.executable} lacks the project's packages ({', '.join(_MISSING)}); activate the virtualenv "
        "(source .venv/bin/activate) or run through make (make run, make test), which creates it",
        file=_sys.stderr,
    )
    raise SystemExit(2)
