"""Run a loopback protocol server in its own process, so it never competes with the client
under measurement for the GIL.

    with served("openai", delay=0.05) as url: ...
    with served("openai", reply_chars=5_000_000, chunk_chars=4096) as url: ...  # any Faults knob

Also `sdk_answer()`, the baseline the benchmarks hold llm_magic against (the raw openai SDK),
and `alternate()`, which times two calls side by side.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

TESTS = Path(__file__).resolve().parent.parent / "tests"

_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from servers.{module} import {cls}
server = {cls}({kwargs})
server.start()
server.delay = {delay!r}
server.token_delay = {token_delay!r}
server.reply = {reply!r}
for name, value in {knobs!r}.items():
    setattr(server, name, value)
print(server.url, flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
server.stop()
"""

_KINDS = {
    "openai": ("openai_server", "OpenAIServer", ""),
    "ollama": ("ollama_server", "OllamaServer", "any_model=True"),
    "mistral": ("mistral_server", "MistralServer", ""),
}


@contextmanager
def served(
    kind: str,
    delay: float = 0.0,
    token_delay: float = 0.0,
    reply: str | None = None,
    **knobs: Any,
) -> Iterator[str]:
    module, cls, kwargs = _KINDS[kind]
    code = _CHILD.format(
        tests=str(TESTS),
        module=module,
        cls=cls,
        kwargs=kwargs,
        delay=delay,
        token_delay=token_delay,
        reply=reply,
        knobs=knobs,
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a server that took 100,000 requests stops slowly
            child.kill()
            child.wait()


def sdk_answer(client: openai.OpenAI, prompt: str, **extra: Any) -> str:
    """One streamed answer through the raw openai SDK, joined: what a user of the SDK writes.
    `extra` goes to create() as it is (response_format=…)."""
    stream = client.chat.completions.create(
        model="bench-model",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def alternate(a: Callable[[], object], b: Callable[[], object], runs: int) -> tuple[list, list]:
    """Seconds of each of `runs` calls of `a` and of `b`, called A B A B so that drift in the
    machine's speed hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for call, into in zip((a, b), times, strict=True):
            start = time.perf_counter()
            call()
            into.append(time.perf_counter() - start)
    return times
