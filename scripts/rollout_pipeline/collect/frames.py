"""The frames a forked collector child sends this process: their format (one kind byte, a 4-byte length, the
payload), the child's buffered writer, and the reading of complete frames back from what a pipe delivered."""

from __future__ import annotations

import os
import struct
from typing import Any

FRAME_HEADER = struct.Struct("<cI")
_FLUSH_AT = 1 << 20


class FrameWriter:
    """A child's end of its pipe. Frames are buffered and written together, once per event-loop pass when a
    loop is attached (a write per frame would cost a system call per rollout), and always by `flush()`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._parts: list[bytes] = []
        self._size = 0
        self._loop: Any = None
        self._scheduled = False

    def attach(self, loop: Any) -> None:
        self._loop = loop

    def send(self, kind: bytes, payload: bytes) -> None:
        self._parts.append(FRAME_HEADER.pack(kind, len(payload)))
        self._parts.append(payload)
        self._size += len(payload)
        if self._size >= _FLUSH_AT:
            self.flush()
        elif self._loop is not None and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._parts:
            return
        data = memoryview(b"".join(self._parts))
        self._parts.clear()
        self._size = 0
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except BrokenPipeError:
            os._exit(1)  # the parent is gone: nothing this process holds can be kept anyway


def take_frames(buffer: bytearray) -> list[tuple[bytes, bytes]]:
    """The complete frames at the front of `buffer`, as (kind, payload), removed from it; a frame whose end has not
    arrived yet stays for the next read."""
    frames = []
    position = 0
    header = FRAME_HEADER.size
    while len(buffer) - position >= header:
        kind, length = FRAME_HEADER.unpack_from(buffer, position)
        end = position + header + length
        if end > len(buffer):
            break
        frames.append((kind, bytes(buffer[position + header : end])))
        position = end
    del buffer[:position]
    return frames
