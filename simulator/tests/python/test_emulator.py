"""The engine emulator driven by the official OpenAI Python client."""

import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import Server, wait_ready


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_models(server):
    ids = [m.id for m in client(server).models.list().data]
    assert ids == ["qwen3-8b"]


def test_chat_completion_with_usage(server):
    r = client(server).chat.completions.create(
        model="qwen3-8b",
        messages=[{"role": "user", "content": "Say hello to the simulator, please."}],
        max_tokens=7,
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7


def test_chat_streaming_with_include_usage(server):
    stream = client(server).chat.completions.create(
        model="qwen3-8b",
        messages=[{"role": "user", "content": "stream please"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 0
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].choices == []


def test_streaming_without_usage_has_no_usage_chunk(server):
    stream = client(server).chat.completions.create(
        model="qwen3-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    )
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 3


def test_completions_plain_and_streaming(server):
    c = client(server)
    r = c.completions.create(model="qwen3-8b", prompt="Once upon a time", max_tokens=4)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage.completion_tokens == 4
    parts = list(c.completions.create(model="qwen3-8b", prompt="abc", max_tokens=4, stream=True,
                                      stream_options={"include_usage": True}))
    assert "".join(p.choices[0].text for p in parts if p.choices)
    assert parts[-1].usage.completion_tokens == 4


def test_errors(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])
    assert "qwen3-8b" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="qwen3-8b", messages=[], max_tokens=3)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}], max_tokens=10_000_000)
    assert "maximum context length" in str(e.value)


def test_metrics_count_tokens_and_show_queueing(server):
    before = server.metrics()
    for name in ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total"]:
        assert name in before
    # max-num-seqs is 2: six long concurrent requests must queue.
    c = client(server)
    done = []

    def one():
        r = c.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "long"}], max_tokens=400)
        done.append(r.usage.completion_tokens)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    saw_waiting = saw_running = saw_kv = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (saw_waiting and saw_running and saw_kv):
        m = server.metrics()
        saw_waiting |= m["vllm:num_requests_waiting"] > 0
        saw_running |= m["vllm:num_requests_running"] == 2
        saw_kv |= m["vllm:kv_cache_usage_perc"] > 0
        time.sleep(0.01)  # poll interval; the loop waits on observed state
    for t in threads:
        t.join(timeout=60)
    assert saw_waiting and saw_running and saw_kv
    assert done == [400] * 6
    after = server.metrics()
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 2400
    assert after["vllm:num_requests_running"] == 0
    assert after["vllm:num_requests_waiting"] == 0


def test_latency_follows_the_model():
    # Real time (scale 1) on a small request: TTFT and inter-token gaps come from the model.
    s = Server(["--time-scale", "1", "--accelerator", "NVIDIA-L4"], host="127.2.3.4")
    try:
        c = client(s)
        start = time.monotonic()
        stream = c.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x" * 400}],
                                           max_tokens=6, stream=True)
        stamps = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                stamps.append(time.monotonic() - start)
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        # Qwen3-8B in bf16 on an L4 (300 GB/s): ~16 GB of weights per step, so tens of ms.
        assert 0.02 < sum(gaps) / len(gaps) < 0.5
    finally:
        s.stop()


def test_error_rate_injection():
    s = Server(["--error-rate", "1.0", "--time-scale", "0.01"], host="127.0.0.77")
    try:
        with pytest.raises(openai.InternalServerError):
            client(s).chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}])
        assert s.metrics()["bud_sim:request_errors_total"] >= 1
    finally:
        s.stop()


def test_slow_start():
    s = Server(["--slow-start-secs", "1.0"], wait=False)
    try:
        # Health is 503 while starting, then turns 200 (polled with a deadline).
        saw_unavailable = False
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and not saw_unavailable:
            try:
                urllib.request.urlopen(s.url + "/health", timeout=1)
            except urllib.error.HTTPError as e:
                saw_unavailable = e.code == 503
            except urllib.error.URLError:
                pass
            time.sleep(0.01)  # poll interval
        assert saw_unavailable
        wait_ready(s.url, s.proc, deadline_s=10)
    finally:
        s.stop()
