"""fanout: children forked for real, frames over real pipes, the stop pipe, crash reports, the shared counter."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import time

import pytest

from rollout_pipeline.collect.fanout import ChildCrashed, fan_out
from rollout_pipeline.collect.frames import FRAME_HEADER, take_frames
from rollout_pipeline.collect.processes import SharedCounter


def _collect(count: int, child_main, should_stop=lambda: False) -> tuple[list, list]:
    frames: list[tuple[int, bytes, bytes]] = []
    children = fan_out(
        count, child_main, lambda index, kind, payload: frames.append((index, kind, payload)), should_stop
    )
    return frames, children


def test_only_whole_frames_are_taken_off_a_buffer_and_a_partial_one_waits_for_the_rest_of_its_bytes():
    first, second = FRAME_HEADER.pack(b"A", 3) + b"abc", FRAME_HEADER.pack(b"B", 4) + b"wxyz"
    buffer = bytearray(first + second[:6])
    assert take_frames(buffer) == [(b"A", b"abc")]
    assert buffer == second[:6]
    assert take_frames(buffer) == []
    buffer += second[6:]
    assert (take_frames(buffer), buffer) == ([(b"B", b"wxyz")], bytearray())


def test_every_frame_arrives_in_order_however_the_pipe_splits_it():
    big = bytes(range(256)) * 1024  # 256 KiB: several pipe buffers, so reads end mid-frame

    def child_main(index: int, writer, stop_fd: int) -> int:
        for n in range(50):
            writer.send(b"N", f"{index}:{n}".encode())
        writer.send(b"B", big)
        return 0

    frames, children = _collect(3, child_main)
    for index in range(3):
        mine = [(kind, payload) for i, kind, payload in frames if i == index]
        assert mine == [(b"N", f"{index}:{n}".encode()) for n in range(50)] + [(b"B", big)]
    assert all(child.describe_exit() is None for child in children)


def test_a_child_that_raises_sends_its_traceback_and_the_others_are_stopped():
    def child_main(index: int, writer, stop_fd: int) -> int:
        if index == 1:
            # As a collector child does: its frames were written per event-loop pass, and the loop has ended.
            loop = asyncio.new_event_loop()
            writer.attach(loop)
            loop.close()
            raise ValueError("a bug in child 1")
        select.select([stop_fd], [], [], 10)  # until the parent closes the stop pipe (or 10 s: a failed test)
        return 0

    started = time.monotonic()
    with pytest.raises(ChildCrashed, match="(?s)collector process 1 raised:.*ValueError: a bug in child 1"):
        _collect(3, child_main)
    assert time.monotonic() - started < 10


def test_should_stop_closes_the_stop_pipe_and_the_children_finish_what_they_send():
    def child_main(index: int, writer, stop_fd: int) -> int:
        writer.send(b"U", b"up")
        writer.flush()
        os.read(stop_fd, 1)  # EOF once stopped
        writer.send(b"D", b"done")
        return 0

    frames, children = _collect(2, child_main, should_stop=lambda: True)
    assert sorted(kind for _, kind, _ in frames) == [b"D", b"D", b"U", b"U"]
    assert all(child.describe_exit() is None for child in children)


def test_a_child_killed_while_holding_the_claim_lock_does_not_block_the_others():
    counter = SharedCounter()
    assert counter.fetch_add(5) == 0
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # takes the lock and never gives it back
        import fcntl

        fcntl.lockf(counter.fd, fcntl.LOCK_EX)
        os.write(ready_write, b"x")
        time.sleep(60)
        os._exit(0)
    os.read(ready_read, 1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("fetch_add blocked on a dead holder's lock"))
    signal.alarm(10)
    try:
        assert counter.fetch_add(5) == 5 and counter.fetch_add(1) == 10
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        counter.close()
