"""The live view (real IPython display machinery) and the escaping building blocks."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher, DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from llm_magic import _html as html
from llm_magic._display import LiveView
from llm_magic._view_text import SHOWN_HEAD, STREAM_TAIL, Tail, excerpt, visible
from llm_magic.errors import UsageProblem

XSS = "<script>alert(1)</script>"


class RecordingPublisher(CapturingDisplayPublisher):
    """IPython's capturing publisher, also noting which thread published, and encoding every
    message as a kernel does (JSON, then UTF-8, which refuses lone surrogates): its size, or
    its failure (LiveView swallows display errors, so this is where a bad one shows)."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False):
        self.threads.append(threading.current_thread().name)
        try:
            self.sizes.append(len(json.dumps(data, ensure_ascii=False).encode("utf-8")))
        except Exception as exc:  # noqa: BLE001 - recorded for the test to see
            self.failures.append(exc)
        super().publish(data, metadata, source, transient=transient, update=update)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.threads: list[str] = []
        self.sizes: list[int] = []
        self.failures: list[BaseException] = []


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """A real shell for this module; cleared afterwards so other modules can make their own."""
    if InteractiveShell.initialized():
        yield InteractiveShell.instance()
        return
    cfg = Config()
    cfg.HistoryManager.enabled = False
    cfg.InteractiveShell.ipython_dir = str(tmp_path_factory.mktemp("ipython"))
    yield InteractiveShell.instance(config=cfg)
    InteractiveShell.clear_instance()


@pytest.fixture
def published(shell: InteractiveShell):
    """Swap in a recording display publisher, like a kernel's, for one test."""
    saved = shell.display_pub
    shell.display_pub = RecordingPublisher(shell=shell)
    yield shell.display_pub
    shell.display_pub = saved


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_many_worker_threads_at_once(published: RecordingPublisher) -> None:
    labels = [f"p{i}:model" for i in range(8)]
    view = LiveView(labels, fmt="text")
    view.show()
    start = threading.Barrier(len(labels))
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            start.wait()
            text = ""
            for n in range(300):
                text += f"w{i}t{n} "
                view.update(i, text)
                if n % 30 == 0:
                    time.sleep(0.02)  # streams take time; lets the flusher render mid-stream
            view.finish(i, text + "END", caption=f"{i}.00 s · 300 tok")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), name=f"worker-{i}") for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    view.close()
    assert errors == []
    outputs = published.outputs
    assert outputs[0]["update"] is False and all(o["update"] for o in outputs[1:])
    ids = {o["transient"]["display_id"] for o in outputs}
    assert len(ids) == 1  # one output, updated in place
    final = outputs[-1]["data"]["text/html"]
    for i in range(8):
        assert f"w{i}t299 END" in final and f"{i}.00 s · 300 tok" in final
    assert "streaming" not in final and "waiting" not in final
    # throttled: far fewer renders than the 2,400 updates, and some happened mid-stream
    assert 3 <= len(outputs) < 400
    # workers only store text: every render ran on the flusher or the closing thread
    assert not any(name.startswith("worker-") for name in published.threads)


def test_last_update_reaches_the_screen_without_close(published: RecordingPublisher) -> None:
    view = LiveView(["a:x", "b:y"], fmt="text", interval=0.05)
    view.show()
    view.update(0, "first")
    view.update(0, "first and last")
    wait_for(lambda: "first and last" in published.outputs[-1]["data"]["text/html"])
    view.close()


def test_close_always_renders_the_final_state(published: RecordingPublisher) -> None:
    view = LiveView(["a:x", "b:y"], fmt="text", interval=60)  # no timed render would come
    view.show()
    view.update(1, "partial")
    view.finish(0, "done", caption="0.84 s · 42 tok · 51 tok/s")
    view.close()
    final = published.outputs[-1]["data"]["text/html"]
    assert "done" in final and "partial" in final and "0.84 s · 42 tok · 51 tok/s" in final


def test_a_late_chunk_does_not_undo_finish(published: RecordingPublisher) -> None:
    view = LiveView(["a:x", "b:y"], fmt="text")
    view.show()
    view.finish(0, "complete", caption="1 s")
    view.update(0, "compl")
    view.close()
    assert "complete" in published.outputs[-1]["data"]["text/html"]


