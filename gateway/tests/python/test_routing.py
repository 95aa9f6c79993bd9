"""Balancing, passive health, retries, fallback, timeouts, cancellation and hot reload,
with failing mock upstreams behind the real gateway."""

from __future__ import annotations

import json
import re
import socket
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from conftest import api_key, engine, wait_until

SECRET = "sk-routing"
MSG = [{"role": "user", "content": "hi"}]


def routes(*deployments):
    return {"deployments": list(deployments), "apiKeys": [api_key(SECRET, "k")]}


def counter(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_balances_across_endpoints(start_gateway, mock_factory):
    a, b = mock_factory(name="a"), mock_factory(name="b")
    gw = start_gateway(routes(engine("d", "m", [a, b])))
    client = gw.openai(SECRET)
    for _ in range(40):
        client.chat.completions.create(model="m", messages=MSG)
    assert len(a.posts()) >= 5 and len(b.posts()) >= 5
    assert len(a.posts()) + len(b.posts()) == 40


def test_least_outstanding_prefers_the_fast_endpoint(start_gateway, mock_factory):
    fast, slow = mock_factory(name="fast"), mock_factory(name="slow")
    slow.behaviour = ("delay", 0.3)
    gw = start_gateway(routes(engine("d", "m", [fast, slow])))
    client = gw.openai(SECRET)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.chat.completions.create(model="m", messages=MSG), range(48)))
    assert len(fast.posts()) > 3 * len(slow.posts()), (len(fast.posts()), len(slow.posts()))


def test_retries_connect_errors_and_5xx(start_gateway, mock_factory):
    ok, broken = mock_factory(name="ok"), mock_factory(name="broken")
    broken.behaviour = ("status", 503)
    dead = {"address": "127.0.0.1", "port": free_port(), "ready": True, "pod": "dead"}
    d = engine("d", "m", [ok, broken])
    d["endpoints"].append(dead)
    gw = start_gateway(routes(d), extra_args=["--eject-after", "1000", "--retry-budget-min", "1000"])
    client = gw.openai(SECRET)
    for _ in range(20):
        assert client.chat.completions.create(model="m", messages=MSG).choices[0].message.content == "Hello from ok"
    assert counter(gw.metrics(), "bud_gateway_upstream_retries_total") > 0
    text = gw.metrics()
    assert 'kind="connect"' in text and 'kind="status_5xx"' in text


def test_ejects_failing_endpoint_and_readmits_after_probe(start_gateway, mock_factory):
    ok, flaky = mock_factory(name="ok"), mock_factory(name="flaky")
    flaky.behaviour = "close"
    gw = start_gateway(routes(engine("d", "m", [ok, flaky])), extra_args=["--eject-after", "2"])
    client = gw.openai(SECRET)
    for _ in range(10):
        client.chat.completions.create(model="m", messages=MSG)
    wait_until(lambda: counter(gw.metrics(), "bud_gateway_endpoint_ejections_total") >= 1, message="ejection")
    before = len(flaky.posts())
    for _ in range(10):
        client.chat.completions.create(model="m", messages=MSG)
    assert len(flaky.posts()) == before, "an ejected endpoint gets no traffic"
    flaky.behaviour = "ok"

    def readmitted():
        client.chat.completions.create(model="m", messages=MSG)
        return len(flaky.posts()) > before

    wait_until(readmitted, timeout=10, interval=0.05, message="re-admission after a probe")
    assert any(r["method"] == "GET" for r in flaky.requests), "re-admitted by a probe"


def test_fallback_by_priority(start_gateway, mock_factory):
    primary, secondary = mock_factory(name="primary"), mock_factory(name="secondary")
    primary.behaviour = ("status", 500)
    gw = start_gateway(routes(engine("p", "m", [primary], priority=0), engine("s", "m", [secondary], priority=10)))
    client = gw.openai(SECRET)
    assert client.chat.completions.create(model="m", messages=MSG).choices[0].message.content == "Hello from secondary"
    primary.behaviour = "ok"
    wait_until(lambda: client.chat.completions.create(model="m", messages=MSG).choices[0].message.content == "Hello from primary",
               message="primary preferred again")


def test_fallback_when_no_endpoint_is_ready(start_gateway, mock_factory):
    secondary = mock_factory(name="secondary")
    primary = engine("p", "m", [], priority=0)
    primary["endpoints"] = [{"address": "127.0.0.1", "port": 1, "ready": False}]
    gw = start_gateway(routes(primary, engine("s", "m", [secondary], priority=1)))
    assert gw.openai(SECRET).chat.completions.create(model="m", messages=MSG).choices[0].message.content == "Hello from secondary"


def test_no_ready_endpoint_is_503(start_gateway):
    d = engine("p", "m", [])
    gw = start_gateway(routes(d))
    with pytest.raises(openai.InternalServerError) as e:
        gw.openai(SECRET).chat.completions.create(model="m", messages=MSG)
    assert e.value.status_code == 503


