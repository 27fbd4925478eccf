"""Run a loopback protocol server in its own process, so it never competes with the client
under measurement for the GIL.

    with served("openai", delay=0.05) as url: ...
    with served("openai", reply_chars=5_000_000, chunk_chars=4096) as url: ...  # any Faults knob
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
        child.wait(timeout=10)
