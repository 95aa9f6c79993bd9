"""Start `bud-sim serve` as a fake vLLM engine on a loopback address for each test module."""

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def binary():
    explicit = os.environ.get("BUD_SIM_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "debug", "bud-sim")


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_ready(url, proc, deadline_s=20.0):
    """Poll /health until 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bud-sim exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.02)  # poll interval, not synchronisation: the loop checks readiness
    raise TimeoutError(f"{url} not ready after {deadline_s}s")


class Server:
    def __init__(self, extra, host="127.1.0.5", wait=True):
        self.host = host
        self.port = free_port(host)
        args = [
            binary(), "serve",
            "--host", host, "--port", str(self.port),
            "--model", "Qwen/Qwen3-8B", "--served-model-name", "qwen3-8b",
            "--tensor-parallel-size", "1",
            "--accelerator", "NVIDIA-H100-80GB-HBM3",
            # vLLM flags the emulator does not implement: ignored with a warning.
            "--trust-remote-code", "--enable-prefix-caching", "--dtype", "auto",
        ] + extra
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = f"http://{host}:{self.port}"
        if wait:
            wait_ready(self.url, self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def metrics(self):
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
        return values


@pytest.fixture(scope="module")
def server():
    s = Server(["--max-num-seqs", "2", "--time-scale", "0.01"])
    yield s
    s.stop()
