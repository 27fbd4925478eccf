"""Images with the prompt (--image, images=): read and checked before anything is sent, put on
each provider's wire as its docs say (the loopback servers decode them and echo a note of what
arrived: type, size, sha256), refused in a row by a target that cannot take them, never in the
run log in full, and part of the cache key."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib

import pytest
from cells import run_frame
from IPython.core.error import UsageError
from provider_checks import KINDS, drain, text_of
from provider_checks import contract as contract_of

import llm_magic
from llm_magic._images import MAX_IMAGE_BYTES, load_images, media_type_of
from llm_magic.errors import UsageProblem
from llm_magic.providers.base import Image, Message, Options
from llm_magic.store import default_store


def png(width: int = 2, height: int = 1, rgb: bytes = b"\xff\x00\x00") -> bytes:
    """A real PNG, made without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + rgb * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32)


def note(data: bytes, media: str = "image/png") -> str:
    """What the loopback servers echo for an image they received whole."""
    return f"[image {media} {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()[:16]}]"


# ----------------------------------------------------------------------- reading and checking


@pytest.mark.parametrize(
    ("head", "media"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"GIF87a\x01\x00", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"%PDF-1.7", None),
        (b"", None),
    ],
)
def test_the_media_type_comes_from_the_first_bytes(head, media):
    assert media_type_of(head) == media


def test_paths_bytes_and_urls_become_images(tmp_path):
    path = tmp_path / "chart.jpg"  # a PNG under a .jpg name: the bytes decide
    path.write_bytes(PNG)
    url = "https://example.com/cat.png"
    from_path, from_bytes, from_url = load_images([str(path), JPEG, url])
    assert (from_path.media_type, from_path.data) == ("image/png", PNG)
    assert from_path.sha256 == hashlib.sha256(PNG).hexdigest() and from_path.size == len(PNG)
    assert from_bytes.media_type == "image/jpeg"
    assert from_url.url == url and from_url.data == b""
    assert load_images(path) == (from_path,)  # one value, a Path too
    assert load_images(None) == ()
    assert "base64" not in repr(from_path) and str(len(PNG)) in repr(from_path)


def test_a_pil_image_is_sent_as_png():
    pil = pytest.importorskip("PIL.Image")
    (image,) = load_images([pil.new("RGB", (3, 2), (0, 128, 255))])
    assert image.media_type == "image/png"
    assert pil.open(__import__("io").BytesIO(image.data)).size == (3, 2)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("missing.png", "no such file"),
        (42, "an int is not an image; give a path, an http(s) URL, bytes or a PIL image"),
        (b"%PDF-1.7 not a picture", "not a PNG, JPEG, GIF or WEBP image (by its first bytes)"),
        ("https://example.com/a b.png", "holds a space"),
    ],
)
def test_bad_images_are_one_line(value, words):
    with pytest.raises(UsageProblem) as info:
        load_images([PNG, value])
    assert "image 2 of 2" in info.value.message and words in info.value.message


def test_a_folder_a_text_file_and_an_oversized_file_are_refused(tmp_path):
    (tmp_path / "notes.png").write_text("just words")
    with pytest.raises(UsageProblem, match="not a PNG, JPEG, GIF or WEBP image"):
        load_images(str(tmp_path / "notes.png"))
    with pytest.raises(UsageProblem, match="is a folder"):
        load_images(str(tmp_path))
    big = tmp_path / "big.png"
    with big.open("wb") as f:  # sparse: the size is refused from stat, before reading
        f.write(PNG)
        f.truncate(MAX_IMAGE_BYTES + 1)
    with pytest.raises(UsageProblem, match="more than the 20 MB an image may be"):
        load_images(str(big))


# ------------------------------------------------------------------------------- on the wire


def ask(contract, messages):
    with contract.configured() as provider:
        return drain(provider.stream(messages, contract.model, Options()))


@pytest.mark.parametrize("kind", KINDS)
def test_each_provider_sends_the_image_and_the_server_gets_its_bytes(kind, request):
    server = request.getfixturevalue(f"{kind}_server")
    contract = contract_of(kind, server)
    (image,) = load_images([PNG])
    messages = [Message("system", "be brief"), Message("user", "what is this", images=(image,))]
    chunks, error = ask(contract, messages)
    assert error is None
    assert note(PNG) in text_of(chunks)  # decoded by the server: type, size and hash intact
    (sent,) = [m for m in server.requests[-1].body["messages"] if m["role"] == "user"]
    b64 = base64.b64encode(PNG).decode()
    expected = {
        "openai": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
        ],
        "mistral": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": f"data:image/png;base64,{b64}"},
        ],
        "anthropic": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}},
            {"type": "text", "text": "what is this"},
        ],
        "ollama": "what is this",
    }[kind]
    assert sent["content"] == expected
    if kind == "ollama":
        assert sent["images"] == [b64]  # bare base64 beside the text, no data: prefix


