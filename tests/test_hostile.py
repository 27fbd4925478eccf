"""What a hostile server (or a proxy in front of it) sends back, on real sockets: one table of
every HTTP provider (and the embedded model where it applies) × every case.

Cases: a drip that never lets the read timeout fire (`--deadline` ends the row), a huge answer,
lone surrogates, NUL and escape sequences, a server that echoes the request's headers (the key
only the config file names), and a redirect. For each: every row is accounted for (the healthy
target beside it answers), partial text is kept, no key leaks anywhere (DataFrame, display
messages, terminal, files), the cell returns (pytest-timeout), another process can write the run
log right after it, and the next run is logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.test_transport import CHAT_PATHS, MODELS, URL_VARIABLES

HTTP = tuple(MODELS)

SECRET = "hostile0provider0key0in0the0environment"  # OPENAI_API_KEY and MISTRAL_API_KEY
WORK_KEY = "W0RK0plain0key0only0the0config0names"  # no key shape, no *_API_KEY variable
KEYS = (SECRET, WORK_KEY)

# NUL, colour, window title and OSC 52 clipboard write, an 8-bit CSI, bidi override and isolate.
ESCAPES = (
    "nul\x00 \x1b[31mred\x1b[0m \x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07 \x9b2J \u202eexe.txt "
    "\u2066x\u2069"
)
SHOWN = ("\\x00", "\\x1b[31mred", "\\x1b]52;c;ZXZpbA==\\x07", "\\x9b2J", "U+202E", "U+2066")
ACTIVE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

MAX_LOG_CHARS = 1_000_000  # the store's default `max_log_chars`
DISPLAY_MAX = 2_000_000  # bytes of display messages one run may send, whatever its answers
DISPLAY_MESSAGE_MAX = 100_000  # bytes of one display message

# A real process beside the kernel, writing the same log with a short busy timeout: an open
# transaction left behind by a failed write would make it fail with "database is locked".
OTHER_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=2)
with conn:
    conn.execute(
        "INSERT INTO runs (run_id, target, output) VALUES ('other-process', 'other:m', 'hi')"
    )
conn.close()
"""


@dataclass
class Scene:
    """One row of the table being played: the shell, the provider, its loopback server."""

    ip: Any
    kind: str  # openai, ollama, mistral, local
    server: Any  # the loopback server of `kind` (None for the embedded model)
    home: Path  # the isolated config folder; the log is home/"home"/log.db
    published: Any
    run_id: str = ""

    @property
    def log(self) -> Path:
        return self.home / "home" / "log.db"


@dataclass(frozen=True)
class Case:
    arrange: Callable[[Scene], str]  # sets the knobs; returns the hostile target and options
    check: Callable[[Scene, pd.Series], None]  # what the user must find in the hostile row
    kinds: tuple[str, ...] = HTTP
    after: Callable[[Scene], None] | None = None  # checked last, after the common checks
    slow: bool = False


# -- drip: one small piece at a time, never idle long enough for --timeout -------------------
DRIP_REPLY = " ".join(f"w{i}" for i in range(300))


def drip_arrange(scene: Scene) -> str:
    if scene.kind == "local":
        scene.ip.run_cell("%%llm local:smollm2 -n 1 -q\nHi")  # loaded before the clock runs
        # Greedy, it says "Hello," until its context is full: a minute here, far past 2 s.
        return "local:smollm2 -t 0 -n 2000 --deadline 2\nRepeat the word 'hello' forever."
    scene.server.reply, scene.server.drip = DRIP_REPLY, 0.0005
    return f"{scene.kind}:{MODELS[scene.kind]} --timeout 0.5 --deadline 2 --retries 0\nHi"


def drip_check(scene: Scene, row: pd.Series) -> None:
    assert row["finish_reason"] == "deadline"
    assert row["error"] == (
        f"{scene.kind}: the deadline of 2 s passed; --deadline sets it (0: none)"
    )
    assert row["output"], "the text that arrived before the deadline is kept"
    if scene.kind != "local":
        assert DRIP_REPLY.startswith(row["output"])


