#!/usr/bin/env python3
"""A misbehaving HTTP server for the reliability suite: a proxy in front of a real server that breaks replies.

    python misbehaving_server.py --upstream http://127.0.0.1:PORT --fault wrong-types --rate 0.5 --seed 1

Each POST is forwarded to the upstream (the embedded reference server), so a reply that is not broken is
exactly what the upstream would have sent. With probability --rate (a seeded RNG, one draw per POST, in
arrival order) the reply is replaced by one of the --fault kinds (comma-separated: one is drawn per fault).
This covers what the embedded server's own --fail-* flags cannot: misbehaviour at the socket level (a
connection closed without a reply, bytes that are not HTTP) and 200 replies whose JSON is valid but wrong in
ways a real server or proxy produces (wrong types, an error object, a failed status, a string reward).

Written on raw asyncio streams, not a web framework, so it can send anything. Prints
`listening on http://127.0.0.1:PORT` first (flushed). GET /stats answers {"posts": N, "faults": {kind: count},
"paths": {path: count}, "auth_sha256": [sha256 of each distinct Authorization header]} and is not forwarded.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import struct
import sys
import urllib.request
import zlib

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

# What each kind does to a reply: (status, content type, body) from the upstream's (status, body) and the path.
KINDS = (
    "close",  # read the request, close the connection without a byte of reply
    "garbage",  # answer with bytes that are not HTTP at all
    "wrong-types",  # 200, valid JSON: chat message is a string / Responses output is an object / agent response a list
    "bad-usage",  # 200: the upstream reply with `usage` replaced by a string
    "empty-choices",  # 200: chat `choices: []`
    "no-content",  # 200: chat message without its `content` key
    "error-200",  # 200 whose JSON is an error object (some proxies do this)
    "html-200",  # 200 with an HTML page (a captive portal, a misrouted load balancer)
    "failed-status",  # 200: a Responses object with status "failed" and an error, no output text
    "string-reward",  # 200: agent /run or /verify reply whose reward is the string "1.0"
    "no-reward",  # 200: agent /run or /verify reply without `reward`
    "bool-reward",  # 200: reward `true`
    "400",  # HTTP 400 with an OpenAI-style error (must not be retried)
    "401",  # HTTP 401 (must not be retried)
    "401-echo",  # HTTP 401 whose message echoes the Authorization header (some gateways do)
    "degenerate-boxes",  # 200: chat content is 56 KB of "\\boxed{" that never closes (a degenerate generation)
    "redirect-302",  # HTTP 302 to another host (a POST a client following it would turn into a GET)
    "gzip-bomb",  # 200, Content-Encoding: gzip, a Content-Length of about 250 KB that inflates to 256 MiB
    "lone-surrogate",  # 200: chat content ends in half a UTF-16 pair (\ud83d), escaped as Python's json.dumps does
    "echo-200",  # 200: chat, the content echoes the Authorization header after the right answer
    "deep-nesting",  # 200: the reply (its output item, or the /verify reply) gains a field nested 300 levels deep
    "huge-usage",  # 200: the reply's output token count is 2^63 - 1
    "escape-400",  # HTTP 400 whose message holds terminal escape sequences
    "escape-html-502",  # HTTP 502 with an HTML page holding terminal escape sequences
    "escape-tool-call",  # 200: chat, the turn ends in a tool call whose name holds terminal escape sequences
    "escape-ng-failure",  # 200: agent /run with NeMo Gym's failure class and reason holding terminal escape sequences
    "content-chunks",  # 200: chat content as Mistral's list of chunks (a Magistral thinking chunk, the text in two)
    "ids-logprobs-mismatch",  # 200: chat, one generation token id fewer than logprobs
    "positive-logprob",  # 200: chat, the first generated token's logprob is 0.5
    "negative-token-id",  # 200: chat, the first generated token id is -1
    "503-retry-after",  # HTTP 503 with Retry-After: 1 (the whole server is down for a second: maintenance, a restart)
    "other-model",  # 200: the reply names another model ("someone-else/other-model")
    "model-snapshot",  # 200: the reply names a dated snapshot of the model asked (OpenAI's "gpt-4o-2024-08-06")
)
# Sets the window title, clears the screen and prints a fake success line, in green.
ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[32mall rollouts verified OK\x1b[0m\r\n\u202e"
DEEP_LEVELS = 300
BOMB_BYTES = 256 * 1024 * 1024


def gzip_bomb() -> bytes:
    """One gzip member: a JSON string of BOMB_BYTES spaces. Each MiB is compressed once after a full flush (so its
    bytes repeat verbatim), and the trailer's CRC and size are those of the whole inflated body."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head, spaces, tail = b'{"padding": "', b" " * (1 << 20), b'"}'
    start = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(spaces) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.compress(tail) + packer.flush()
    crc = zlib.crc32(head)
    for _ in range(BOMB_BYTES >> 20):
        crc = zlib.crc32(spaces, crc)
    trailer = struct.pack("<II", zlib.crc32(tail, crc), (len(head) + BOMB_BYTES + len(tail)) & 0xFFFFFFFF)
    return start + block * (BOMB_BYTES >> 20) + end[:-8] + trailer


