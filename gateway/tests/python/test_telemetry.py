"""OpenTelemetry: with an OTLP endpoint set, each request becomes a span with the GenAI
semantic-convention attributes, exported over OTLP/HTTP (protobuf) to a mock collector."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import api_key, engine, wait_until


class Collector:
    def __init__(self):
        self.bodies: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/traces":
                    collector.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def all(self) -> bytes:
        return b"".join(self.bodies)


def test_request_spans_carry_gen_ai_attributes(start_gateway, mock_factory):
    collector = Collector()
    try:
        m = mock_factory(name="vllm")
        gw = start_gateway({"deployments": [engine("qwen", "qwen3-8b", [m])], "apiKeys": [api_key("sk-otel", "k")]},
                           extra_args=["--otlp-endpoint", collector.url])
        gw.openai("sk-otel").chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "hi"}])
        gw.close()  # flushes the batch
        data = wait_until(lambda: collector.all() if b"gen_ai.usage.output_tokens" in collector.all() else None, message="span exported")
        for needle in [b"chat qwen3-8b", b"gen_ai.operation.name", b"gen_ai.request.model", b"gen_ai.provider.name",
                       b"gen_ai.usage.input_tokens", b"bud-gateway", b"default/qwen"]:
            assert needle in data, needle
    finally:
        collector.server.shutdown()
