"""JSONL reading and writing: streaming, with file:line errors, atomic replacement."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from rollout_pipeline.errors import UserError

MAX_LINE_BYTES = 64 * 1024 * 1024
# orjson reads 1,024 levels of nesting but writes only 254: what comes from outside (a server's reply, a prompt row)
# is held to MAX_NESTING, so that it can still be written inside a record or the failures file, a few levels down.
_ORJSON_WRITE_DEPTH = 254
MAX_NESTING = 128


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes, one line, keys in insertion order (so seeded runs are byte-identical)."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def nested_too_deep(value: Any) -> bool:
    """Whether `value` nests arrays and objects more than MAX_NESTING levels deep: orjson, asked to write it under
    the levels a record may add, answers at C speed."""
    for _ in range(_ORJSON_WRITE_DEPTH - MAX_NESTING):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return True
    return False


def decode_line(raw: bytes, path: str, lineno: int) -> Any:
    if len(raw) > MAX_LINE_BYTES:
        raise UserError(
            f"{path}:{lineno}: line is {len(raw)} bytes, over the {MAX_LINE_BYTES}-byte limit; each line "
            "must be one prompt row or record (is this a single JSON document rather than JSONL?)"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise UserError(f"{path}:{lineno}: invalid UTF-8 at byte {uexc.start}; save the file as UTF-8") from None
        raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from None


def iter_jsonl(path: str | os.PathLike, *, objects_only: bool = True) -> Iterator[tuple[int, Any]]:
    """Yield (line number, value) for each non-blank line, streaming; bad lines raise UserError naming file:line."""
    name = str(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{name}: is a directory, expected a JSONL file") from None
    except PermissionError:
        raise UserError(f"{name}: permission denied") from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            value = decode_line(raw, name, lineno)
            if objects_only and not isinstance(value, dict):
                kind = type(value).__name__.replace("dict", "object").replace("list", "array")
                raise UserError(f"{name}:{lineno}: expected a JSON object, got a JSON {kind}")
            yield lineno, value


def read_records(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the JSON objects of a JSONL file."""
    for _, value in iter_jsonl(path):
        yield value


def _check_writable_dir(directory: Path) -> None:
    if not directory.exists():
        raise UserError(f"{directory}: output directory does not exist")
    if not os.access(directory, os.W_OK):
        raise UserError(f"{directory}: output directory is not writable")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, make_dirs: bool = True) -> Iterator[IO[bytes]]:
    """Write to a temporary file beside `path`, then rename over it; on any error the old file stays intact."""
    target = Path(path)
    if make_dirs:
        target.parent.mkdir(parents=True, exist_ok=True)
    _check_writable_dir(target.parent)
    _remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    # mkstemp makes the file owner-only; outputs get the ordinary permissions the umask allows.
    os.fchmod(fd, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise UserError(f"{target}: could not write ({exc.strerror or exc}); the previous file is unchanged") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _remove_stale_temporaries(target: Path) -> None:
    """A writer killed between creating its temporary file and renaming it (SIGKILL, a power cut) leaves
    `.<name>.<random>.tmp` beside the target. A target has one writer at a time, so the next write removes them."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_jsonl(path: str | os.PathLike, records: Iterator[Any] | list) -> int:
    """Atomically write records as JSONL; returns how many were written."""
    count = 0
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(dumps(record))
            handle.write(b"\n")
            count += 1
    return count


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write one pretty JSON document (for metrics and stats)."""
    with atomic_writer(path) as handle:
        handle.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2))
        handle.write(b"\n")


def side_path(output: str | os.PathLike, suffix: str = ".stats.json") -> Path:
    """Files that go beside a rollout file: rl.jsonl -> rl.stats.json, rl.failures.ndjson (a trailing ".jsonl",
    only that, is replaced by the suffix). Neither ends in .jsonl, so globs over rollout files (the seed's
    `outputs/rl_iter_*.jsonl`) never pick them up."""
    path = Path(output)
    return path.with_name(f"{path.name.removesuffix('.jsonl')}{suffix}")
