"""How a message's images go on each wire (shared/protocols/structured-tools-images.md §3).

- OpenAI and the compatible servers: the content becomes a list of parts, a `text` part and
  one `{"type": "image_url", "image_url": {"url": ...}}` per image (a data URI for bytes).
- Mistral: the same parts, with `image_url` the plain string its vision docs use.
- Ollama: a sibling `images` list of bare base64 strings (no data URI, no URLs).
- Anthropic: content blocks, each image first as its vision docs advise, as a `base64` source
  (bare base64 with its media type) or a `url` source, then the text.
A message without images is sent as before: a plain string content.
"""

from __future__ import annotations

from typing import Any

from ..errors import ProviderError
from .base import Image, Message

__all__ = ["anthropic_message", "mistral_message", "ollama_message", "openai_message"]


def _parts(message: Message, image_url: Any) -> dict[str, Any]:
    wire = message.to_dict()
    if message.images:
        text = [{"type": "text", "text": message.content}] if message.content else []
        images = [{"type": "image_url", "image_url": image_url(i)} for i in message.images]
        wire["content"] = text + images
    return wire


def openai_message(message: Message) -> dict[str, Any]:
    return _parts(message, lambda image: {"url": image.data_uri()})


def mistral_message(message: Message) -> dict[str, Any]:
    return _parts(message, Image.data_uri)


def ollama_message(message: Message, provider: str = "ollama") -> dict[str, Any]:
    wire = message.to_dict()
    if message.images:
        if any(image.url is not None for image in message.images):  # the runner fetches first
            raise ProviderError("takes images as data, not URLs", provider=provider)
        wire["images"] = [image.base64() for image in message.images]
    return wire


def anthropic_message(message: Message) -> dict[str, Any]:
    wire = message.to_dict()
    if message.images:
        blocks: list[dict[str, Any]] = [
            {"type": "image", "source": _anthropic_source(image)} for image in message.images
        ]
        if message.content:
            blocks.append({"type": "text", "text": message.content})
        wire["content"] = blocks
    return wire


def _anthropic_source(image: Image) -> dict[str, Any]:
    if image.url is not None:
        return {"type": "url", "url": image.url}
    return {"type": "base64", "media_type": image.media_type, "data": image.base64()}
