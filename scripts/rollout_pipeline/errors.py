"""User-facing errors: one clear line, no traceback."""
from __future__ import annotations

import difflib
import sys
from typing import Callable, Iterable, NoReturn


class UserError(Exception):
    """An error caused by input or configuration; printed as one line without a traceback."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def fail(message: str) -> NoReturn:
    raise UserError(message)


def run_cli(main: Callable[[], int | None], prog: str) -> NoReturn:
    """Run a command-line entry point: UserError -> one line on stderr and exit 2."""
    try:
        code = main()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    sys.exit(code or 0)