def test_grid_escapes_model_text_and_errors() -> None:
    view = LiveView(["a:x", "b:<i>y</i>"], fmt="markdown")
    view.update(0, XSS)
    view.finish(1, "partial <b>", caption="", error="b: HTTP 500: <html>oops</html>")
    page = view.render()["text/html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "b:&lt;i&gt;y&lt;/i&gt;" in page
    assert "error: b: HTTP 500: &lt;html&gt;oops&lt;/html&gt;" in page
    assert "<b>" not in page and "<i>" not in page
    assert "var(--jp-layout-color1" in page and "display:grid" in page


def test_single_markdown_target_is_rendered_markdown_without_model_html(
    published: RecordingPublisher,
) -> None:
    view = LiveView(["ollama:llama3.2"])
    view.show()
    view.finish(0, f"# Title\n\n{XSS} **bold**\n\n```python\nprint(1)\n```", caption="0.5 s")
    view.close()
    data = published.outputs[-1]["data"]
    page = data["text/html"]
    assert "<h1>Title</h1>" in page and "<strong>bold</strong>" in page
    assert '<pre><code class="language-python">print(1)\n</code></pre>' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "ollama:llama3.2 · 0.5 s" in page
    assert XSS in data["text/plain"]  # plain text is never interpreted


def test_repeats_of_a_target_stack_in_its_column() -> None:
    view = LiveView(["a:x", "a:x", "b:y", "b:y"], fmt="text")
    for i, text in enumerate(["a first", "a second", "b first", "b second"]):
        view.finish(i, text)
    page = view.render()["text/html"]
    assert page.count("a:x") == 1 and page.count("b:y") == 1  # two columns, not four
    assert "repeat(2," in page  # the grid's column count
    assert page.index("a first") < page.index("a second") < page.index("b first")
    assert page.count(">#0<") == 2 and page.count(">#1<") == 2
    single = LiveView(["a:x", "b:y"], fmt="text").render()["text/html"]
    assert ">#0<" not in single  # nothing to tell apart: no tags


def test_formats() -> None:
    raw = LiveView(["a", "b"], fmt="html")
    raw.update(0, "<b>bold</b>")
    assert "<b>bold</b>" in raw.render()["text/html"]  # the one explicit opt-out
    js = LiveView(["a", "b"], fmt="json")
    js.update(0, '```json\n{"k": [1, "<x>"]}\n```')
    js.update(1, '{"k": ')  # still streaming: shown as text
    page = js.render()["text/html"]
    assert html.escape(json.dumps({"k": [1, "<x>"]}, indent=2)) in page
    assert "{&quot;k&quot;: " in page
    assert "not valid JSON" not in page  # a stream on its way is not judged yet
    js.finish(1, '{"k": ', caption="b · 0.1 s")
    js.finish(0, '```json\n{"k": [1, "<x>"]}\n```', caption="a · 0.1 s")
    page = js.render()["text/html"]
    assert page.count("not valid JSON") == 1 and "not valid JSON · b · 0.1 s" in page
    code = LiveView(["a"], fmt="code")
    code.update(0, "```python\nif a < b:\n    pass\n```")
    page = code.render()["text/html"]
    assert "<code>if a &lt; b:\n    pass</code>" in page and "```" not in page
    with pytest.raises(UsageProblem, match="unknown format"):
        LiveView(["a"], fmt="rst")


def test_no_frontend_no_output(shell: InteractiveShell, capsys: pytest.CaptureFixture) -> None:
    assert type(shell.display_pub) is DisplayPublisher  # what terminal IPython uses
    view = LiveView(["a:x", "b:y"])
    view.show()
    view.update(0, "hello")
    view.finish(1, "bye", caption="1 s")
    view.close()
    assert capsys.readouterr().out == ""
    assert "hello" in view.render()["text/html"]


def test_context_manager_shows_and_closes(published: RecordingPublisher) -> None:
    with LiveView(["a:x"], fmt="text") as view:
        view.finish(0, "ok", caption="")
    assert len(published.outputs) >= 2 and "ok" in published.outputs[-1]["data"]["text/html"]


# ---- Markdown: rendered by markdown-it, no model text can become HTML -----------------------

# What rendered Markdown may hold: CommonMark's elements, tables, strikethrough, our wrapper.
SAFE_TAGS = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code",
    "em", "strong", "s", "a", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "div",
}  # fmt: skip