def corrupt(kind: str, path: str, status: int, body: bytes) -> tuple[int, str, bytes]:
    as_json = "application/json"
    try:
        reply = json.loads(body)
    except ValueError:
        reply = {}
    if kind == "html-200":
        return 200, "text/html", b"<html><body><h1>Please log in to continue</h1></body></html>"
    if kind == "error-200":
        return 200, as_json, json.dumps({"error": {"message": "upstream overloaded", "type": "server_error"}}).encode()
    if kind == "400":
        return (
            400,
            as_json,
            json.dumps(
                {
                    "error": {
                        "message": "injected: bad request",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            ).encode(),
        )
    if kind == "escape-400":
        return (
            400,
            as_json,
            json.dumps({"error": {"message": f"bad request {ESCAPES}", "type": "invalid_request_error"}}).encode(),
        )
    if kind == "escape-html-502":
        return 502, "text/html", f"<html><body><h1>Bad gateway {ESCAPES}</h1></body></html>".encode()
    if kind in ("deep-nesting", "huge-usage"):
        return (
            status,
            as_json,
            json.dumps(_deepen(path, reply) if kind == "deep-nesting" else _inflate_usage(reply)).encode(),
        )
    if kind == "401":
        return 401, as_json, json.dumps({"error": {"message": "injected: invalid api key", "type": "auth"}}).encode()
    if path.endswith("/chat/completions"):
        if kind == "wrong-types":
            reply["choices"] = [{"index": 0, "finish_reason": "stop", "message": "The answer is \\boxed{4}."}]
        elif kind == "degenerate-boxes":
            reply["choices"][0]["message"]["content"] = "\\boxed{" * 8000
        elif kind == "bad-usage":
            reply["usage"] = "lots"
        elif kind == "empty-choices":
            reply["choices"] = []
        elif kind == "no-content":
            for choice in reply.get("choices", []):
                choice["message"].pop("content", None)
        elif kind == "lone-surrogate":
            reply["choices"][0]["message"]["content"] += " \ud83d"
        elif kind == "content-chunks":
            text = reply["choices"][0]["message"]["content"]
            reply["choices"][0]["message"]["content"] = [
                {"type": "thinking", "thinking": [{"type": "text", "text": "Let me add."}]},
                {"type": "text", "text": text[:5]},
                {"type": "text", "text": text[5:]},
            ]
        elif kind == "ids-logprobs-mismatch":
            reply["choices"][0]["token_ids"] = reply["choices"][0]["token_ids"][:-1]
        elif kind == "positive-logprob":
            reply["choices"][0]["logprobs"]["content"][0]["logprob"] = 0.5
        elif kind == "negative-token-id":
            reply["choices"][0]["token_ids"][0] = -1
        elif kind in ("other-model", "model-snapshot"):
            reply["model"] = "someone-else/other-model" if kind == "other-model" else reply["model"] + "-2024-08-06"
        elif kind == "escape-tool-call":
            reply["choices"][0]["finish_reason"] = "tool_calls"
            reply["choices"][0]["message"]["tool_calls"] = [
                {"id": "call_1", "type": "function", "function": {"name": f"run{ESCAPES}", "arguments": "{}"}}
            ]
    elif path.endswith("/responses"):
        if kind == "wrong-types":
            reply["output"] = [{"type": "message", "content": "The answer is \\boxed{4}."}]
        elif kind == "degenerate-boxes":
            reply["choices"][0]["message"]["content"] = "\\boxed{" * 8000
        elif kind == "bad-usage":
            reply["usage"] = "lots"
        elif kind == "failed-status":
            reply.update(status="failed", output=[], error={"code": "server_error", "message": "generation failed"})
    else:  # /run (agent) and /verify (resources server): the reward is the part that can be wrong
        if kind == "wrong-types":
            reply["response"] = ["not", "an", "object"] if path == "/run" else reply.get("response")
            reply["reward"] = "1.0" if path == "/verify" else reply.get("reward")
        elif kind == "bad-usage" and isinstance(reply.get("response"), dict):
            reply["response"]["usage"] = "lots"
        elif kind == "string-reward":
            reply["reward"] = "1.0"
        elif kind == "no-reward":
            reply.pop("reward", None)
        elif kind == "bool-reward":
            reply["reward"] = True
        elif kind == "escape-ng-failure":
            reply.update(_ng_failure_class=f"judge{ESCAPES}", _ng_failure_reason=f"reason {ESCAPES}")
    return status, as_json, json.dumps(reply).encode()


def _deepen(path: str, reply: dict) -> dict:
    deep: object = "bottom"
    for _ in range(DEEP_LEVELS):
        deep = [deep]
    target = reply
    if path.endswith("/responses"):
        target = reply["output"][0]
    elif path == "/run":
        target = reply["response"]["output"][0]
    target["deep"] = deep
    return reply


def _inflate_usage(reply: dict) -> dict:
    usage = reply.get("usage") or reply.get("response", {}).get("usage")
    usage["completion_tokens" if "completion_tokens" in usage else "output_tokens"] = 2**63 - 1
    return reply


class Proxy:
    def __init__(self, upstream: str, kinds: list[str], rate: float, seed: int | None) -> None:
        self.upstream = upstream.rstrip("/")
        self.kinds = kinds
        self.rate = rate
        self.rng = random.Random(seed)
        self.posts = 0
        self.auth: set[str] = set()  # sha256 of each Authorization header seen (never the header itself)
        self.faults: dict[str, int] = {}
        self.paths: dict[str, int] = {}
        self.bomb = b""

    def draw(self) -> str | None:
        hit = self.rng.random() < self.rate
        kind = self.rng.choice(self.kinds) if self.kinds else None
        return kind if hit else None

    def forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.upstream + path,
            data=body,
            method="POST",
            headers={"Content-Type": headers.get("content-type", "application/json")},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    return
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path == "/stats":
                    self._send(
                        writer,
                        200,
                        "application/json",
                        json.dumps(
                            {
                                "posts": self.posts,
                                "faults": self.faults,
                                "paths": self.paths,
                                "auth_sha256": sorted(self.auth),
                            }
                        ).encode(),
                    )
                    await writer.drain()
                    continue
                if method == "GET" and path == "/health":
                    self._send(writer, 200, "application/json", b'{"status": "ok"}')
                    await writer.drain()
                    continue
                self.posts += 1
                if "authorization" in headers:
                    self.auth.add(hashlib.sha256(headers["authorization"].encode()).hexdigest())
                self.paths[path] = self.paths.get(path, 0) + 1
                kind = self.draw()
                if kind is not None:
                    self.faults[kind] = self.faults.get(kind, 0) + 1
                if kind == "close":
                    return
                if kind == "garbage":
                    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 this is not HTTP\r\n\r\n")
                    await writer.drain()
                    return
                status, upstream_body = await asyncio.to_thread(self.forward, path, headers, body)
                content_type = "application/json"
                if kind == "redirect-302":
                    writer.write(
                        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:9/elsewhere\r\n"
                        b"Content-Length: 0\r\nConnection: keep-alive\r\n\r\n"
                    )
                    await writer.drain()
                    continue
                if kind == "gzip-bomb":
                    self.bomb = self.bomb or await asyncio.to_thread(gzip_bomb)
                    self._send(writer, 200, "application/json", self.bomb, "Content-Encoding: gzip\r\n")
                    await writer.drain()
                    continue
                if kind == "503-retry-after":
                    self._send(
                        writer,
                        503,
                        "text/html",
                        b"<html><body>Down for maintenance</body></html>",
                        "Retry-After: 1\r\n",
                    )
                    await writer.drain()
                    continue
                if kind == "echo-200":
                    reply = json.loads(upstream_body)
                    message = reply["choices"][0]["message"]
                    message["content"] += f" (you sent {headers.get('authorization', '(none)')})"
                    upstream_body = json.dumps(reply).encode()
                elif kind == "401-echo":
                    status, upstream_body = (
                        401,
                        json.dumps(
                            {
                                "error": {
                                    "message": f"invalid key {headers.get('authorization', '(none)')}",
                                    "type": "auth",
                                }
                            }
                        ).encode(),
                    )
                elif kind is not None:
                    status, content_type, upstream_body = corrupt(kind, path, status, upstream_body)
                self._send(writer, status, content_type, upstream_body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()

    @staticmethod
    def _send(
        writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes, more_headers: str = ""
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\nContent-Type: {content_type}\r\n{more_headers}"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--fault", default="", help=f"comma-separated kinds: {', '.join(KINDS)}")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    kinds = [k for k in args.fault.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}")
    proxy = Proxy(args.upstream, kinds, args.rate, args.seed)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Exit with the parent: stdin is a pipe the test holds open.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