@pytest.mark.parametrize("kind", ["openai", "mistral", "anthropic"])
def test_a_url_goes_as_a_url(kind, request):
    server = request.getfixturevalue(f"{kind}_server")
    contract = contract_of(kind, server)
    url = "https://example.com/cat.png"
    message = Message("user", "what is this", images=load_images(url))
    chunks, error = ask(contract, [message])
    assert error is None and f"[image url {url}]" in text_of(chunks)


@pytest.mark.parametrize("kind", KINDS)
def test_the_servers_refuse_an_image_that_is_not_what_it_says(kind, request):
    server = request.getfixturevalue(f"{kind}_server")
    contract = contract_of(kind, server)
    fake = Image(data=b"%PDF-1.7 not a picture", media_type="image/png")  # past our checks
    message = Message("user", "what is this", images=(fake,))
    chunks, error = ask(contract, [message])
    assert chunks == [] and error is not None and error.status == 400
    words = {
        "openai": "You uploaded an unsupported image",
        "mistral": "could not read the image",
        "anthropic": "Image does not match the provided media type image/png",
        "ollama": "image: unknown format",
    }[kind]
    assert words in error.message


# --------------------------------------------------------------------------------- in a run


def test_a_text_only_target_gets_a_row_error_and_the_others_answer(backends):
    df = llm_magic.compare(
        "Describe it.",
        ["local:smollm2", "openai:gpt-4o-mini", "ollama:llama3.2"],
        images=[PNG],
        max_tokens=30,
    )
    local, openai_row, ollama_row = df.to_dict("records")
    assert local["error"] == (
        "local: smollm2 cannot take images (--image, images=): it reads text only"
    )
    assert local["output"] == "" and local["finish_reason"] == "error"
    for row in (openai_row, ollama_row):
        assert pd_na(row["error"]) and note(PNG) in row["output"]


def pd_na(value) -> bool:
    import pandas as pd

    return value is pd.NA or value is None


