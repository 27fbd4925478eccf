"""What the loopback servers do with images: decode them, check them as each protocol's docs
say (shared/protocols/structured-tools-images.md §3, anthropic.md §3), and turn each into a
text note, `[image image/png 68 bytes sha256 0123456789abcdef]` (or `[image url URL]`), that
the echoing fake model then repeats: a test reads in the answer that the bytes arrived whole.

Each `*_images` function takes a request's `messages` and returns them with every image
replaced by its note, or raises `ImageProblem` with the words the server answers a 400 with.

Wire facts the protocol notes lack: OpenAI answers an image it cannot read with a 400
`invalid_request_error`, code `invalid_image_format`, in the words of OPENAI_BAD_IMAGE
(observed: STranslate/STranslate#277). Ollama's words are Go's own, inferred: bad base64 in
`images` fails decoding into []byte ("illegal base64 data at input byte N", encoding/base64),
and bytes that are no image fail decoding ("image: unknown format", Go's image.ErrFormat).
Anthropic's and Mistral's words for a bad image are ours (their docs show none); Anthropic's
check that the media type matches the bytes follows its list of four types (anthropic.md §3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

__all__ = [
    "ImageProblem",
    "anthropic_images",
    "image_note",
    "mistral_images",
    "ollama_compat_images",
    "ollama_images",
    "openai_images",
]

_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# OpenAI's words for an image it cannot read, with its code (observed: STranslate/STranslate#277).
OPENAI_BAD_IMAGE = (
    "You uploaded an unsupported image. Please make sure your image has of one the following "
    "formats: ['png', 'jpeg', 'gif', 'webp']."
)


class ImageProblem(Exception):
    """A malformed image in a request; its text is the error message the server sends."""


# A server's own reading of the bytes (written apart from llm_magic's, which it checks).
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def media_type_of(data: bytes) -> str | None:
    """Read from the bytes' magic number, as a server decoding the image would find out."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":  # RIFF, size, then the format
        return "image/webp"
    return next((kind for head, kind in _SIGNATURES.items() if data.startswith(head)), None)


def image_note(data: bytes) -> str:
    media = media_type_of(data) or "unknown"
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"[image {media} {len(data)} bytes sha256 {digest}]"


def _b64(text: Any, problem: str) -> bytes:
    if not isinstance(text, str):
        raise ImageProblem(problem)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageProblem(problem) from None


def _url_note(url: Any, problem: str) -> str:
    """A data URI's bytes checked and noted, or an http(s) URL noted as is."""
    if not isinstance(url, str):
        raise ImageProblem(problem)
    if url.startswith(("http://", "https://")):
        return f"[image url {url}]"
    head, comma, data = url.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64") and comma):
        raise ImageProblem(problem)
    raw = _b64(data, problem)
    if media_type_of(raw) is None:
        raise ImageProblem(problem)
    return image_note(raw)


