"""What llm_magic adds to one call: `complete()` beside the raw openai SDK, same loopback server.

    python bench/overhead.py [--calls 300] [--tools | --schema]

Both stream the same answer from the same server (TCP_NODELAY on, so no delayed-ACK stall hides
the difference). Calls alternate A B A B so drift hits both alike; prints median per-call times
and the difference, which is llm_magic's own cost: parsing the target, planning, the worker
thread, timing, token accounting, the record and the log.

--tools: both send the same tool (llm_magic reads its schema from a function's hints; the SDK
user writes the JSON Schema by hand) and the server answers with a call whose arguments stream
in 3 pieces; the SDK side joins them by index, as its users must.

--schema: both ask for structured output with the same Pydantic model: the SDK sends the
`response_format` its own helper makes of the model and its user validates the joined text
with the model; `complete(schema=Model)` sends ours and reads the answer into `parsed`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pydantic import BaseModel  # noqa: E402
from serve import alternate, sdk_answer  # noqa: E402
from servers.openai_server import OpenAIServer  # noqa: E402

KEY = "sk-bench-not-a-real-key"
CALL = ("get_weather", '{"city": "Paris", "unit": "C"}')


def get_weather(city: str, unit: str = "C") -> str:
    """Today's weather in a city."""
    return f"18 {unit} in {city}"


WEATHER_TOOL = {  # what get_weather's hints and docstring give, written out for the SDK
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Today's weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "default": "C"},
            },
            "required": ["city"],
        },
    },
}


def sdk_tool_call(client: object, prompt: str) -> str:
    """One streamed tool call through the raw SDK, its argument pieces joined by index."""
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model="bench-model",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
        tools=[WEATHER_TOOL],
    )
    parts: dict[int, list[str]] = {}
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            parts.setdefault(call.index, []).append(call.function.arguments or "")
    return "".join(parts[0])


class Reply(BaseModel):
    """The --schema answer: small, as most structured answers are."""

    city: str
    population: int
    capital: bool


REPLY = '{"city": "Paris", "population": 2102650, "capital": true}'


def _sdk_format() -> dict:
    """The response_format the openai SDK makes of a Pydantic model (its parse() helpers)."""
    from openai.lib._parsing._completions import type_to_response_format_param

    return dict(type_to_response_format_param(Reply))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tools", action="store_true", help="send a tool; answers are calls")
    mode.add_argument("--schema", action="store_true", help="structured output on both sides")
    args = parser.parse_args()

    with OpenAIServer() as server:
        if args.tools:
            server.tool_call = CALL
        if args.schema:
            server.reply = REPLY
        os.environ["OPENAI_BASE_URL"] = server.url
        os.environ["OPENAI_API_KEY"] = KEY
        os.environ["LLM_MAGIC_HOME"] = os.environ.get("LLM_MAGIC_HOME", "/tmp/llm_magic-bench-home")
        import openai

        import llm_magic

        client = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)

        def raw() -> str:
            if args.tools:
                return sdk_tool_call(client, "Say something short.")
            return sdk_answer(client, "Say something short.")

        def ours() -> str:
            if args.tools:
                answer = llm_magic.complete(
                    "Say something short.", "openai:bench-model", tools=[get_weather]
                )
                return json.dumps(answer.record.tool_calls[0]["arguments"])
            return llm_magic.complete("Say something short.", "openai:bench-model").text

        if args.schema:
            fmt = _sdk_format()

            def raw() -> str:
                text = sdk_answer(client, "Say something short.", response_format=fmt)
                Reply.model_validate_json(text)
                return text

            def ours() -> str:
                answer = llm_magic.complete("Say something short.", "openai:bench-model",
                                            schema=Reply)  # fmt: skip
                assert answer.schema_valid
                return answer.text

        assert raw() == ours()  # same work on both sides
        if args.schema:  # and the same request: the response_format each sent
            sent = [r.body["response_format"] for r in server.chat_requests()[-2:]]
            print("same response_format on the wire:", sent[0] == sent[1])
        for _ in range(20):  # warm-up: imports, pools, caches
            raw(), ours()
        a, b = alternate(ours, raw, args.calls)
    ma, mb = statistics.median(a) * 1000, statistics.median(b) * 1000
    what = " with a tool (answers are tool calls)" if args.tools else ""
    if args.schema:
        what = " with a schema (response_format sent, the answer validated)"
    print(f"{args.calls} calls each, streamed, loopback server{what}")
    pa, pb = (sorted(x)[int(len(x) * 0.9)] * 1000 for x in (a, b))
    print(f"llm_magic.complete()  median {ma:6.2f} ms  p90 {pa:6.2f} ms")
    print(f"raw openai SDK        median {mb:6.2f} ms  p90 {pb:6.2f} ms")
    print(f"added by llm_magic    {ma - mb:+.2f} ms at the median  (goal <= 1 ms)")


if __name__ == "__main__":
    main()
