"""A full disk while collecting: a clear error, the progress kept, the old output not destroyed, no temp files.

The disk is a small tmpfs (root can mount one) filled with a ballast file to leave exactly the free space a
case needs; where mounting is not allowed the tmpfs cases skip, and RLIMIT_FSIZE (a per-process file size
cap: writes past it fail with EFBIG) makes writes fail instead.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from reliability_support import collect_command, count_lines, fast_agent, last_line, listing, run_collect
from support import read_jsonl

RUN = {"num_repeats": 6, "seed": 44, "num_samples_in_parallel": 4}  # 72 rollouts
OLD_RUN = {"num_repeats": 6, "seed": 45, "num_samples_in_parallel": 4}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prompts, upstream) -> Path:
    """The run the full-disk cases attempt, done on a roomy disk."""
    work = tmp_path_factory.mktemp("disk-reference")
    out = work / "out.jsonl"
    assert run_collect(work, prompts, out, fast_agent(upstream.url), **RUN).returncode == 0
    return out


@pytest.fixture
def small_disk(tmp_path):
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], capture_output=True, timeout=30
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the RLIMIT_FSIZE case covers it")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30)


def _leave_free(directory: Path, free_bytes: int) -> Path:
    """Fill the file system with a ballast file until about `free_bytes` are left."""
    stat = os.statvfs(directory)
    available = stat.f_bavail * stat.f_frsize
    ballast = directory / "ballast.bin"
    with open(ballast, "wb") as handle:
        handle.write(b"\0" * max(0, available - free_bytes))
    return ballast


def _old_output(directory: Path, prompts: Path, url: str) -> bytes:
    """A previous successful run's output in `directory` (a different seed, so it differs from the new run)."""
    result = run_collect(directory, prompts, directory / "out.jsonl", fast_agent(url), **OLD_RUN)
    assert result.returncode == 0, result.stderr
    (directory / "out.stats.json").unlink()
    (directory / "out.failures.ndjson").unlink()
    return (directory / "out.jsonl").read_bytes()


def _assert_kept(directory: Path, reference: Path, expect_all: bool) -> int:
    """The progress file's records are each exactly the reference run's record for that rollout."""
    expected = {(r["task_index"], r["rollout_index"]): r for r in read_jsonl(reference)}
    lines = (directory / ".out.jsonl.progress.jsonl").read_bytes().split(b"\n")[1:]
    kept = [json.loads(line) for line in lines if line.strip() and line.endswith(b"}")]
    assert all(record == expected[(record["task_index"], record["rollout_index"])] for record in kept)
    if expect_all:
        assert len(kept) == len(expected)
    return len(kept)


@pytest.mark.parametrize("when,room", [("mid-run", 0.4), ("final write", 1.5)])
def test_a_full_disk_is_a_clear_error_keeps_progress_and_the_old_output(
    small_disk, prompts, upstream, reference, when, room
):
    """Free space as a multiple of the output's size: 0.4 runs out while the progress file grows; 1.5 holds the
    whole progress file (about one output's size) but not the sorted output written beside it at the end."""
    old = _old_output(small_disk, prompts, upstream.url)
    ballast = _leave_free(small_disk, int(room * reference.stat().st_size))
    result = run_collect(small_disk, prompts, small_disk / "out.jsonl", fast_agent(upstream.url), **RUN)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = last_line(result.stderr)
    assert line.startswith("collect.py: error: ") and "No space left on device" in line, result.stderr
    if when == "mid-run":
        assert "progress.jsonl: cannot append" in line and "finished rollouts so far are kept" in line
    else:
        assert "out.jsonl: could not write" in line and "the previous file is unchanged" in line
    assert (small_disk / "out.jsonl").read_bytes() == old, "the old output is not destroyed"
    kept = _assert_kept(small_disk, reference, expect_all=(when == "final write"))
    assert kept > 0
    assert not [name for name in listing(small_disk) if name.endswith(".tmp")], "no temp file left behind"

    # Space again: the next run finishes from the kept progress.
    ballast.unlink()
    again = run_collect(small_disk, prompts, small_disk / "out.jsonl", fast_agent(upstream.url), **RUN)
    assert again.returncode == 0, again.stderr
    assert f"resuming: {kept} of 72 rollouts already done" in again.stdout
    assert (small_disk / "out.jsonl").read_bytes() == reference.read_bytes()


def _file_size_limit(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_file_size_limit_while_writing_is_a_clear_error_and_keeps_progress(tmp_path, prompts, upstream, reference):
    old = _old_output(tmp_path, prompts, upstream.url)
    command = collect_command(tmp_path, prompts, tmp_path / "out.jsonl", fast_agent(upstream.url), **RUN)
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=60, preexec_fn=_file_size_limit(30_000)
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = last_line(result.stderr)
    assert "progress.jsonl: cannot append (File too large)" in line, result.stderr
    assert (tmp_path / "out.jsonl").read_bytes() == old
    kept = _assert_kept(tmp_path, reference, expect_all=False)
    assert 0 < kept < 72 and count_lines(tmp_path / ".out.jsonl.progress.jsonl") >= kept
    assert not [name for name in listing(tmp_path) if name.endswith(".tmp")]

    again = run_collect(tmp_path, prompts, tmp_path / "out.jsonl", fast_agent(upstream.url), **RUN)
    assert again.returncode == 0, again.stderr
    assert f"resuming: {kept} of 72 rollouts already done" in again.stdout
    assert (tmp_path / "out.jsonl").read_bytes() == reference.read_bytes()