# -- huge: megabytes of answer --------------------------------------------------------------
def huge(size: int) -> Case:
    """An answer of `size` characters, streamed in pieces of 4,096."""

    def arrange(scene: Scene) -> str:
        server = scene.server
        server.reply, server.reply_chars, server.chunk_chars = "0123456789", size, 4096
        # A piece counts as a token here; anthropic always sends max_tokens (4,096 by default).
        return f"{scene.kind}:{MODELS[scene.kind]} --cache -n 100000\nHi"

    def check(scene: Scene, row: pd.Series) -> None:
        assert pd.isna(row["error"]) and row["finish_reason"] == "stop"
        assert len(row["output"]) == size
        assert row["output"] == "0123456789" * (size // 10)  # every character
        sizes = [len(json.dumps(o["data"]).encode()) for o in scene.published.outputs]
        # The final view holds the first 20,000 characters twice (HTML and plain text).
        assert max(sizes) <= DISPLAY_MESSAGE_MAX, max(sizes)
        assert sum(sizes) <= DISPLAY_MAX, f"{sum(sizes):,} bytes in {len(sizes)} messages"

    def after(scene: Scene) -> None:
        """The log keeps at most max_log_chars of it, flagged truncated, never cached."""
        rows = [r for r in logged(scene.log) if r["run_id"] == scene.run_id]
        logged_row = next(r for r in rows if r["target"].startswith(scene.kind))
        assert len(logged_row["output"]) == MAX_LOG_CHARS and logged_row["truncated"] == 1
        asked = len(scene.server.chat_requests())
        df = run_cell(scene.ip, f"{scene.kind}:{MODELS[scene.kind]} --cache -n 100000 -q\nHi")
        assert not df["cached"].iloc[0] and len(scene.server.chat_requests()) == asked + 1
        assert len(df["output"].iloc[0]) == size

    return Case(arrange, check, after=after)


# -- lone surrogates (legal JSON, not UTF-8) ------------------------------------------------
def surrogates_arrange(scene: Scene) -> str:
    scene.server.reply = "good \ud800 bad \udfff end"
    return f"{scene.kind}:{MODELS[scene.kind]}\nHi"


def surrogates_check(scene: Scene, row: pd.Series) -> None:
    assert pd.isna(row["error"]) and row["output"] == "good \ufffd bad \ufffd end"
    assert row["params"]["notes"] == ["2 character(s) UTF-8 cannot hold became U+FFFD"]
    # The live view heard the raw pieces: it showed them as U+FFFD too, and kept updating.
    shown = [v for o in scene.published.outputs for v in o["data"].values()]
    assert not [v for v in shown if ACTIVE.search(v)]
    assert "bad \ufffd end" in "\n".join(scene.published.outputs[-1]["data"].values())
    scene.ip.user_ns["_llm"].llm.side_by_side()._repr_html_().encode("utf-8")
    (logged_row,) = [
        r for r in logged(scene.log) if r["run_id"] == scene.run_id and r["target"] == row["target"]
    ]
    assert logged_row["output"] == row["output"]  # the run with them is logged itself


# -- NUL, ANSI/OSC escapes, C1 controls, bidi overrides --------------------------------------
def escapes_arrange(scene: Scene) -> str:
    scene.server.reply = ESCAPES
    return f"{scene.kind}:{MODELS[scene.kind]}\nHi"


def escapes_check(scene: Scene, row: pd.Series) -> None:
    assert pd.isna(row["error"]) and row["output"] == ESCAPES  # the DataFrame keeps them raw
    shown = [v for o in scene.published.outputs for v in o["data"].values()]
    assert shown and not [v for v in shown if ACTIVE.search(v)]
    final = "\n".join(scene.published.outputs[-1]["data"].values())
    assert all(piece in final for piece in SHOWN), final
    side = scene.ip.user_ns["_llm"].llm.side_by_side()._repr_html_()
    assert not ACTIVE.search(side) and "\\x1b[31m" in side and "&lt;U+202E&gt;" in side
    (logged_row,) = [
        r for r in logged(scene.log) if r["run_id"] == scene.run_id and r["target"] == row["target"]
    ]
    assert logged_row["output"] == ESCAPES  # the log keeps them raw too, NUL included


# -- a server that echoes the request's headers, with a key only the config file names -------
def echo_arrange(scene: Scene) -> str:
    (scene.home / "config.toml").write_text(
        f'[providers.work]\nkind = "{scene.kind}"\nbase_url = "{scene.server.url}"\n'
        'api_key_env = "WORK_LLM_KEY"\n'
    )
    scene.server.api_key = WORK_KEY  # the server wants it: the key really is sent
    scene.server.echo_headers = True
    return f"work:{MODELS[scene.kind]}\nHi"


# Each protocol's own key header, as it reaches the server and as the echo shows it.
SENT_KEY = {"anthropic": ("x-api-key", WORK_KEY)}


def echo_check(scene: Scene, row: pd.Series) -> None:
    header, value = SENT_KEY.get(scene.kind, ("authorization", f"Bearer {WORK_KEY}"))
    shown = value.replace(WORK_KEY, "***")
    assert pd.isna(row["error"]) and f"{header}: {shown}" in row["output"]
    assert scene.server.chat_requests()[-1].headers[header] == value


# -- a redirect: not followed, named ----------------------------------------------------------
NEW_ROOT = "https://llm.example.com"


def redirect_arrange(scene: Scene) -> str:
    base = NEW_ROOT + ("/v1" if scene.kind == "openai" else "")
    scene.server.redirect = 307
    scene.server.redirect_to = base + CHAT_PATHS[scene.kind]
    return f"{scene.kind}:{MODELS[scene.kind]}\nHi"


def redirect_check(scene: Scene, row: pd.Series) -> None:
    base = NEW_ROOT + ("/v1" if scene.kind == "openai" else "")
    assert row["error"] == (
        f"{scene.kind}: HTTP 307: the server redirected to {base}{CHAT_PATHS[scene.kind]}; "
        f"set {URL_VARIABLES[scene.kind]} to {base}"
    )
    assert row["output"] == "" and row["finish_reason"] == "error"
    assert len(scene.server.chat_requests()) == 1  # neither followed nor retried


CASES = {
    "drip": Case(drip_arrange, drip_check, (*HTTP, "local")),
    "huge": huge(5_000_000),
    "huge_20mb": dataclasses.replace(huge(20_000_000), slow=True),
    "surrogates": Case(surrogates_arrange, surrogates_check),
    "escapes": Case(escapes_arrange, escapes_check),
    "echo": Case(echo_arrange, echo_check),
    "redirect": Case(redirect_arrange, redirect_check),
}


def _marks(kind: str, case: Case) -> list[pytest.MarkDecorator]:
    return [pytest.mark.local_model] * (kind == "local") + [pytest.mark.slow] * case.slow


MATRIX = [
    pytest.param(kind, name, id=f"{kind}-{name}", marks=_marks(kind, case))
    for name, case in CASES.items()
    for kind in case.kinds
]


# -- the table ---------------------------------------------------------------------------------
def run_cell(ip: Any, line_and_prompt: str) -> pd.DataFrame:
    ip.run_cell(f"%%llm {line_and_prompt}")
    return ip.user_ns["_llm"]


def logged(path: Path) -> list[dict[str, Any]]:
    """Every row of the run log, oldest first, read on a connection of its own."""
    with contextlib.closing(sqlite3.connect(path, timeout=2)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY id")]


def partner_of(kind: str) -> str:
    """A healthy target on another loopback server, run beside the hostile one."""
    return "ollama:llama3.2" if kind == "openai" else "openai:gpt-4o-mini"


@pytest.mark.timeout(120)  # the cell returns: a hang fails here instead of blocking the suite
@pytest.mark.parametrize(("kind", "name"), MATRIX)
def test_hostile_server(
    ip, backends, published, monkeypatch, capsys, isolated_env, kind, name
) -> None:
    for variable in ("OPENAI_API_KEY", "MISTRAL_API_KEY"):
        monkeypatch.setenv(variable, SECRET)
    monkeypatch.setenv("WORK_LLM_KEY", WORK_KEY)
    case = CASES[name]
    scene = Scene(ip, kind, getattr(backends, kind, None), isolated_env, published)
    hostile = case.arrange(scene)
    target_line, prompt = hostile.split("\n", 1)
    target, options = (target_line.split(" ", 1) + [""])[:2]
    partner = partner_of(kind)

    df = run_cell(ip, f"{target} {partner} {options}\n{prompt}")

    # Every row accounted for: the hostile one and the healthy one beside it, in order.
    assert df["target"].tolist() == [target, partner]
    healthy = df.iloc[1]
    assert pd.isna(healthy["error"]) and healthy["output"].startswith("Echo from")
    scene.run_id = df["run_id"].iloc[0]
    case.check(scene, df.iloc[0])

    # Another process can write the log right after this run.
    other = subprocess.run(
        [sys.executable, "-c", OTHER_WRITER, str(scene.log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other.returncode == 0, other.stderr

    # The next run is logged, after the hostile run's rows and the other process's row.
    nxt = run_cell(ip, f"{partner} -q\nNext")
    assert pd.isna(nxt["error"].iloc[0])
    order = [r["run_id"] for r in logged(scene.log)]
    assert order.index(scene.run_id) < order.index("other-process") < order.index(
        nxt["run_id"].iloc[0]
    )
    assert order.count(scene.run_id) == 2

    # No traceback, and no key anywhere: the DataFrame, every display message, the terminal,
    # the home's files.
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    texts = {
        "DataFrame": df.to_json(date_format="iso"),
        "side_by_side": df.llm.side_by_side()._repr_html_(),
        "display": "\n".join(str(o["data"]) for o in published.outputs),
        "stdout": captured.out,
        "stderr": captured.err,
    }
    for where, text in texts.items():
        assert not [key for key in KEYS if key in text], where
    for path in (isolated_env / "home").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [key for key in KEYS if key.encode() in data], path

    if case.after is not None:
        case.after(scene)