class TagAudit(HTMLParser):
    """Every tag and attribute a browser would build from the markup."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def assert_inert(markup: str) -> TagAudit:
    """Only Markdown's own tags, no event handler, every live link to the web or to mail."""
    audit = TagAudit(markup)
    for tag, attrs in audit.tags:
        assert tag in SAFE_TAGS, (tag, markup)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert set(attrs) <= {"href", "title", "class", "style"}, (tag, attrs)
        href = (attrs.get("href") or "").strip().lower()
        if ":" in href.split("/")[0]:
            assert href.startswith(("http:", "https:", "mailto:")), href
    return audit


HOSTILE = [
    XSS,
    "<img src=x onerror=alert(1)>",
    "text\n<div>\n<script>x</script>\n</div>",
    "`code` then <b onclick=alert(1)>tag</b>",
    "<!-- a comment --><iframe src=javascript:alert(1)>",
    "    ```\n<img src=x onerror=alert(1)>\n```",
    "- item\n  ```\n  code\nnot indented <img src=x onerror=y>",
    "```\n````\n<svg onload=alert(1)>\n```",  # a longer fence inside a shorter one
    "~~~~\n~~~\n<b>x</b>",  # an unclosed fence swallows the rest
    "[click](javascript:alert(1))",
    "![img](JavaScript:alert(1))",
    "[x](java&#x73;cript:alert(1))",
    "[x](<javascript:alert(1)>)",
    "[x]( vbscript:msgbox(1) )",
    "[ref]: javascript:alert(1)\n\n[ref]",
    "[d](data:text/html;base64,PHNjcmlwdD4=)",
    "[d](data:image/png;base64,iVBORw0KGgo=)",
    "<javascript:alert(1)> <data:text/html,x> <https://ok.example>",
    "[t](https://e.org \"x\" onmouseover=\"alert(1)\")",
    "&lt;script&gt;alert(1)&lt;/script&gt; &#60;img src=x onerror=alert(1)&#62;",
    "| a | <b>b</b> |\n|---|---|\n| <script>x</script> | [j](javascript:x) |",
]


@pytest.mark.parametrize("attack", HOSTILE)
def test_hostile_markdown_renders_inert(attack: str) -> None:
    out = html.markdown_html(attack)
    assert_inert(out)
    assert "<script" not in out.lower() and "<img" not in out.lower()


def test_script_links_stay_literal_text() -> None:
    for link in ("[click](javascript:alert(1))", "[x](java&#x73;cript:alert(1))"):
        audit = assert_inert(html.markdown_html(link))
        assert [t for t, _ in audit.tags] == ["p"]  # no <a>: the link is shown as written
    assert "![img](" not in html.markdown_html("![img](https://e.org/x.png)")
    image = assert_inert(html.markdown_html("![img](https://e.org/x.png)"))
    assert ("a", {"href": "https://e.org/x.png"}) in image.tags  # a link, never loaded unasked
    assert not any(t == "img" for t, _ in image.tags)


def test_ordinary_markdown_renders_as_jupyterlab_does() -> None:
    text = (
        "# H\n\n## Sub\n\n* a\n* b\n\n1. one\n2. two\n\n> quote\n\n"
        "| x | y |\n|---|:-:|\n| 1 | 2 |\n\n**bold** _em_ ~~gone~~ `a < b` "
        "[ok](https://e.org) <https://auto.example> [m](mailto:a@e.org)\n\n"
        "```python\nif a < b:\n    print('x')\n```\n\nline one\nline two"
    )
    out = html.markdown_html(text)
    assert_inert(out)
    for piece in (
        "<h1>H</h1>",
        "<h2>Sub</h2>",
        "<ul>\n<li>a</li>\n<li>b</li>\n</ul>",
        "<ol>\n<li>one</li>",
        "<blockquote>",
        "<th>x</th>",
        '<td style="text-align:center">2</td>',
        "<strong>bold</strong> <em>em</em> <s>gone</s> <code>a &lt; b</code>",
        "<p>line one<br />\nline two</p>",  # a model's line breaks are kept
        '<a href="https://e.org">ok</a>',
        '<a href="https://auto.example">https://auto.example</a>',
        '<a href="mailto:a@e.org">m</a>',
        '<pre><code class="language-python">if a &lt; b:\n    print(\'x\')\n</code></pre>',
    ):
        assert piece in out, piece


