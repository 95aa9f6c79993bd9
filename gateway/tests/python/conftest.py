"""Starts the real `bud-gateway` binary in front of mock upstreams.

Everything binds 127.0.0.1 on free ports; every wait has a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mocks import MockUpstream

REPO_GATEWAY = Path(__file__).resolve().parents[2]


def gateway_binary() -> str:
    if os.environ.get("BUD_GATEWAY_BIN"):
        return os.environ["BUD_GATEWAY_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO_GATEWAY.parent / "target"))
    return str(Path(target) / "debug" / "bud-gateway")


def key_hash(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def api_key(secret: str, name: str, namespace: str = "default", models=(), **extra) -> dict:
    entry = {"namespace": namespace, "name": name, "keyHash": key_hash(secret), "keyId": f"id-{name}", "models": list(models)}
    entry.update(extra)
    return entry


def engine(name: str, served: str, mocks, namespace: str = "default", priority: int = 0, **route) -> dict:
    return {
        "namespace": namespace,
        "name": name,
        "route": {"servedName": served, "provider": "Engine", "upstreamModel": f"{served}-upstream", "priority": priority, **route},
        "endpoints": [{"address": "127.0.0.1", "port": m.port, "ready": True, "pod": f"{name}-{i}"} for i, m in enumerate(mocks)],
    }


def external(name: str, served: str, provider: str, mock: MockUpstream, namespace: str = "default", priority: int = 0, **route) -> dict:
    return {
        "namespace": namespace,
        "name": name,
        "route": {"servedName": served, "provider": provider, "upstreamModel": f"{served}-upstream", "baseUrl": mock.base_url,
                  "priority": priority, **route},
    }


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class Gateway:
    def __init__(self, routes: dict, workdir: Path, extra_args=(), env=None, kubernetes: bool = False):
        self.workdir = workdir
        self.routes_path = workdir / "routes.yaml"
        self.write_routes(routes)
        self.log_path = workdir / "gateway.log"
        self.log = open(self.log_path, "wb")
        source = ["--kubernetes"] if kubernetes else ["--routes-file", str(self.routes_path), "--routes-poll-ms", "50"]
        defaults = {"--ejection-ms": "300", "--ejection-max-ms": "600", "--connect-timeout-ms": "500"}
        for flag in extra_args:
            defaults.pop(flag, None)
        args = [gateway_binary(), "--listen", "127.0.0.1:0", *source, *[x for kv in defaults.items() for x in kv], *extra_args]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, env={**os.environ, **(env or {})})
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + 20
        self.url = None
        while time.monotonic() < deadline and self.url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic())).decode()
            except queue.Empty:
                break
            if line.startswith("listening on "):
                self.url = "http://" + line.split()[-1]
        if self.url is None:
            self.close()
            raise RuntimeError(f"gateway did not start: {self.log_path.read_text()}")
        wait_until(lambda: self.get("/readyz")[0] == 200, message="gateway readiness")

    def write_routes(self, routes: dict):
        tmp = self.routes_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(routes, indent=1))  # JSON is YAML
        tmp.replace(self.routes_path)

    def get(self, path: str, headers=None):
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, r.read().decode(), {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), {k.lower(): v for k, v in e.headers.items()}
        except OSError:
            return 0, "", {}

    def post(self, path: str, body: bytes, headers=None):
        request = urllib.request.Request(self.url + path, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.read().decode(), {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), {k.lower(): v for k, v in e.headers.items()}

    def metrics(self) -> str:
        return self.get("/metrics")[1]

    def openai(self, key: str):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=20)

    def anthropic(self, key: str):
        import anthropic

        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=20)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def start_gateway(tmp_path):
    started = []

    def start(routes: dict, extra_args=(), env=None) -> Gateway:
        gw = Gateway(routes, tmp_path, extra_args, env)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.close()


@pytest.fixture
def mock_factory():
    mocks = []

    def make(kind: str = "openai", name: str = "mock") -> MockUpstream:
        m = MockUpstream(kind, name)
        mocks.append(m)
        return m

    yield make
    for m in mocks:
        m.close()
