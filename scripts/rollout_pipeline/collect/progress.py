"""The progress file: finished rollouts streamed to disk as they complete, so a crash or Ctrl-C loses nothing.

It lives beside the output as ``.<name>.progress.jsonl`` — outside DVC's declared outputs, because DVC deletes
those before it runs a stage. Its first line is the run identity, which says whether a run takes it up
(collect/resume.py). Each further line is one rollout record, or a skip
marker ``{"task_index", "rollout_index", "skipped": cause, "error"}`` for a rollout that can never be scored (its
prompt does not fit the model's context), so a resume does not send it again. A truncated last line (a crash
mid-write) is cut off on open.

Memory stays flat in the number of rollouts: finished rollouts are indexed by an array of byte offsets (8 bytes
per rollout), and the sorted output is written by reading records back in (task_index, rollout_index) order.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
from array import array
from collections.abc import Iterator
from pathlib import Path

import orjson

from rollout_pipeline.collect.exact_sum import ExactSum
from rollout_pipeline.collect.resume import InputPrefix, identity_change, source_change, swap_in_own_progress
from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import atomic_writer, dumps

NOT_DONE = -1
SKIPPED = -2  # in `offsets`: done, with no record (a skip marker)


def progress_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.progress.jsonl")


def skip_marker(task_index: int, rollout_index: int, cause: str, error: str, kind: str | None = None) -> bytes:
    """The line of a rollout done without a record; `kind` is NeMo Gym's failure_kind, when it named one."""
    marker = {"task_index": task_index, "rollout_index": rollout_index, "skipped": cause, "error": error}
    return dumps({**marker, **({"failure_kind": kind} if kind else {})}) + b"\n"


