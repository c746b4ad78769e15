"""User-facing errors: one clear line, no traceback."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn

# C0 controls (ESC starts the terminal's escape sequences; CR and LF break a line), DEL, C1 controls (0x9b is a
# one-byte CSI), and the bidirectional overrides that reorder what a line shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Text from outside (a server's message, a cause it names) made safe for a terminal line, a log or a JSON
    key: each control character is shown as an escape (\\x1b, \\u202e) and does nothing."""
    return _CONTROL.sub(
        lambda match: f"\\x{ord(match.group()):02x}" if ord(match.group()) < 0x100 else f"\\u{ord(match.group()):04x}",
        text,
    )


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
        print(f"{prog}: error: {printable(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    sys.exit(code or 0)
