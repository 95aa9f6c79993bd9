"""The official `anthropic` package against the gateway's `/v1/messages`: translated to
OpenAI-compatible engines, and through to an Anthropic upstream (both translations)."""

from __future__ import annotations

import json

import anthropic
import pytest

from conftest import api_key, engine, external

SECRET = "sk-ant-test"
TOOLS = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def world(start_gateway, mock_factory):
    vllm = mock_factory("openai", "vllm")
    claude = mock_factory("anthropic", "claude")
    backup = mock_factory("openai", "backup")
    routes = {
        "deployments": [
            engine("qwen", "qwen3-8b", [vllm]),
            external("claude", "claude", "Anthropic", claude, credentialsSecretRef={"name": "anthropic", "key": "apiKey"}),
            external("claude-primary", "claude-ha", "Anthropic", claude, priority=0, credentialsSecretRef={"name": "anthropic", "key": "apiKey"}),
            engine("claude-backup", "claude-ha", [backup], priority=10),
        ],
        "apiKeys": [api_key(SECRET, "app"), api_key("sk-only-qwen", "qwen-only", models=["qwen3-8b"])],
        "credentials": [{"name": "anthropic", "key": "apiKey", "value": "ant-upstream-secret"}],
    }
    return {"gw": start_gateway(routes), "vllm": vllm, "claude": claude, "backup": backup}


def test_messages_to_engine_plain(world):
    client = world["gw"].anthropic(SECRET)
    m = client.messages.create(model="qwen3-8b", max_tokens=64, system="Be brief.",
                               messages=[{"role": "user", "content": [
                                   {"type": "text", "text": "what is this"},
                                   {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}])
    assert m.type == "message" and m.role == "assistant" and m.model == "qwen3-8b"
    assert m.content[0].type == "text" and m.content[0].text == "Hello from vllm"
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (5, 3)  # system + user words
    sent = world["vllm"].posts()[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert sent["max_tokens"] == 64


def test_messages_stream_event_order(world):
    gw = world["gw"]
    status, body, headers = gw.post(
        "/v1/messages",
        json.dumps({"model": "qwen3-8b", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        {"x-api-key": SECRET, "anthropic-version": "2023-06-01"},
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    names = [block.split("\n")[0].removeprefix("event: ") for block in body.strip().split("\n\n")]
    assert names[0] == "message_start" and names[1] == "ping"
    assert names[2] == "content_block_start" and names[-3] == "content_block_stop"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}


def test_messages_stream_with_sdk(world):
    client = world["gw"].anthropic(SECRET)
    with client.messages.stream(model="qwen3-8b", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from vllm"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3


def test_reasoning_engine_answers_with_a_thinking_block(world):
    world["vllm"].behaviour = "reasoning"
    client = world["gw"].anthropic(SECRET)
    m = client.messages.create(model="qwen3-8b", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].thinking == "The user greets me." and m.content[1].text == "Hello from vllm"
    with client.messages.stream(model="qwen3-8b", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "The user greets me." and final.content[1].text == "Hello from vllm"
    assert "thinking" in kinds and kinds.index("thinking") < kinds.index("text"), kinds


def test_messages_tools_to_engine(world):
    client = world["gw"].anthropic(SECRET)
    m = client.messages.create(model="qwen3-8b", max_tokens=64, tools=TOOLS, messages=[{"role": "user", "content": "weather?"}])
    assert m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris"}
    sent = world["vllm"].posts()[-1]["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    # a tool result round trip
    follow = client.messages.create(model="qwen3-8b", max_tokens=64, tools=TOOLS, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": block.id, "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "18C"}]},
    ])
    assert follow.stop_reason == "tool_use"
    sent = world["vllm"].posts()[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == block.id
    assert sent[2] == {"role": "tool", "tool_call_id": block.id, "content": "18C"}
    with client.messages.stream(model="qwen3-8b", max_tokens=10, tools=TOOLS, messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    assert final.content[-1].type == "tool_use" and final.content[-1].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_messages_to_anthropic_upstream(world):
    client = world["gw"].anthropic(SECRET)
    m = client.messages.create(model="claude", max_tokens=20, messages=[{"role": "user", "content": "hello there you"}])
    assert m.content[0].text == "Hello from claude" and m.usage.input_tokens == 3
    sent = world["claude"].posts()[-1]
    assert sent["headers"]["x-api-key"] == "ant-upstream-secret"
    assert sent["body"]["model"] == "claude-upstream"
    with client.messages.stream(model="claude", max_tokens=10, tools=TOOLS, messages=[{"role": "user", "content": "w"}]) as stream:
        final = stream.get_final_message()
    assert final.content[-1].input == {"city": "Paris"} and final.stop_reason == "tool_use"


def test_anthropic_upstream_gets_the_callers_body_as_is(world):
    client = world["gw"].anthropic(SECRET)
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A short note."},
                "cache_control": {"type": "ephemeral"}}
    m = client.messages.create(model="claude", max_tokens=20, extra_body={"top_k": 5}, metadata={"user_id": "u1"},
                               messages=[{"role": "user", "content": [document, {"type": "text", "text": "summarise"}]}])
    assert m.content[0].text == "Hello from claude" and m.model == "claude"
    sent = world["claude"].posts()[-1]["body"]
    assert sent["messages"][0]["content"][0] == document, "no lossy round trip through the OpenAI shape"
    assert sent["top_k"] == 5 and sent["model"] == "claude-upstream"
    gw = world["gw"]
    status, body, _ = gw.post("/v1/messages", json.dumps({"model": "claude", "max_tokens": 5, "stream": True,
                                                          "messages": [{"role": "user", "content": "hi"}]}).encode(),
                              {"x-api-key": SECRET, "anthropic-version": "2023-06-01"})
    names = [block.split("\n")[0].removeprefix("event: ") for block in body.strip().split("\n\n")]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert '"model": "claude"' in body or '"model":"claude"' in body
    # document blocks have no OpenAI form: an engine-backed model refuses them with a 400
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="qwen3-8b", max_tokens=5, messages=[{"role": "user", "content": [document]}])


def test_anthropic_529_fails_over_to_the_next_priority(world):
    world["claude"].behaviour = ("status", 529)
    client = world["gw"].anthropic(SECRET)
    m = client.messages.create(model="claude-ha", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == "Hello from backup"
    assert len(world["claude"].posts()) >= 1 and len(world["backup"].posts()) == 1
    with client.messages.stream(model="claude-ha", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        assert "".join(stream.text_stream) == "Hello from backup"


def test_errors_in_anthropic_format(world):
    gw = world["gw"]
    with pytest.raises(anthropic.AuthenticationError) as e:
        gw.anthropic("sk-wrong").messages.create(model="qwen3-8b", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as e:
        gw.anthropic(SECRET).messages.create(model="missing", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.PermissionDeniedError):
        gw.anthropic("sk-only-qwen").messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    status, body, _ = gw.post("/v1/messages", b'{"model":"qwen3-8b","messages":[{"role":"user","content":"x"}]}', {"x-api-key": SECRET})
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    status, body, _ = gw.post("/v1/messages", b'{"model":"qwen3-8b","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document"}]}]}', {"x-api-key": SECRET})
    assert status == 400 and json.loads(body)["type"] == "error"


def test_anthropic_models_list(world):
    ids = [m.id for m in world["gw"].anthropic(SECRET).models.list()]
    assert sorted(ids) == ["claude", "claude-ha", "qwen3-8b"]
