"""A chat completion and a streamed one through the gateway with the official OpenAI SDK.

    python3 e2e/clients/chat.py BASE_URL API_KEY MODEL [PROMPT]

Prints one JSON object: the reply of each call, token usage, and the request ids. Exits
non-zero (with the SDK's error) when a call fails. The demo and the e2e tests use it.
"""

import json
import sys

import openai


def main() -> int:
    base_url, api_key, model = sys.argv[1:4]
    prompt = sys.argv[4] if len(sys.argv) > 4 else "Say hello to Bud Foundry in one sentence."
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    messages = [{"role": "user", "content": prompt}]

    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=24)
    completion = raw.parse()
    plain = completion.choices[0].message.content

    parts, usage, chunks = [], None, 0
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=24, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
    print(
        json.dumps(
            {
                "model": completion.model,
                "reply": plain,
                "usage": completion.usage.model_dump() if completion.usage else None,
                "request_id": raw.headers.get("x-request-id"),
                "streamed_reply": "".join(parts),
                "stream_chunks": chunks,
                "stream_usage": usage,
            }
        )
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
