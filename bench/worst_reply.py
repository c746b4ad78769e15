#!/usr/bin/env python3
"""Benchmark 10 — the collector's peak RSS under the worst replies a server can send within the limits.

A server in its own process answers every request with the same pre-built 200 chat reply of one kind:
- `short`: the ordinary reply (the baseline);
- `long-text`: content of just under max_reply_bytes (16 MiB) of text ending in the answer: accepted and written;
- `empty-objects`: a `padding` array of empty objects filling just under 16 MiB: accepted (two levels deep), and
  the most memory per reply byte orjson can be made to build (a Python dict per 3 bytes);
- `gzip-bomb`: `Content-Encoding: gzip`, about 65 KB on the wire inflating to 64 MiB: refused at 16 MiB decoded.
The collector (real CLI, one process) asks for PROMPTS rollouts at parallelism PARALLEL, so that many replies are
in flight at once; its peak RSS is the kernel's (os.wait4).

    python bench/worst_reply.py [--smoke]
    python bench/worst_reply.py --serve KIND     (the server alone: prints `listening on URL`, exits when stdin closes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import zlib
from pathlib import Path

NAME = "worst_reply"
KINDS = ("short", "long-text", "empty-objects", "gzip-bomb")
PROMPTS = 4
PARALLEL = 4
UNDER_CAP = 16 * 1024 * 1024 - 4096
BOMB_BYTES = 64 * 1024 * 1024


def reply_bytes(kind: str) -> tuple[bytes, bytes]:
    """(extra headers, body) of the reply of `kind`."""
    reply = {
        "id": "chatcmpl-worst",
        "object": "chat.completion",
        "model": "instant",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "The answer is \\boxed{4}."},
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }
    body = json.dumps(reply).encode()
    if kind == "long-text":
        reply["choices"][0]["message"]["content"] = "x" * (UNDER_CAP - len(body)) + " The answer is \\boxed{4}."
        body = json.dumps(reply).encode()
    elif kind == "empty-objects":
        count = (UNDER_CAP - len(body)) // 3
        body = body[:-1] + b', "padding": [' + b"{}," * (count - 1) + b"{}]}"
    elif kind == "gzip-bomb":
        return b"Content-Encoding: gzip\r\n", zlib.compress(
            b'{"padding": "' + b" " * BOMB_BYTES + b'"}', 9, wbits=16 + zlib.MAX_WBITS
        )
    return b"", body


async def serve(kind: str) -> None:
    headers, body = reply_bytes(kind)
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n" % len(body)
        + body
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin


def run(smoke: bool = False) -> list:
    from benchlib import PY, Figure, collect_command, run_measured, scratch, shell, write_params, write_prompts

    figures = []
    with scratch(NAME) as work:
        for kind in KINDS[:2] if smoke else KINDS:
            server = subprocess.Popen(
                [PY, __file__, "--serve", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            try:
                url = server.stdout.readline().split("listening on ", 1)[1].strip()  # type: ignore[union-attr]
                directory = work / kind
                directory.mkdir()
                params = write_params(directory, url, max_retries=0)
                write_prompts(directory / "prompts.jsonl", PROMPTS)
                command = collect_command(
                    Path(params.name),
                    Path("prompts.jsonl"),
                    Path("rollouts.jsonl"),
                    1,
                    PARALLEL,
                    ["--processes", "1"],
                    progress=False,
                )
                measured = run_measured(command, directory)
            finally:
                server.stdin.close()  # type: ignore[union-attr]
                server.wait(timeout=30)
            stats = json.loads((directory / "rollouts.stats.json").read_text())
            outcome = (
                f"{stats['new_rollouts']} written"
                if measured.returncode == 0
                else f"refused: {', '.join(stats['failure_causes'])}"
            )
            figures.append(
                Figure(
                    NAME,
                    f"{kind}, {PARALLEL} in flight",
                    "collector peak RSS",
                    round(measured.max_rss_mb, 1),
                    "MB",
                    command=f"{shell(command)}  (server: python bench/worst_reply.py --serve {kind})",
                    note=outcome,
                )
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--serve", choices=KINDS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    from benchlib import print_figures

    print_figures(run(args.smoke))


if __name__ == "__main__":
    main()
