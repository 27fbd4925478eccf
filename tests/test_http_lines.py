"""Exchange.lines(): the line splitter every streamed answer (SSE and NDJSON) is read through.

Real httpx2 responses whose bodies arrive in the pieces given, so every way a line end or a
character can fall across two network reads is covered.
"""

from __future__ import annotations

import httpx2
import pytest

from llm_magic.providers._http import Exchange


def lines_of(pieces: list[bytes]) -> list[str]:
    exchange = Exchange("test", None, None)
    exchange.adopt(httpx2.Response(200, content=iter(pieces)))
    with exchange:
        return list(exchange.lines())


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ([b"a\nb\n"], ["a", "b"]),
        ([b"a\r\nb\r\n"], ["a", "b"]),
        ([b"a\rb\r"], ["a", "b"]),  # a bare CR ends a line in SSE
        ([b"a\r", b"\nb\n"], ["a", "b"]),  # CRLF split over two reads is one line end
        ([b"da", b"ta: x\n\n"], ["data: x", ""]),  # a line split over two reads
        ([b"a\n\n\nb\n"], ["a", "", "", "b"]),  # blank lines are kept: they end SSE events
        ([b"a\nlast"], ["a", "last"]),  # the last line may lack its end
        ([b"caf\xc3", b"\xa9\n"], ["café"]),  # a character split over two reads
        ([b"", b"a\n", b""], ["a"]),
        ([], []),
    ],
)
def test_lines(pieces: list[bytes], expected: list[str]) -> None:
    assert lines_of(pieces) == expected


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert lines_of([b"ok \xff\n"]) == ["ok \ufffd"]