def test_never_retries_after_the_first_streamed_byte(start_gateway, mock_factory):
    first, second = mock_factory(name="first"), mock_factory(name="second")
    first.behaviour = second.behaviour = ("stream_error_after", 1)
    gw = start_gateway(routes(engine("d", "m", [first, second])))
    stream = gw.openai(SECRET).chat.completions.create(model="m", messages=MSG, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    assert len(first.posts()) + len(second.posts()) == 1


def test_first_byte_timeout_is_504(start_gateway, mock_factory):
    slow = mock_factory(name="slow")
    slow.behaviour = ("delay", 3)
    gw = start_gateway(routes(engine("d", "m", [slow])), extra_args=["--first-byte-timeout-ms", "300", "--max-attempts", "1"])
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai(SECRET).chat.completions.create(model="m", messages=MSG)
    assert e.value.status_code == 504


def test_client_disconnect_cancels_the_upstream_stream(start_gateway, mock_factory):
    slow = mock_factory(name="slow")
    slow.behaviour = ("slow_stream", 0.05, 400)
    gw = start_gateway(routes(engine("d", "m", [slow])))
    body = json.dumps({"model": "m", "messages": MSG, "stream": True}).encode()
    request = urllib.request.Request(gw.url + "/v1/chat/completions", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"})
    response = urllib.request.urlopen(request, timeout=10)
    assert response.readline().startswith(b"data: ")
    response.close()
    assert slow.cancelled.wait(10), "the upstream saw the disconnect"
    wait_until(lambda: 'status="499"' in gw.metrics(), message="499 recorded")


def test_hot_reload_of_the_routes_file(start_gateway, mock_factory):
    a, b = mock_factory(name="a"), mock_factory(name="b")
    gw = start_gateway(routes(engine("d", "m", [a])))
    client = gw.openai(SECRET)
    assert [m.id for m in client.models.list()] == ["m"]
    gw.write_routes(routes(engine("d", "m", [a]), engine("e", "n", [b])))
    wait_until(lambda: [m.id for m in client.models.list()] == ["m", "n"], message="new model visible")
    assert client.chat.completions.create(model="n", messages=MSG).choices[0].message.content == "Hello from b"
    # an invalid file keeps the previous routes
    gw.routes_path.write_text("deployments: [this is: not valid")
    wait_until(lambda: 'result="error"' in gw.metrics(), message="reload error counted")
    assert [m.id for m in client.models.list()] == ["m", "n"]
    # revoking the key takes effect
    gw.write_routes({"deployments": [], "apiKeys": []})
    wait_until(lambda: gw.get("/v1/models", {"Authorization": f"Bearer {SECRET}"})[0] == 401, message="key revoked")


def test_concurrent_streams_all_complete(start_gateway, mock_factory):
    a, b = mock_factory(name="a"), mock_factory(name="b")
    gw = start_gateway(routes(engine("d", "m", [a, b])))
    client = gw.openai(SECRET)

    def one(_):
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(model="m", messages=MSG, stream=True) if c.choices)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    assert all(re.fullmatch(r"Hello from [ab]", r) for r in results)


def test_client_disconnect_cancels_a_unary_request(start_gateway, mock_factory):
    slow = mock_factory(name="slow")
    slow.behaviour = ("delay", 3)
    gw = start_gateway(routes(engine("d", "m", [slow])))
    client = gw.openai(SECRET).with_options(timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=MSG)
    # recorded as a client disconnect well before the upstream would have answered
    wait_until(lambda: 'status="499"' in gw.metrics(), timeout=2, message="499 recorded on disconnect")


def test_all_ejected_still_tries_panic_routing(start_gateway, mock_factory):
    only = mock_factory(name="only")
    only.behaviour = ("status", 503)
    gw = start_gateway(routes(engine("d", "m", [only])), extra_args=["--eject-after", "2", "--ejection-ms", "60000", "--ejection-max-ms", "60000"])
    client = gw.openai(SECRET)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="m", messages=MSG)
    assert counter(gw.metrics(), "bud_gateway_endpoint_ejections_total") == 1
    only.behaviour = "ok"
    # long before the probe, the lone ejected endpoint is tried rather than refusing
    assert client.chat.completions.create(model="m", messages=MSG).choices[0].message.content == "Hello from only"


def test_streams_that_break_count_against_the_endpoint(start_gateway, mock_factory):
    broken = mock_factory(name="broken")
    broken.behaviour = ("stream_error_after", 1)
    gw = start_gateway(routes(engine("d", "m", [broken])), extra_args=["--eject-after", "2"])
    client = gw.openai(SECRET)
    for _ in range(2):
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(model="m", messages=MSG, stream=True):
                pass
    assert counter(gw.metrics(), "bud_gateway_endpoint_ejections_total") == 1


def test_retries_stop_when_the_budget_is_spent(start_gateway, mock_factory):
    a, b = mock_factory(name="a"), mock_factory(name="b")
    a.behaviour = b.behaviour = ("status", 503)
    gw = start_gateway(routes(engine("d", "m", [a, b])),
                       extra_args=["--eject-after", "1000", "--retry-budget-min", "1", "--retry-budget-ratio", "0"])
    client = gw.openai(SECRET)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=MSG)
    # one retry in the budget: 2 attempts for the first request, then 1 each
    assert len(a.posts()) + len(b.posts()) == 4
    assert counter(gw.metrics(), "bud_gateway_upstream_retries_total") == 1