class ProgressStore:
    """Append-only store of finished rollouts, indexed by rank = task_index * num_repeats + rollout_index."""

    def __init__(
        self,
        output: Path,
        identity: dict,
        num_tasks: int,
        num_repeats: int,
        source: object = None,
        input: InputPrefix | None = None,
        retry_skipped: tuple[str, ...] = (),
    ) -> None:
        self.output = output
        self.path = progress_path(output)
        self.identity = identity
        # Where the rollouts come from (the agent's url setting): recorded, not part of the identity (a resume
        # may go to another replica), but a resume says when it changed.
        self.source = source
        self.input = input
        self.num_repeats = num_repeats
        self.total = num_tasks * num_repeats
        self.offsets = array("q", [NOT_DONE]) * self.total
        self.done = 0  # rollouts with a record (scored)
        self.skips: list[tuple[int, int, str, str]] = []  # (task_index, rollout_index, cause, message), few
        self.skip_kinds: dict[tuple[int, int], str] = {}  # NeMo Gym's failure_kind of a skip, when it named one
        # Skip causes a resume asks for again (--retry-masked: "masked"); other skips stay done.
        self.retry_skipped = retry_skipped
        self.retried_skips = 0
        self.resume_note = ""
        self.set_aside_note = ""
        self._handle = None
        self._lock_fd: int | None = None
        self._end = 0  # byte offset of the progress file's end: where the next record goes
        self.reward_sum = ExactSum()  # of every finished rollout, resumed or new: the run's mean reward

    # -- opening ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Resume from a matching progress file, or start fresh (saying why in `resume_note`)."""
        header = self._header()
        self._lock()
        moved, self.set_aside_note = swap_in_own_progress(self.path, self.output, self.identity, self.input, header)
        if moved:  # our lock was on the file that moved: take it on the one now at the progress path
            os.close(self._lock_fd)
            self._lock_fd = None
            self._lock()
        if self.path.stat().st_size > 0:  # empty: just created by _lock, nothing to resume
            reason = self._load_existing()
            if reason is None:
                self._handle = open(self.path, "ab", buffering=0)
                self._end = self._handle.seek(0, os.SEEK_END)
                if self.set_aside_note:
                    self.resume_note += f"; {self.set_aside_note}"
                return
            self.resume_note = f"starting fresh: {reason}"
        elif self.set_aside_note:
            self.resume_note = f"starting fresh: {self.set_aside_note}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "wb", buffering=0)
            self._end = 0
            self._append(header)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write progress file ({exc.strerror})") from None

    def _header(self) -> bytes:
        fields = {"run_identity": self.identity, "source": self.source}
        if self.input is not None:
            fields["input_bytes"] = self.input.bytes
        return dumps(fields) + b"\n"

    def _lock(self) -> None:
        """One collector per output at a time: two would interleave their appends and corrupt each other's
        index. An exclusive flock on the progress file, held until close (the kernel drops it if we die)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write progress file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"{self.output}: another collector is writing it right now (its progress file {self.path} "
                "is locked); wait for that run to end, or give this one another output"
            ) from None
        self._lock_fd = fd

    def _load_existing(self) -> str | None:
        """Index the finished rollouts of an existing progress file; return why it cannot be resumed, or None."""
        with open(self.path, "rb") as handle:
            first = handle.readline()
            try:
                previous = orjson.loads(first)
                old = previous.get("run_identity", {})
            except (orjson.JSONDecodeError, AttributeError):
                return "the previous progress file has no readable header"
            if not first.endswith(b"\n") or old != orjson.loads(dumps(self.identity)):
                return identity_change(old, self.identity)
            good_end = handle.tell()
            for line in iter(handle.readline, b""):
                if not line.endswith(b"\n"):
                    break  # truncated by a crash mid-write: cut it off below
                try:
                    record = orjson.loads(line)
                    rank = record["task_index"] * self.num_repeats + record["rollout_index"]
                    skipped = record.get("skipped")
                    # A generate-only run's records have no reward yet (its identity says so).
                    reward = 0.0 if skipped else float(record.get("reward", 0.0))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                    break
                if skipped and skipped in self.retry_skipped:
                    self.retried_skips += 1  # asked again: left NOT_DONE
                elif skipped and 0 <= rank < self.total and self.offsets[rank] == NOT_DONE:
                    self.offsets[rank] = SKIPPED
                    self.skips.append(
                        (record["task_index"], record["rollout_index"], str(skipped), str(record.get("error", "")))
                    )
                    if record.get("failure_kind"):
                        self.skip_kinds[(record["task_index"], record["rollout_index"])] = str(record["failure_kind"])
                elif 0 <= rank < self.total and self.offsets[rank] == NOT_DONE:
                    self.offsets[rank] = good_end
                    self.done += 1
                    self.reward_sum.add(reward)
                good_end += len(line)
        if good_end < self.path.stat().st_size:
            os.truncate(self.path, good_end)
        self.resume_note = (
            f"resuming: {self.done} of {self.total} rollouts already done"
            + (f", {len(self.skips)} skipped" if self.skips else "")
            + (f", {self.retried_skips} {'/'.join(self.retry_skipped)} sent again" if self.retried_skips else "")
        )
        if self.done and "source" in previous and previous["source"] != orjson.loads(dumps(self.source)):
            self.resume_note += source_change(previous["source"], self.source, self.path)
        return None

    @staticmethod
    def resume_from_output(output: Path, identity: dict, input_bytes: int, retry_cause: str) -> None:
        """Turn a finished run (its output and failures file) back into progress, without the skips of
        `retry_cause`, so the run resumes and asks for exactly those again (--retry-masked). Written aside, then
        renamed: a crash midway leaves the finished output as it was."""
        failures = output.with_name(f"{output.name.removesuffix('.jsonl')}.failures.ndjson")
        with atomic_writer(progress_path(output)) as out:
            out.write(dumps({"run_identity": identity, "input_bytes": input_bytes}) + b"\n")
            with open(output, "rb") as records:
                while chunk := records.read(1024 * 1024):
                    out.write(chunk)
            if failures.exists():
                with open(failures, "rb") as lines:
                    for line in lines:
                        entry = orjson.loads(line)
                        if entry.get("skipped") and entry.get("cause") != retry_cause:
                            out.write(
                                skip_marker(
                                    entry["task_index"],
                                    entry["rollout_index"],
                                    entry["cause"],
                                    entry.get("error", ""),
                                    entry.get("failure_kind"),
                                )
                            )

    # -- during the run --------------------------------------------------------------------------
    def is_done(self, task_index: int, rollout_index: int) -> bool:
        return self.offsets[task_index * self.num_repeats + rollout_index] != NOT_DONE

    def add_line(self, task_index: int, rollout_index: int, line: bytes, reward: float) -> None:
        """Append one finished rollout (its record's JSON line); unbuffered, so a kill right after loses nothing."""
        rank = task_index * self.num_repeats + rollout_index
        assert self._handle is not None
        if self.offsets[rank] != NOT_DONE:
            return  # delivered twice (it cannot happen; if it did, counting it twice would hide a missing one)
        offset = self._end
        self._append_kept(line)
        self.offsets[rank] = offset
        self.done += 1
        self.reward_sum.add(reward)

    def add_skip(self, task_index: int, rollout_index: int, cause: str, message: str, kind: str | None = None) -> None:
        """Mark a rollout that is not to be scored (masked, or its prompt can never be) as done without a record,
        so a resume does not ask again; `kind` is NeMo Gym's failure_kind, when it named one."""
        rank = task_index * self.num_repeats + rollout_index
        assert self._handle is not None
        if self.offsets[rank] != NOT_DONE:
            return
        self._append_kept(skip_marker(task_index, rollout_index, cause, message, kind))
        self.offsets[rank] = SKIPPED
        self.skips.append((task_index, rollout_index, cause, message))
        if kind:
            self.skip_kinds[(task_index, rollout_index)] = kind

    def skip_causes(self) -> dict[str, int]:
        """How many rollouts were skipped, by cause (sorted, for stable stats)."""
        return dict(sorted(collections.Counter(cause for _, _, cause, _ in self.skips).items()))

    @property
    def settled(self) -> int:
        """Rollouts that need no further request: scored or skipped."""
        return self.done + len(self.skips)

    def _append(self, data: bytes) -> None:
        """One write(2) to the unbuffered file: once it returns the bytes are the OS's, safe from a kill of this
        process. The file's end is tracked here rather than asked for (tell() would be a second syscall)."""
        written = self._handle.write(data)
        while written < len(data):  # a short write (rare: a signal, a full disk) continues where it stopped
            written += self._handle.write(memoryview(data)[written:])
        self._end += len(data)

    def _append_kept(self, data: bytes) -> None:
        """Append a rollout's line; a failed write leaves no fragment for the next line to follow, and says that what
        was finished so far is kept."""
        try:
            self._append(data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._handle.fileno(), self._end)
            raise UserError(f"{self.path}: cannot append ({exc.strerror}); finished rollouts so far are kept") from None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- at the end ------------------------------------------------------------------------------
    def iter_sorted(self) -> Iterator[bytes]:
        """The finished records' lines in (task_index, rollout_index) order."""
        with open(self.path, "rb", buffering=1024 * 1024) as handle:
            for offset in self.offsets:
                if offset >= 0:
                    handle.seek(offset)
                    yield handle.readline()

    def write_output(self) -> int:
        """Write the sorted records atomically to the output path; returns the count."""
        count = 0
        with atomic_writer(self.output) as out:
            for line in self.iter_sorted():
                out.write(line)
                count += 1
        return count

    def discard(self) -> None:
        """The output is complete: the progress file has served its purpose (removed while still locked, so no
        other collector can take it up in between)."""
        self.path.unlink(missing_ok=True)
        self.close()