def test_markdown_is_the_grid_format_too() -> None:
    view = LiveView(["a:x", "b:y"])  # markdown, the magic's default
    view.finish(0, "# A\n\n- one", caption="1 s")
    view.update(1, "**half")
    page = view.render()["text/html"]
    assert "<h1>A</h1>" in page and "<li>one</li>" in page and "**half" in page
    assert_inert(page.replace('<div class="llm-magic" style=', "<div style="))


def test_caption_text() -> None:
    assert html.caption_text(0.843, 42, 51.4) == "0.84 s · 42 tok · 51 tok/s"
    assert html.caption_text(1.0, 42, None, estimated=True, cached=True) == (
        "1.00 s · ~42 tok · cached"
    )
    assert html.caption_text(float("nan"), None, None) == ""


# ---- what a view shows of an answer: bounded, controls visible, never an exception ----------


def test_visible_shows_controls_bidi_and_surrogates_as_text() -> None:
    assert visible("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert visible("\x1b]0;owned\x07") == "\\x1b]0;owned\\x07"  # window title
    assert visible("\x1b]52;c;aGk=\x07") == "\\x1b]52;c;aGk=\\x07"  # OSC 52: clipboard
    assert visible("\x9b31m \x00 \x7f \x0c") == "\\x9b31m \\x00 \\x7f \\x0c"  # C1 CSI, NUL, DEL
    for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]:
        assert visible(f"a{chr(code)}b") == f"a<U+{code:04X}>b"
    assert visible("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert visible("keep\n\ttabs\r\nand lines\rbut not CR") == (
        "keep\n\ttabs\nand lines\\x0dbut not CR"
    )
    text = "plain, ünïcode, 漢字, emoji 🙂, U+2028\u2028 kept"
    assert visible(text) == text
    assert visible(visible("\x1b\u202e\ud800")) == visible("\x1b\u202e\ud800")  # idempotent
    assert visible("\u202e", markup=True) == "&lt;U+202E&gt;"  # inside rendered HTML


def test_excerpt_bounds_what_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "".join(f"{i:07d} " for i in range(10_000))  # 80,000 characters
    tail = excerpt(text, streaming=True)
    assert tail.text == text[-STREAM_TAIL:] and tail.earlier == len(text) - STREAM_TAIL
    assert tail.note == f"… {len(text) - STREAM_TAIL:,} earlier characters"
    assert tail.plain() == f"{tail.note}\n{tail.text}"
    head = excerpt(text)
    assert head.text == text[:SHOWN_HEAD] and head.later == len(text) - SHOWN_HEAD
    assert head.plain().endswith("\n… 60,000 more characters in the DataFrame")
    short = excerpt("short \x1b[2J", streaming=True)
    assert (short.text, short.note, short.plain()) == ("short \x1b[2J", "", "short \\x1b[2J")
    # a key that crosses the cut is redacted whole, not half shown
    key = "kq-" + "Z" * 60
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", key)
    crossing = "x" * (SHOWN_HEAD - 30) + key + "y" * 100
    assert "ZZZ" not in excerpt(crossing).text and "x***y" in excerpt(crossing).text
    crossing = "y" * 100 + key + "x" * (STREAM_TAIL - 30)
    assert "ZZZ" not in excerpt(crossing, streaming=True).text