@pytest.fixture
def image_site():
    """A loopback web server with a PNG, a page that is not an image, a redirect and a 404."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Site(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            hits.append(self.path)
            found = {"/cat.png": PNG, "/page": b"<html>not an image</html>"}
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/cat.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = found.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.hits = hits
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    from llm_magic._images import _fetch

    _fetch.cache_clear()
    yield server
    server.shutdown()
    server.server_close()


def test_ollama_gets_a_url_image_fetched_as_data_once_per_url(backends, image_site):
    url = image_site.url + "/moved"
    df = llm_magic.compare(
        ["Describe it.", "Again."],
        ["ollama:llama3.2", "anthropic:claude-haiku-4-5"],
        images=url,
    )
    ollama_rows = df[df["provider"] == "ollama"]
    assert ollama_rows["error"].isna().all(), ollama_rows["error"].tolist()
    assert all(note(PNG) in text for text in ollama_rows["output"])  # the bytes arrived whole
    anthropic_rows = df[df["provider"] == "anthropic"]
    assert all(f"[image url {url}]" in text for text in anthropic_rows["output"])  # as a URL
    assert image_site.hits == ["/moved", "/cat.png"]  # two rows, one fetch (and its redirect)
    assert df["params"][0]["images"] == [
        {"url": url, "sha256": hashlib.sha256(url.encode()).hexdigest()}
    ]


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/page", "is not a PNG, JPEG, GIF or WEBP image"), ("/gone", "answered HTTP 404")],
)
def test_a_url_that_is_not_an_image_fails_the_ollama_row_only(backends, image_site, path, reason):
    url = image_site.url + path
    df = llm_magic.compare("Describe it.", ["ollama:llama3.2", "openai:gpt-4o-mini"], images=url)
    assert df["error"][0] == f"ollama: the image at {url} {reason}"
    assert backends.ollama.chat_requests() == []
    assert pd_na(df["error"][1]) and f"[image url {url}]" in df["output"][1]


def test_the_log_keeps_a_hash_and_size_never_the_bytes(backends, isolated_env):
    answer = llm_magic.complete("Describe it.", "openai:gpt-4o-mini", images=[PNG, JPEG])
    expected = [
        {"media_type": media, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for media, data in (("image/png", PNG), ("image/jpeg", JPEG))
    ]
    assert answer.record.params["images"] == expected
    (logged,) = default_store().history()
    assert logged.params["images"] == expected and logged.prompt == "Describe it."
    raw = b"".join(p.read_bytes() for p in (isolated_env / "home").iterdir())
    assert base64.b64encode(PNG) not in raw and PNG not in raw


def test_the_cache_key_holds_the_images_hash(backends):
    ask = dict(targets="openai:gpt-4o-mini", cache=True)
    first = llm_magic.compare("Describe it.", images=[PNG], **ask)
    again = llm_magic.compare("Describe it.", images=[PNG], **ask)
    other = llm_magic.compare("Describe it.", images=[png(rgb=b"\x00\xff\x00")], **ask)
    without = llm_magic.compare("Describe it.", **ask)
    assert list(first["cached"]) == [False] and list(again["cached"]) == [True]
    assert list(other["cached"]) == [False] and list(without["cached"]) == [False]
    assert len(backends.openai.chat_requests()) == 3


# ------------------------------------------------------------------------------ the magic


def test_image_takes_variables_and_literal_paths(ip, backends, tmp_path):
    path = tmp_path / "chart.png"
    path.write_bytes(PNG)
    ip.user_ns["photo"] = JPEG
    df = run_frame(ip, f"%%llm openai:gpt-4o-mini -q --image photo --image {path}\nDescribe both.")
    assert note(JPEG, "image/jpeg") in df["output"][0] and note(PNG) in df["output"][0]
    assert [i["media_type"] for i in df["params"][0]["images"]] == ["image/jpeg", "image/png"]


def test_image_of_a_list_variable_sends_each(ip, backends):
    ip.user_ns["pictures"] = [PNG, JPEG]
    df = run_frame(ip, "%%llm anthropic:claude-haiku-4-5 -q --image pictures\nDescribe.")
    assert len(df["params"][0]["images"]) == 2


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("--image nothing_here", "--image nothing_here: no notebook variable and no file named"),
        ("--image number", "an int is not an image"),
        ("--image /no/such/file.png", "no such file"),
        ("--image", "--image needs a value"),
    ],
)
def test_bad_images_in_the_magic_send_nothing(ip, backends, line, words):
    ip.user_ns["number"] = 7
    with pytest.raises(UsageError) as info:
        ip.run_cell(f"%%llm openai:gpt-4o-mini {line}\nDescribe it.")
    assert words in str(info.value) and "\n" not in str(info.value)
    assert backends.openai.chat_requests() == []


def test_a_chain_falls_back_from_a_text_only_model(backends):
    df = llm_magic.compare("Describe it.", "local:smollm2|openai:gpt-4o-mini", images=PNG)
    assert df["target"][0] == "openai:gpt-4o-mini" and df["fallback_from"][0] == "local:smollm2"
    assert note(PNG) in df["output"][0]


def test_chat_keeps_the_image_in_the_conversation(ip, backends):
    ip.user_ns["photo"] = PNG
    run_frame(ip, "%%llm anthropic:claude-haiku-4-5 --chat -q --image photo\nWhat is it?")
    df = run_frame(ip, "%%llm anthropic:claude-haiku-4-5 --chat -q\nAnd its colour?")
    first, _, latest = backends.anthropic.requests[-1].body["messages"]
    assert first["content"][0]["source"]["data"] == base64.b64encode(PNG).decode()
    assert latest == {"role": "user", "content": "And its colour?"}
    assert "images" not in df["params"][0]  # this turn sent none of its own


def test_ollamas_openai_layer_takes_data_uris_but_no_urls_and_no_gif(ollama_server):
    from llm_magic.providers._openai import OpenAIProvider

    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    asked = {"png": PNG, "url": "https://example.com/cat.png", "gif": gif}
    got = {}
    with OpenAIProvider(name="ollama-v1", base_url=ollama_server.url + "/v1", api_key=None) as p:
        for name, value in asked.items():
            message = Message("user", "what", images=load_images(value))
            got[name] = drain(p.stream([message], "llama3.2", Options()))
    assert got["png"][1] is None and note(PNG) in text_of(got["png"][0])
    assert "HTTP 400: image URLs are not currently supported" in got["url"][1].message
    assert "HTTP 400: invalid image input" in got["gif"][1].message
