"""Rate limits and usage rows through the real gateway: local limits, limits shared by two
gateways through a real redis-server, and usage rows read back from ClickHouse."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import anthropic
import openai
import pytest

from conftest import api_key, engine, wait_until

SECRET = "sk-limited"
MSG = [{"role": "user", "content": "hi"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_requests_per_minute_gives_429_with_retry_after(start_gateway, mock_factory):
    m = mock_factory()
    gw = start_gateway({"deployments": [engine("d", "m", [m])],
                        "apiKeys": [api_key(SECRET, "k", limits={"requestsPerMinute": 3, "tokensPerMinute": 100000})]})
    client = gw.openai(SECRET)
    first = client.chat.completions.with_raw_response.create(model="m", messages=MSG)
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert first.headers["x-ratelimit-limit-tokens"] == "100000"
    client.chat.completions.create(model="m", messages=MSG)
    client.chat.completions.create(model="m", messages=MSG)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="m", messages=MSG)
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(m.posts()) == 3, "a limited request never reaches the upstream"
    with pytest.raises(anthropic.RateLimitError) as e:
        gw.anthropic(SECRET).messages.create(model="m", max_tokens=5, messages=MSG)
    assert e.value.body["error"]["type"] == "rate_limit_error"


def test_anthropic_clients_get_anthropic_ratelimit_headers(start_gateway, mock_factory):
    m = mock_factory()
    gw = start_gateway({"deployments": [engine("d", "m", [m])],
                        "apiKeys": [api_key(SECRET, "k", limits={"requestsPerMinute": 3, "tokensPerMinute": 100000})]})
    before = datetime.now(timezone.utc).replace(microsecond=0)
    r = gw.anthropic(SECRET).messages.with_raw_response.create(model="m", max_tokens=5, messages=MSG)
    assert r.headers["anthropic-ratelimit-requests-limit"] == "3"
    assert r.headers["anthropic-ratelimit-requests-remaining"] == "2"
    assert r.headers["anthropic-ratelimit-tokens-limit"] == "100000"
    # Anthropic gives the reset as an RFC 3339 time: when the bucket is full again, within
    # the minute the limit is per.
    reset = datetime.fromisoformat(r.headers["anthropic-ratelimit-requests-reset"])
    assert before <= reset <= before + timedelta(seconds=61), reset
    assert "x-ratelimit-limit-requests" not in r.headers, "OpenAI's headers are for OpenAI clients"


def test_token_limit_reserves_max_tokens(start_gateway, mock_factory):
    m = mock_factory()
    gw = start_gateway({"deployments": [engine("d", "m", [m])],
                        "apiKeys": [api_key(SECRET, "k", limits={"tokensPerMinute": 1000})]})
    client = gw.openai(SECRET)
    r = client.chat.completions.with_raw_response.create(model="m", messages=MSG, max_tokens=600)
    assert int(r.headers["x-ratelimit-remaining-tokens"]) <= 400
    # 600 more cannot be reserved until the first one settles at its real usage (a few tokens)
    wait_until(lambda: _ok(client, 600), message="reservation corrected after settlement")


def _ok(client, max_tokens) -> bool:
    try:
        client.chat.completions.create(model="m", messages=MSG, max_tokens=max_tokens)
        return True
    except openai.RateLimitError:
        return False


@pytest.fixture
def redis_url(tmp_path):
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if not binary:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ping():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(ping, message="redis-server")
    yield f"redis://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(timeout=10)


def test_two_gateways_share_limits_through_redis(start_gateway, mock_factory, redis_url, tmp_path):
    m = mock_factory()
    routes = {"deployments": [engine("d", "m", [m])], "apiKeys": [api_key(SECRET, f"k-{uuid.uuid4().hex[:8]}", limits={"requestsPerMinute": 4})]}
    one = start_gateway(routes, extra_args=["--redis-url", redis_url])
    (tmp_path / "second").mkdir()
    from conftest import Gateway

    two = Gateway(routes, tmp_path / "second", ["--redis-url", redis_url])
    try:
        for gw in (one, two, one, two):
            gw.openai(SECRET).chat.completions.create(model="m", messages=MSG)
        for gw in (one, two):
            with pytest.raises(openai.RateLimitError):
                gw.openai(SECRET).chat.completions.create(model="m", messages=MSG)
    finally:
        two.close()


def clickhouse_query(url: str, sql: str) -> str:
    with urllib.request.urlopen(url + "/?" + urllib.parse.urlencode({"query": sql}), timeout=5) as r:
        return r.read().decode()


@pytest.mark.skipif(not os.environ.get("BUD_TEST_CLICKHOUSE_URL"), reason="BUD_TEST_CLICKHOUSE_URL not set (gateway/tests/services.sh start)")
def test_one_usage_row_per_request_in_clickhouse(start_gateway, mock_factory):
    url = os.environ["BUD_TEST_CLICKHOUSE_URL"].rstrip("/")
    table = f"usage_py_{uuid.uuid4().hex[:8]}"
    m = mock_factory()
    gw = start_gateway(
        {"deployments": [engine("qwen", "m", [m], namespace="team-a", pricing={"inputPerMillionTokens": "1000000", "outputPerMillionTokens": "2000000"})],
         "apiKeys": [api_key(SECRET, "k", namespace="team-a")]},
        extra_args=["--clickhouse-url", url, "--clickhouse-table", table, "--clickhouse-flush-ms", "100"],
    )
    client = gw.openai(SECRET)
    plain = client.chat.completions.with_raw_response.create(model="m", messages=MSG)
    streamed = client.chat.completions.with_raw_response.create(model="m", messages=MSG, stream=True)
    for _ in streamed.parse():
        pass
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=MSG)
    ids = {plain.headers["x-request-id"]: False, streamed.headers["x-request-id"]: True}

    def rows():
        try:
            text = clickhouse_query(url, f"SELECT * FROM bud.{table} FORMAT JSONEachRow")
        except OSError:
            return None
        parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
        return parsed if len(parsed) >= 3 else None

    found = wait_until(rows, timeout=20, interval=0.2, message="usage rows in ClickHouse")
    by_id = {r["request_id"]: r for r in found}
    for request_id, was_streamed in ids.items():
        row = by_id[request_id]
        assert row["namespace"] == "team-a" and row["served_model"] == "m" and row["deployment"] == "team-a/qwen"
        assert int(row["status"]) == 200 and bool(int(row["streamed"])) == was_streamed
        assert int(row["input_tokens"]) == 1 and int(row["output_tokens"]) == 3
        assert float(row["cost"]) == pytest.approx(7.0)
        assert row["provider"] == "engine" and row["endpoint"] == "qwen-0"
        if was_streamed:
            assert row["ttft_ms"] is not None and 0 < float(row["ttft_ms"]) <= float(row["latency_ms"])
        assert 0 <= float(row["gateway_overhead_ms"]) <= float(row["latency_ms"])
    assert any(int(r["status"]) == 404 for r in found)