def test_a_huge_answer_sends_a_bounded_amount(published: RecordingPublisher) -> None:
    answer = "".join(f"word{i} " for i in range(500_000))  # about 5.4 MB
    pieces = [answer[i : i + 2_700] for i in range(0, len(answer), 2_700)]  # 2,000 pieces
    view = LiveView(["a:x", "b:y"], interval=0.002)
    view.show()
    view.finish(1, answer, caption="1 s")  # a finished huge answer beside one that streams
    for n, piece in enumerate(pieces):
        view.append(0, piece)
        if n % 10 == 0:
            time.sleep(0.002)  # streams take time: the flusher publishes while this one grows
    view.finish(0, answer, caption="2 s")
    view.close()
    assert published.failures == []
    sizes = published.sizes
    assert len(sizes) >= 5, "too few updates to tell"
    # Each update is bounded by the constants, whatever the answer's length: two columns, an
    # HTML and a plain-text twin of each, markup around them.
    while_running = 2 * (3 * STREAM_TAIL + 3_000)
    at_the_end = 2 * (3 * SHOWN_HEAD + 3_000)
    assert max(sizes[:-1]) <= while_running < len(answer) // 100
    assert sizes[-1] <= at_the_end
    outputs = published.outputs
    streaming = [o["data"]["text/html"] for o in outputs[1:-1]]
    assert any("earlier characters" in page for page in streaming)
    final = outputs[-1]["data"]
    more = f"… {len(answer) - SHOWN_HEAD:,} more characters in the DataFrame"
    assert final["text/html"].count(more) == 2 and final["text/plain"].count(more) == 2
    assert answer[: SHOWN_HEAD - 10] in final["text/plain"]


def test_a_tail_holds_the_newest_text_in_bounded_memory() -> None:
    answer = "".join(f"<{i}>" for i in range(300_000))
    tail = Tail()
    held = []
    for i in range(0, len(answer), 997):
        tail.append(answer[i : i + 997])
        held.append(len(tail.text()))
    assert tail.length == len(answer) and max(held) <= 2 * (STREAM_TAIL + 512) + 997
    shown = excerpt(tail.text(), streaming=True, skipped=tail.skipped)
    assert shown.text == answer[-STREAM_TAIL:]
    assert shown.earlier == len(answer) - STREAM_TAIL
    view = LiveView(["a:x"], fmt="text")
    view.append(0, "first ")
    view.append(0, "second")
    assert "first second" in view.render()["text/plain"]
    view.update(0, "whole text so far")  # the full-text call still works
    assert "whole text so far" in view.render()["text/plain"]


def test_an_unchanged_answer_is_not_rendered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[str] = []
    render_entry = html._entry_html

    def counting(entry: html.Entry, fmt: str, first: bool) -> str:
        rendered.append(entry.text[:4])
        return render_entry(entry, fmt, first)

    monkeypatch.setattr(html, "_entry_html", counting)
    view = LiveView(["a:x", "b:y", "c:z"])
    view.finish(0, "done " * 10_000, caption="1 s")
    for n in range(1, 21):
        view.update(1, "more " * n)
        view.render()
    assert rendered.count("done") == 1 and rendered.count("more") == 20
    assert rendered.count("") == 1  # the column still waiting, rendered once


WEIRD = [
    "\ud800",
    "lone \udfff low surrogate and \ud83d high",
    "\x00" * 5,
    "NUL\x00inside **bold**",
    "\ufffe\uffff\U0010ffff",
    "&#xd800; &#0; &#x202e; &#27;",
    "```\n\ud800\x1b[31m",
    "[x](\ud800) <\ud800> `\x00`",
    '{"k": "\\ud800\\u202e\\u001b"}',
    "",
]


@pytest.mark.parametrize("fmt", html.FORMATS)
def test_views_never_raise_on_any_text(fmt: str, published: RecordingPublisher) -> None:
    labels = ["a:\ud800", "b:\x1b[31m", "c:x"]
    grid = LiveView(labels, fmt=fmt, interval=0.001)
    one = LiveView(["solo\ud800"], fmt=fmt, interval=0.001)
    grid.show()
    one.show()
    for text in WEIRD:
        for i in range(len(labels) - 1):
            grid.update(i, text)
        for char in text:  # the last column hears pieces, cut anywhere
            grid.append(len(labels) - 1, char)
        one.update(0, text)
        time.sleep(0.003)
    grid.finish(0, WEIRD[0], caption="\ud800 s", error="bad \ud800 \x1b[2J")
    grid.finish(1, "".join(WEIRD) * 3_000)
    one.finish(0, "".join(WEIRD), caption="1 s", error="\x00")
    grid.close()
    one.close()
    assert published.failures == []
    shown = json.dumps([o["data"] for o in published.outputs], ensure_ascii=False)
    assert "\ufffd" in shown and "\\\\x1b[2J" in shown  # json.dumps doubles the backslash
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", shown)
