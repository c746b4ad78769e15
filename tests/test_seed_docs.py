"""The seed documents the project promises to honour are vendored in tests/seed_docs/ so tests never depend on
a folder outside the repository; this keeps the copy honest whenever the team's shared folder is beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

VENDORED = Path(__file__).resolve().parent / "seed_docs"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "seeds"


def test_the_vendored_seed_documents_are_there():
    names = sorted(p.name for p in VENDORED.glob("*.txt"))
    assert names == ["000_46c80efc949f60b0.txt", "002_e2d8e0e22c428514.txt"]
    assert "ng_collect_rollouts" in (VENDORED / names[0]).read_text()


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared/seeds folder beside the repository")
def test_the_vendored_seed_documents_match_the_shared_ones():
    for shared in SHARED.glob("*.txt"):
        assert (VENDORED / shared.name).read_bytes() == shared.read_bytes(), shared.name
