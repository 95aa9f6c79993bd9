"""Sequential chat completions through the gateway until a stop file appears.

    python3 e2e/clients/load.py BASE_URL API_KEY MODEL STOP_FILE

Uses the official OpenAI SDK with retries off, so every failure the gateway lets through
counts. Prints one JSON object at the end: {"ok": N, "failed": N, "errors": [...], "models": {...}}.
"""

import json
import os
import sys
import time

import openai


def main() -> int:
    base_url, api_key, model, stop_file = sys.argv[1:5]
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    ok, failed, errors, models = 0, 0, [], {}
    deadline = time.monotonic() + 300  # a bound on the loop whatever happens to the caller
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        try:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "ping"}], max_tokens=4
            )
            ok += 1
            models[reply.model] = models.get(reply.model, 0) + 1
        except openai.APIError as err:
            failed += 1
            errors.append(f"{type(err).__name__}: {err}"[:300])
    print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:10], "models": models}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
