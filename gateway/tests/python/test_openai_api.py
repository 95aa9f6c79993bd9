"""The official `openai` package against the gateway: engines, OpenAI-compatible services,
Azure, Anthropic (translated), plain, streaming, tools, errors."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import api_key, engine, external

SECRET = "sk-test-app"
OTHER = "sk-test-limited"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
def world(start_gateway, mock_factory):
    vllm = mock_factory("openai", "vllm")
    together = mock_factory("openai", "together")
    azure = mock_factory("azure", "azure")
    claude = mock_factory("anthropic", "claude")
    routes = {
        "deployments": [
            engine("qwen-vllm", "qwen3-8b", [vllm], pricing={"inputPerMillionTokens": "1", "outputPerMillionTokens": "2"}),
            external("together-llama", "llama", "Together", together, credentialsSecretRef={"name": "together", "key": "apiKey"}),
            external("azure-gpt", "gpt-4o", "AzureOpenAI", azure, apiVersion="2024-06-01", azureDeployment="gpt4o-prod",
                     credentialsSecretRef={"name": "azure", "key": "apiKey"}),
            external("claude", "claude", "Anthropic", claude, credentialsSecretRef={"name": "anthropic", "key": "apiKey"}),
            engine("other-ns", "qwen3-8b", [vllm], namespace="team-b"),
        ],
        "apiKeys": [
            api_key(SECRET, "app"),
            api_key(OTHER, "limited", models=["llama"]),
            api_key("sk-disabled", "disabled", disabled=True),
            api_key("sk-expired", "expired", expiresAt="2020-01-01T00:00:00Z"),
        ],
        "credentials": [
            {"name": "together", "key": "apiKey", "value": "tg-secret"},
            {"name": "azure", "key": "apiKey", "valueFromEnv": "TEST_AZURE_KEY"},
            {"name": "anthropic", "key": "apiKey", "value": "ant-secret"},
        ],
    }
    gw = start_gateway(routes, env={"TEST_AZURE_KEY": "az-secret"})
    return {"gw": gw, "vllm": vllm, "together": together, "azure": azure, "claude": claude}


def test_chat_plain_engine(world):
    client = world["gw"].openai(SECRET)
    r = client.chat.completions.with_raw_response.create(model="qwen3-8b", messages=[{"role": "user", "content": "hi there"}])
    assert r.headers.get("x-request-id")
    completion = r.parse()
    assert completion.choices[0].message.content == "Hello from vllm"
    assert completion.model == "qwen3-8b"
    assert completion.usage.prompt_tokens == 2
    sent = world["vllm"].posts()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "qwen3-8b-upstream"


def test_request_id_is_propagated(world):
    status, _, headers = world["gw"].get("/healthz", {"x-request-id": "abc-123"})
    assert status == 200 and headers["x-request-id"] == "abc-123"
    status, _, headers = world["gw"].get("/healthz", {"x-request-id": "bad id with spaces"})
    assert headers["x-request-id"] != "bad id with spaces" and len(headers["x-request-id"]) == 32


def test_chat_stream_without_usage_strips_it(world):
    client = world["gw"].openai(SECRET)
    chunks = list(client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "hi"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from vllm"
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk must be stripped"
    assert chunks[-1].choices[0].finish_reason == "stop"
    # the gateway always asks the upstream for usage
    assert world["vllm"].posts()[-1]["body"]["stream_options"] == {"include_usage": True}


def test_chat_stream_with_usage_and_exact_framing(world):
    status, body, headers = world["gw"].post(
        "/v1/chat/completions",
        json.dumps({"model": "qwen3-8b", "messages": [{"role": "user", "content": "a b c"}], "stream": True,
                    "stream_options": {"include_usage": True}}).encode(),
        {"Authorization": f"Bearer {SECRET}"},
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = body.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["prompt_tokens"] == 3
    assert all(p["model"] == "qwen3-8b" for p in payloads)


def test_tools_plain_and_streaming(world):
    client = world["gw"].openai(SECRET)
    r = client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    stream = client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, stream=True)
    args, names, finish = "", [], None
    for c in stream:
        for tc in c.choices[0].delta.tool_calls or []:
            args += tc.function.arguments or ""
            if tc.function.name:
                names.append(tc.function.name)
        finish = c.choices[0].finish_reason or finish
    assert names == ["get_weather"] and json.loads(args) == {"city": "Paris"} and finish == "tool_calls"


def test_completions_and_embeddings(world):
    client = world["gw"].openai(SECRET)
    c = client.completions.create(model="qwen3-8b", prompt="Say")
    assert c.choices[0].text == " from vllm"
    streamed = "".join(x.choices[0].text for x in client.completions.create(model="qwen3-8b", prompt="Say", stream=True) if x.choices)
    assert streamed == "Hello from vllm"
    e = client.embeddings.create(model="qwen3-8b", input=["a", "b"])
    assert len(e.data) == 2 and e.data[1].embedding == [0.1, 0.2, 1.0]
    assert world["vllm"].posts()[-1]["path"] == "/v1/embeddings"


def test_models_lists_what_the_key_may_use(world):
    assert sorted(m.id for m in world["gw"].openai(SECRET).models.list()) == ["claude", "gpt-4o", "llama", "qwen3-8b"]
    assert [m.id for m in world["gw"].openai(OTHER).models.list()] == ["llama"]
    assert world["gw"].openai(OTHER).models.retrieve("llama").id == "llama"
    with pytest.raises(openai.PermissionDeniedError):
        world["gw"].openai(OTHER).models.retrieve("qwen3-8b")


def test_stream_options_dropped_when_not_streaming(world):
    world["gw"].openai(SECRET).chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}],
                                                       stream_options={"include_usage": True})
    assert "stream_options" not in world["vllm"].posts()[-1]["body"]


def test_together_gets_bearer_credentials(world):
    r = world["gw"].openai(SECRET).chat.completions.create(model="llama", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content == "Hello from together"
    sent = world["together"].posts()[-1]
    assert sent["headers"]["authorization"] == "Bearer tg-secret"
    assert SECRET not in json.dumps(sent["headers"]), "the client's key never goes upstream"


def test_azure_deployment_path_and_api_key(world):
    client = world["gw"].openai(SECRET)
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].message.content == "Hello from azure"
    sent = world["azure"].posts()[-1]
    assert sent["path"] == "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-06-01"
    assert sent["headers"]["api-key"] == "az-secret"
    assert "authorization" not in sent["headers"]
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True) if c.choices)
    assert text == "Hello from azure"


def test_anthropic_provider_translated(world):
    client = world["gw"].openai(SECRET)
    r = client.chat.completions.create(
        model="claude", max_tokens=50,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello you"}])
    assert r.choices[0].message.content == "Hello from claude"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (2, 3)
    sent = world["claude"].posts()[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "ant-secret" and sent["headers"]["anthropic-version"]
    assert sent["body"]["system"] == "Be brief." and sent["body"]["max_tokens"] == 50
    chunks = list(client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from claude"
    assert chunks[-1].usage.completion_tokens == 3
    tools = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "weather"}], tools=TOOLS)
    assert tools.choices[0].finish_reason == "tool_calls"
    assert json.loads(tools.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert world["claude"].posts()[-1]["body"]["tools"][0]["input_schema"]["properties"]["city"]["type"] == "string"
    stream = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "weather"}], tools=TOOLS, stream=True)
    args = "".join(tc.function.arguments or "" for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or []))
    assert json.loads(args) == {"city": "Paris"}


def test_anthropic_thinking_reaches_openai_clients_as_reasoning_content(world):
    world["claude"].behaviour = "reasoning"
    client = world["gw"].openai(SECRET)
    r = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello from claude"
    assert r.choices[0].message.reasoning_content == "The user greets me."
    chunks = list(client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "The user greets me."
    assert "".join(d.content or "" for d in deltas) == "Hello from claude"


def test_anthropic_provider_rejects_embeddings(world):
    with pytest.raises(openai.BadRequestError):
        world["gw"].openai(SECRET).embeddings.create(model="claude", input="x")


# -- errors ------------------------------------------------------------------------------------


def test_missing_and_invalid_keys_are_401(world):
    gw = world["gw"]
    status, body, _ = gw.post("/v1/chat/completions", b'{"model":"qwen3-8b","messages":[{"role":"user","content":"x"}]}')
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
    for secret in ["sk-wrong", "sk-disabled", "sk-expired"]:
        with pytest.raises(openai.AuthenticationError):
            gw.openai(secret).chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}])


def test_forbidden_and_unknown_models(world):
    with pytest.raises(openai.PermissionDeniedError):
        world["gw"].openai(OTHER).chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError) as e:
        world["gw"].openai(SECRET).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "nope" in str(e.value)
    assert "nope" not in world["gw"].metrics(), "unknown model names never become metric labels"


def test_malformed_bodies_are_400_and_never_crash(world):
    gw = world["gw"]
    auth = {"Authorization": f"Bearer {SECRET}"}
    cases = [
        b"{not json",
        b"[]",
        b'{"messages":[{"role":"user","content":"x"}]}',
        b'{"model":3,"messages":[]}',
        b'{"model":"qwen3-8b","messages":"x"}',
        b'{"model":"qwen3-8b","messages":[{"role":"user","content":"x"}],"stream":"yes"}',
        b'{"model":"qwen3-8b","messages":[{"role":"user","content":"x"}],"max_tokens":-5}',
        b"\xff\xfe",
        b"",
    ]
    for body in cases:
        status, text, headers = gw.post("/v1/chat/completions", body, auth)
        assert status == 400, (body, status, text)
        assert json.loads(text)["error"]["type"] == "invalid_request_error"
        assert headers.get("x-request-id")
    assert gw.get("/healthz")[0] == 200


def test_unknown_fields_pass_through(world):
    client = world["gw"].openai(SECRET)
    r = client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}], extra_body={"top_k": 5, "weird": {"a": 1}})
    assert r.choices[0].message.content == "Hello from vllm"
    assert world["vllm"].posts()[-1]["body"]["top_k"] == 5


def test_huge_body_is_413(start_gateway, mock_factory):
    m = mock_factory()
    gw = start_gateway({"deployments": [engine("d", "m", [m])], "apiKeys": [api_key(SECRET, "k")]}, extra_args=["--max-body-bytes", "1000"])
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    status, body, _ = gw.post("/v1/chat/completions", big, {"Authorization": f"Bearer {SECRET}"})
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai(SECRET).chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 5000}])
    assert e.value.status_code == 413
    assert not m.posts()


def test_upstream_4xx_passes_through_and_no_secret_leaks(world):
    world["together"].behaviour = ("status", 400)
    with pytest.raises(openai.BadRequestError) as e:
        world["gw"].openai(SECRET).chat.completions.create(model="llama", messages=[{"role": "user", "content": "x"}])
    assert "together says 400" in str(e.value)
    assert "tg-secret" not in str(e.value.response.text)
    assert len(world["together"].posts()) == 1, "a 400 is not retried"


def test_in_band_error_after_stream_started(world):
    world["vllm"].behaviour = ("stream_error_after", 1)
    stream = world["gw"].openai(SECRET).chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}], stream=True)
    got = []
    with pytest.raises(openai.APIError) as e:
        for c in stream:
            got.append(c)
    assert got, "the stream started before the error"
    assert "crashed" in str(e.value)


def test_metrics_count_requests(world):
    world["gw"].openai(SECRET).chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}])
    text = world["gw"].metrics()
    assert 'bud_gateway_requests_total{endpoint="chat_completions",model="qwen3-8b",status="200"}' in text
    assert "bud_gateway_request_duration_seconds_bucket" in text
    assert 'bud_gateway_tokens_total{model="qwen3-8b",direction="output"}' in text
