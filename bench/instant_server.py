#!/usr/bin/env python3
"""An agent that answers instantly: a fixed chat-completion reply, from a raw HTTP/1.1 keep-alive responder.

Benchmarks run it in its own process so that what they measure is the client. It is an `asyncio.Protocol` on
uvloop that parses just enough HTTP/1.1 (request line, Content-Length, pipelining) to answer every request on
a connection with the same pre-encoded bytes: no framework, no per-request JSON. On this machine it serves
several times more requests per second than an aiohttp client can send, so it is never the bottleneck.
`--latency-ms` delays every reply by a fixed time (for the Little's-law benchmark); replies on one
connection keep their order. `GET /health` answers {"status":"ok"}; every other request gets the chat reply,
with as many choices as the body's "n" asks for (repeat_mode: n), each reply pre-encoded once.
`--agent` makes it a NeMo Gym agent instead: every POST (`/run`) gets one verified rollout (a Responses object and
its reward), the reply both NeMo Gym's own collector and ours read from an agent server.
`--reply-tokens N --top-logprobs K` makes the reply a long one carrying token data as vLLM sends it (N generated
tokens, each with its logprob and K alternatives, `token_ids` on the choice and `prompt_token_ids`): the shape of
an RL collection that asks for token data, 10-50x larger than the plain reply.

Prints `listening on http://127.0.0.1:PORT` (like the embedded server) and exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

CHOICE = (
    b'{"index":%d,"finish_reason":"stop","message":{"role":"assistant",'
    b'"content":"2 + 2 = 4. The answer is \\\\boxed{4}."}}'
)
HEALTH = b'{"status":"ok"}'


TOKEN_DATA = {"tokens": 0, "top": 0}


def _token_data_choice(index: int) -> bytes:
    """One choice of N tokens with vLLM's logprobs (K alternatives each) and token_ids, ending in a boxed answer."""
    import json

    count, top = TOKEN_DATA["tokens"], TOKEN_DATA["top"]
    words = [f" w{i % 97}" for i in range(count - 4)] + [" \\boxed{", "4", "}", "."]
    entries = [
        {
            "token": w,
            "logprob": -0.01 * (i % 50),
            "bytes": list(w.encode()),
            "top_logprobs": [{"token": f" t{j}", "logprob": -1.0 - j, "bytes": [32, 116, 48 + j]} for j in range(top)],
        }
        for i, w in enumerate(words)
    ]
    choice = {
        "index": index,
        "finish_reason": "stop",
        "logprobs": {"content": entries},
        "token_ids": [1000 + i % 30000 for i in range(count)],
        "message": {"role": "assistant", "content": "".join(words).replace("\\\\", "\\")},
    }
    return json.dumps(choice, separators=(",", ":")).encode()


def chat(n: int) -> bytes:
    if TOKEN_DATA["tokens"]:
        choices = b",".join(_token_data_choice(i) for i in range(n))
        return (
            b'{"id":"c","object":"chat.completion","model":"instant","prompt_token_ids":['
            + b",".join(b"%d" % (500 + i) for i in range(40))
            + b'],"choices":['
            + choices
            + b'],"usage":{"prompt_tokens":40,"completion_tokens":%d,"total_tokens":%d}}'
            % (TOKEN_DATA["tokens"] * n, 40 + TOKEN_DATA["tokens"] * n)
        )
    choices = b",".join(CHOICE % i for i in range(n))
    return (
        b'{"id":"c","object":"chat.completion","model":"instant","choices":['
        + choices
        + b'],"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}' % (14 * n, 12 + 14 * n)
    )


# A NeMo Gym /run reply: the request's params, the Responses object the agent produced and the resources server's
# verdict (nemo_gym/base_resources_server.py's BaseVerifyResponse fields).
AGENT_RUN = (
    b'{"responses_create_params":{"input":[{"role":"user","content":"What is 2 + 2?"}]},'
    b'"response":{"id":"resp_instant","object":"response","created_at":0,"model":"instant","status":"completed",'
    b'"parallel_tool_calls":true,"tool_choice":"auto","tools":[],"output":[{"id":"msg_instant","type":"message",'
    b'"role":"assistant","status":"completed","content":[{"type":"output_text","annotations":[],'
    b'"text":"2 + 2 = 4. The answer is \\\\boxed{4}."}]}],'
    b'"usage":{"input_tokens":12,"output_tokens":14,"total_tokens":26,"input_tokens_details":{"cached_tokens":0},'
    b'"output_tokens_details":{"reasoning_tokens":0}}},'
    b'"reward":1.0,"mask_sample":false,"failure_kind":null,"failure_reason":null,"expected_answer":"4"}'
)


def _reply(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: keep-alive\r\n\r\n" % len(body)
    ) + body


CHAT_REPLIES: dict[int, bytes] = {}
HEALTH_REPLY = _reply(HEALTH)


def chat_reply(body: bytes) -> bytes:
    """The reply for a request body: n choices when it asks for n (the collector writes `"n":K` only when K > 1)."""
    at = body.find(b'"n":')
    if at < 0:
        if 1 not in CHAT_REPLIES:
            CHAT_REPLIES[1] = _reply(chat(1))
        return CHAT_REPLIES[1]
    digits = body[at + 4 : at + 12]
    n = int(digits[: len(digits) - len(digits.lstrip(b"0123456789"))] or b"1") if digits[:1].isdigit() else 1
    if n not in CHAT_REPLIES:
        CHAT_REPLIES[n] = _reply(chat(n))
    return CHAT_REPLIES[n]


class Responder(asyncio.Protocol):
    """One connection: split the byte stream into requests, answer each with fixed bytes."""

    latency_s = 0.0
    agent_reply = b""  # --agent: the /run reply, else the chat reply

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        replies = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end]
            length = 0
            at = head.find(b"ontent-Length:")
            if at < 0:
                at = head.lower().find(b"ontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 14 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(buffer) < total:
                break
            if head.startswith(b"GET /health"):
                replies.append(HEALTH_REPLY)
            elif self.agent_reply:
                replies.append(self.agent_reply)
            else:
                replies.append(chat_reply(buffer[end + 4 : total]))
            buffer = buffer[total:]
        self.buffer = buffer
        if replies:
            payload = b"".join(replies) if len(replies) > 1 else replies[0]
            if self.latency_s:
                asyncio.get_running_loop().call_later(self.latency_s, self._send, payload)
            else:
                self.transport.write(payload)

    def _send(self, payload: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--reply-tokens", type=int, default=0, help="a long reply with token data (0: the short one)")
    parser.add_argument("--top-logprobs", type=int, default=0, help="alternatives per token with --reply-tokens")
    parser.add_argument("--agent", action="store_true", help="answer as a NeMo Gym agent (/run), not a chat server")
    args = parser.parse_args()
    if args.agent:
        Responder.agent_reply = _reply(AGENT_RUN)
    TOKEN_DATA.update(tokens=args.reply_tokens, top=args.top_logprobs)
    Responder.latency_s = args.latency_ms / 1000
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(Responder, "127.0.0.1", args.port, backlog=4096))
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    # Exit when the parent closes our stdin, so no benchmark leaves a server behind.
    stopped = loop.create_future()

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096) and not stopped.done():
            stopped.set_result(None)

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    loop.run_until_complete(stopped)
    server.close()


if __name__ == "__main__":
    main()
