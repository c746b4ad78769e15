"""The README's troubleshooting table quotes messages the code really prints: each row holds a fragment that
stands verbatim in the source, so a reworded message fails here until the table is updated too."""

from __future__ import annotations

import re

from support import ROOT

README = (ROOT / "README.md").read_text()
TABLE = README.split("## Troubleshooting", 1)[1]
ROWS = re.findall(r"^\| `([^`]+)`", TABLE, re.M)
# Implicitly concatenated literals ("a " "b", across lines) read as one string.
SOURCE = re.sub(r'"\s*\n\s*f?"', "", "".join(p.read_text() for p in (ROOT / "scripts").rglob("*.py")))

FRAGMENTS = [
    "lacks the project's packages",
    ": not valid JSON (",
    "unknown agent_name",
    ": unknown key",
    "is not set (api_key_env names it)",
    ": cannot connect (",
    "(is the host reachable? a firewall may be dropping",
    "Retry-After); waiting",
    "(Retry-After), longer than give_up_after_s (",
    "no request to the agent succeeded for",
    "was killed by signal",
    "rollouts failed (max_failure_rate",
    "settings changed since the previous run",
    "the command succeeded but wrote nothing at",
    "answered HTTP",
    "in rl.iterations",
    "rollouts all failed",
    "which the agent's verifier: ",
    "rollouts done and kept in",
    "cannot reach the Ray cluster at",
    "its unfinished rollouts go to the other workers",
    "give a string or number, or a list of them",
]


def test_every_troubleshooting_row_quotes_a_fragment_of_a_real_message():
    assert len(ROWS) >= 15
    unmatched = [row for row in ROWS if not any(fragment in row for fragment in FRAGMENTS)]
    assert not unmatched, f"add the message's fragment to FRAGMENTS (and check it is printed): {unmatched}"


def test_every_fragment_is_printed_by_the_code():
    missing = [fragment for fragment in FRAGMENTS if fragment not in SOURCE]
    assert not missing, f"the README quotes messages the code no longer prints: {missing}"
