"""Mock upstream providers: real HTTP servers on 127.0.0.1 speaking each provider's wire format.

Each mock answers deterministically and records what it received. Its `behaviour` decides
failures: "ok", ("status", code), "close" (drop the connection), ("delay", seconds),
("stream_error_after", n) (n chunks, then an in-band error), ("slow_stream", interval, n),
"reasoning" (a reasoning model: `reasoning_content` before the answer as vLLM sends it, or
a `thinking` block from the Anthropic mock).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What the "reasoning" behaviour thinks before answering, in stream order.
REASONING_PARTS = ["The user", " greets me."]


def _words(messages) -> int:
    count = 0
    for m in messages or []:
        content = m.get("content")
        if isinstance(content, str):
            count += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    count += len(part["text"].split())
                elif isinstance(part, dict) and isinstance(part.get("content"), str):
                    count += len(part["content"].split())
    return max(count, 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: with 16 streams opening connections at once
    # the kernel drops the overflowing SYNs, the gateway's connect is retried only after a
    # second and can pass its 2 s connect timeout (a 504). Real engines listen with 2048.
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # Clients (the gateway) hanging up mid-response is part of the tests.
        pass


class MockUpstream:
    """kind: "openai" (engines, OpenAI, Together, compatible), "azure" or "anthropic"."""

    def __init__(self, kind: str = "openai", name: str = "mock"):
        self.kind = kind
        self.name = name
        self.behaviour = "ok"
        self.requests: list[dict] = []
        self.cancelled = threading.Event()
        self.lock = threading.Lock()
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                with mock.lock:
                    mock.requests.append({"method": "GET", "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": None})
                behaviour = mock.behaviour
                if behaviour == "close" or (isinstance(behaviour, tuple) and behaviour[0] == "status" and behaviour[1] >= 500):
                    self._json(503, {"error": {"message": "down"}})
                    return
                self._json(200, {"object": "list", "data": [{"id": "upstream-model", "object": "model"}]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                with mock.lock:
                    mock.requests.append({"method": "POST", "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                behaviour = mock.behaviour
                if behaviour == "close":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if isinstance(behaviour, tuple) and behaviour[0] == "status":
                    code = behaviour[1]
                    if mock.kind == "anthropic":
                        kind = "overloaded_error" if code == 529 else "api_error"
                        self._json(code, {"type": "error", "error": {"type": kind, "message": f"{mock.name} says {code}"}})
                    else:
                        self._json(code, {"error": {"message": f"{mock.name} says {code}", "type": "server_error"}})
                    return
                if isinstance(behaviour, tuple) and behaviour[0] == "delay":
                    time.sleep(behaviour[1])
                if mock.kind == "anthropic":
                    if not self.path.endswith("/messages"):
                        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "no"}})
                    elif body.get("stream"):
                        self._anthropic_stream(body)
                    else:
                        self._json(200, mock.anthropic_message(body))
                    return
                op = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
                if op == "embeddings":
                    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    self._json(200, {
                        "object": "list",
                        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, float(i)]} for i, _ in enumerate(inputs)],
                        "model": body.get("model"),
                        "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
                    })
                elif op == "completions" and "chat" not in self.path:
                    if body.get("stream"):
                        self._openai_stream(body, legacy=True)
                    else:
                        self._json(200, {
                            "id": "cmpl-1", "object": "text_completion", "created": 1, "model": body.get("model"),
                            "choices": [{"index": 0, "text": f" from {mock.name}", "finish_reason": "stop", "logprobs": None}],
                            "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
                        })
                elif body.get("stream"):
                    self._openai_stream(body)
                else:
                    self._json(200, mock.openai_completion(body))

            def _json(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _start_sse(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

            def _send(self, data: bytes) -> bool:
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                    return True
                except (BrokenPipeError, ConnectionResetError):
                    mock.cancelled.set()
                    return False

            def _openai_stream(self, body, legacy=False):
                self._start_sse()
                model = body.get("model")
                words = [f"Hello", " from", f" {mock.name}"]
                interval = 0.0
                error_after = None
                behaviour = mock.behaviour
                if isinstance(behaviour, tuple) and behaviour[0] == "slow_stream":
                    interval, n = behaviour[1], behaviour[2]
                    words = [f" w{i}" for i in range(n)]
                if isinstance(behaviour, tuple) and behaviour[0] == "stream_error_after":
                    error_after = behaviour[1]

                def chunk(delta, finish=None):
                    if legacy:
                        return {"id": "cmpl-s", "object": "text_completion", "created": 1, "model": model,
                                "choices": [{"index": 0, "text": delta.get("content", ""), "finish_reason": finish, "logprobs": None}]}
                    return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], "usage": None}

                def send(obj) -> bool:
                    return self._send(b"data: " + json.dumps(obj).encode() + b"\n\n")

                if not legacy and not send(chunk({"role": "assistant", "content": ""})):
                    return
                if behaviour == "reasoning" and not legacy:
                    for thought in REASONING_PARTS:
                        send(chunk({"reasoning_content": thought}))
                if body.get("tools") and not legacy:
                    calls = [("call_1", "get_weather", ['{"city":', ' "Paris"}'])]
                    for call_id, fname, parts in calls:
                        send(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": fname, "arguments": ""}}]}))
                        for p in parts:
                            send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))
                    finish = "tool_calls"
                else:
                    for i, w in enumerate(words):
                        if error_after is not None and i >= error_after:
                            send({"error": {"message": "engine crashed mid-stream", "type": "server_error", "code": 500}})
                            return
                        if interval:
                            time.sleep(interval)
                        if not send(chunk({"content": w})):
                            return
                    finish = "stop"
                send(chunk({}, finish))
                include_usage = (body.get("stream_options") or {}).get("include_usage")
                if include_usage:
                    usage = {"prompt_tokens": _words(body.get("messages")) if not legacy else 2, "completion_tokens": 3, "total_tokens": 0}
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    send({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage})
                self._send(b"data: [DONE]\n\n")

            def _anthropic_stream(self, body):
                self._start_sse()

                def event(name, data) -> bool:
                    return self._send(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

                prompt = _words(body.get("messages"))
                event("message_start", {"type": "message_start", "message": {
                    "id": "msg_stream", "type": "message", "role": "assistant", "model": body.get("model"), "content": [],
                    "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 1}}})
                event("ping", {"type": "ping"})
                if body.get("tools"):
                    event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": body["tools"][0]["name"], "input": {}}})
                    for p in ['{"city":', ' "Paris"}']:
                        event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}})
                    event("content_block_stop", {"type": "content_block_stop", "index": 0})
                    stop = "tool_use"
                else:
                    index = 0
                    if mock.behaviour == "reasoning":
                        event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
                        for thought in REASONING_PARTS:
                            event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": thought}})
                        event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}})
                        event("content_block_stop", {"type": "content_block_stop", "index": 0})
                        index = 1
                    event("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
                    for w in ["Hello", " from", f" {mock.name}"]:
                        event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": w}})
                    event("content_block_stop", {"type": "content_block_stop", "index": index})
                    stop = "end_turn"
                event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 3}})
                event("message_stop", {"type": "message_stop"})

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    # -- deterministic answers ---------------------------------------------------------------

    def openai_completion(self, body):
        prompt = _words(body.get("messages"))
        message = {"role": "assistant", "content": f"Hello from {self.name}"}
        if self.behaviour == "reasoning":
            message["reasoning_content"] = "".join(REASONING_PARTS)
        finish = "stop"
        if body.get("tools"):
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": body["tools"][0]["function"]["name"], "arguments": '{"city": "Paris"}'}}]}
            finish = "tool_calls"
        return {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 3, "total_tokens": prompt + 3},
        }

    def anthropic_message(self, body):
        prompt = _words(body.get("messages"))
        if body.get("tools"):
            content = [{"type": "tool_use", "id": "toolu_1", "name": body["tools"][0]["name"], "input": {"city": "Paris"}}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": f"Hello from {self.name}"}]
            if self.behaviour == "reasoning":
                content.insert(0, {"type": "thinking", "thinking": "".join(REASONING_PARTS), "signature": "sig"})
            stop = "end_turn"
        return {"id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model"), "content": content,
                "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 3}}

    # -- helpers -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.kind == "anthropic":
            return f"http://127.0.0.1:{self.port}/v1"
        if self.kind == "azure":
            return f"http://127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self.port}/v1"

    def posts(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["method"] == "POST"]

    def reset(self):
        with self.lock:
            self.requests.clear()
        self.behaviour = "ok"
        self.cancelled.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