def _chat_parts(messages: Any, image_url: Any) -> list[Any]:
    """OpenAI's and Mistral's content parts: image parts only in user messages (OpenAI's
    spec: the system, assistant and tool part unions hold none)."""
    out = []
    for m in messages if isinstance(messages, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            out.append(m)
            continue
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                if m.get("role") != "user":
                    raise ImageProblem("image_url parts are only allowed in user messages")
                part = {"type": "text", "text": image_url(part.get("image_url"))}
            parts.append(part)
        out.append({**m, "content": parts})
    return out


def openai_images(messages: Any) -> list[Any]:
    """`{"type": "image_url", "image_url": {"url", "detail"?}}`: an https URL or a data URI."""

    def note(value: Any) -> str:
        if not isinstance(value, dict) or set(value) - {"url", "detail"}:
            raise ImageProblem("Invalid 'image_url': expected an object with 'url'.")
        if value.get("detail", "auto") not in ("auto", "low", "high"):
            raise ImageProblem("Invalid 'image_url.detail': expected 'auto', 'low' or 'high'.")
        return _url_note(value.get("url"), OPENAI_BAD_IMAGE)

    return _chat_parts(messages, note)


def ollama_compat_images(messages: Any) -> list[Any]:
    """Ollama's /v1 (openai/openai.go decodeImageURL): no http(s) URLs, and only
    `data:image/{jpeg|jpg|png|webp};base64,` or `data:;base64,` URIs (so no GIF)."""

    def note(value: Any) -> str:
        url = value.get("url") if isinstance(value, dict) else None
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            raise ImageProblem(
                "image URLs are not currently supported, please use base64 encoded data instead"
            )
        heads = ("data:;base64,", *(f"data:image/{t};base64," for t in _OLLAMA_COMPAT_TYPES))
        if not isinstance(url, str) or not url.startswith(heads):
            raise ImageProblem("invalid image input")
        return _url_note(url.replace("data:;", "data:image/png;", 1), "invalid image input")

    return _chat_parts(messages, note)


_OLLAMA_COMPAT_TYPES = ("jpeg", "jpg", "png", "webp")


def mistral_images(messages: Any) -> list[Any]:
    """`{"type": "image_url", "image_url": "<url or data URI>"}` (what the vision docs show) or
    `{"url", "detail"?}` (the ImageURL schema)."""

    def note(value: Any) -> str:
        if isinstance(value, dict):
            if set(value) - {"url", "detail"}:
                raise ImageProblem("image_url: Extra inputs are not permitted")
            value = value.get("url")
        return _url_note(value, "image_url: could not read the image (not a URL or a data URI)")

    return _chat_parts(messages, note)


def ollama_images(messages: Any) -> list[Any]:
    """`messages[].images`: bare base64 strings, no data URI, no URL (api/types.go decodes
    them as []byte, so anything else fails there)."""
    out = []
    for m in messages if isinstance(messages, list) else []:
        images = m.get("images") if isinstance(m, dict) else None
        if images is None:
            out.append(m)
            continue
        if not isinstance(images, list):
            raise ImageProblem("json: cannot unmarshal images into Go struct field")
        notes = []
        for text in images:
            raw = _b64(text, "illegal base64 data at input byte 0")
            if media_type_of(raw) is None:
                raise ImageProblem("image: unknown format")
            notes.append(image_note(raw))
        content = m.get("content") if isinstance(m.get("content"), str) else ""
        out.append({"role": m.get("role"), "content": " ".join([content, *notes]).strip()})
    return out


def anthropic_images(messages: Any) -> list[Any]:
    """Image blocks: `{"type": "image", "source": {"type": "base64", "media_type", "data"}}`
    (bare base64, media type one of four, matching the bytes) or `{"type": "url", "url"}`."""
    out = []
    for i, m in enumerate(messages if isinstance(messages, list) else []):
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            out.append(m)
            continue
        blocks = []
        for j, block in enumerate(content):
            if isinstance(block, dict) and block.get("type") == "image":
                where = f"messages.{i}.content.{j}.image.source"
                block = {"type": "text", "text": _anthropic_note(block.get("source"), where)}
            blocks.append(block)
        out.append({**m, "content": blocks})
    return out


def _anthropic_note(source: Any, where: str) -> str:
    if not isinstance(source, dict):
        raise ImageProblem(f"{where}: Field required")
    if source.get("type") == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ImageProblem(f"{where}.url: Input should be a valid URL")
        return f"[image url {url}]"
    if source.get("type") != "base64":
        raise ImageProblem(f"{where}.type: Input should be 'base64' or 'url'")
    media = source.get("media_type")
    if media not in _MEDIA_TYPES:
        allowed = ", ".join(_MEDIA_TYPES)
        raise ImageProblem(f"{where}.base64.media_type: Input should be one of {allowed}")
    raw = _b64(source.get("data"), f"{where}.base64.data: The image data is not valid base64")
    if media_type_of(raw) != media:
        raise ImageProblem(
            f"{where}.base64.data: Image does not match the provided media type {media}"
        )
    return image_note(raw)
