"""The gateway in front of the simulator's engine emulator (`bud-sim serve`), an
OpenAI-compatible server whose latencies follow the performance model. Skipped when the
emulator is not built (`cargo build -p bud-simulator`); BUD_SIM_BIN overrides its path."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO_GATEWAY, api_key, wait_until


def emulator_binary() -> str:
    if os.environ.get("BUD_SIM_BIN"):
        return os.environ["BUD_SIM_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO_GATEWAY.parent / "target"))
    return str(Path(target) / "debug" / "bud-sim")


pytestmark = pytest.mark.skipif(not os.path.exists(emulator_binary()), reason="bud-sim not built")
SECRET = "sk-emulator"


@pytest.fixture
def emulator_port():
    proc = subprocess.Popen([emulator_binary(), "serve", "--model", "Qwen/Qwen3-8B", "--served-model-name", "qwen3-8b",
                             "--host", "127.0.0.1", "--port", "0", "--time-scale", "0.01"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + 20
    port = None
    while port is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic())).decode()
        except queue.Empty:
            break
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if match:
            port = int(match.group(1))
    if port is None:
        proc.kill()
        pytest.fail("the emulator did not start")
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_openai_and_anthropic_clients_through_the_emulator(start_gateway, emulator_port):
    gw = start_gateway({
        "deployments": [{"name": "qwen", "route": {"servedName": "qwen", "provider": "Engine", "upstreamModel": "qwen3-8b"},
                         "endpoints": [{"address": "127.0.0.1", "port": emulator_port, "ready": True, "pod": "qwen-0"}]}],
        "apiKeys": [api_key(SECRET, "k")],
    })
    client = gw.openai(SECRET)
    r = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert r.model == "qwen" and r.choices[0].message.content and r.usage.completion_tokens == 5
    chunks = list(client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 4
    with gw.anthropic(SECRET).messages.stream(model="qwen", max_tokens=3, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason == "max_tokens" and final.usage.output_tokens == 3
    wait_until(lambda: 'bud_gateway_time_to_first_token_seconds_count{endpoint="messages",model="qwen"} 1' in gw.metrics(),
               message="TTFT observed")
