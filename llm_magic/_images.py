"""Images given with a prompt (`--image`, `images=`) read and checked before anything is sent.

Accepted: a path (str or os.PathLike), an http(s) URL (sent as is; the server fetches it, or,
for a server that takes images only as data (Ollama), `fetched` here once per URL), bytes, or a
PIL image (saved as PNG; Pillow is never imported here, the object saves itself).
The media type comes from the first bytes (PNG, JPEG, GIF, WEBP), never from a file name.
Anything else, a missing file, or more than MAX_IMAGE_BYTES is one UsageProblem line.
"""

from __future__ import annotations

import functools
import io
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._redaction import redact_url
from .errors import UsageProblem
from .providers.base import Image

__all__ = ["MAX_IMAGE_BYTES", "fetched", "image_names", "load_images", "media_type_of"]

# A bound on what one image may be, so a wrong file never goes out; servers may take less
# (Mistral: 10 MB), and then their row's error says so.
MAX_IMAGE_BYTES = 20 * 2**20
_KINDS = "a PNG, JPEG, GIF or WEBP image"
# A URL fetched for a server that takes only data: its whole time, and how many redirects.
FETCH_DEADLINE_S = 30.0
_FETCH_REDIRECTS = 3
_FORMS = "a path, an http(s) URL, bytes or a PIL image"


def media_type_of(data: bytes) -> str | None:
    """The image type its magic number says, or None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def load_images(values: Any) -> tuple[Image, ...]:
    """The images `values` stand for: one value or a list/tuple of them; () for None."""
    if values is None:
        return ()
    items = list(values) if isinstance(values, list | tuple) else [values]
    return tuple(_one(value, i, len(items)) for i, value in enumerate(items))


def _one(value: Any, index: int, count: int) -> Image:
    where = "image" if count == 1 else f"image {index + 1} of {count}"
    if isinstance(value, str) and value.lower().startswith(("http://", "https://")):
        if any(c.isspace() for c in value):
            raise UsageProblem(f"{where}: the URL {value!r} holds a space")
        return Image(url=value)
    if isinstance(value, str | os.PathLike):
        return _from_bytes(_read_file(value, where), f"{where} ({os.fspath(value)!r})")
    if isinstance(value, bytes | bytearray | memoryview):
        return _from_bytes(bytes(value), where)
    if _is_pil(value):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return _from_bytes(buffer.getvalue(), f"{where} (a PIL image)")
    raise UsageProblem(f"{where}: {_kind(value)} is not an image; give {_FORMS}")


def _read_file(value: str | os.PathLike[str], where: str) -> bytes:
    path = Path(os.fspath(value)).expanduser()
    shown = f"{where}: {os.fspath(value)!r}"
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise UsageProblem(f"{shown}: {what} ({path.absolute()})")
    size = path.stat().st_size
    _check_size(size, shown)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageProblem(f"{shown}: cannot be read ({exc.strerror or exc})") from None


def _from_bytes(data: bytes, where: str) -> Image:
    _check_size(len(data), where)
    media_type = media_type_of(data)
    if media_type is None:
        raise UsageProblem(f"{where}: not {_KINDS} (by its first bytes)")
    return Image(data=data, media_type=media_type)


def _check_size(size: int, where: str) -> None:
    if size > MAX_IMAGE_BYTES:
        raise UsageProblem(
            f"{where}: {size / 2**20:.1f} MB is more than the {MAX_IMAGE_BYTES // 2**20} MB"
            " an image may be"
        )


def _is_pil(value: Any) -> bool:
    """A PIL image, known without importing Pillow: its class comes from the PIL package."""
    return any(c.__module__.split(".")[0] == "PIL" for c in type(value).__mro__) and hasattr(
        value, "save"
    )


def _kind(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def image_names(words: Iterable[str], namespace: Any) -> list[Any]:
    """The magic's `--image X` words as values: a notebook variable's value when X names one
    (a list of them gives each), else X itself (a path or URL)."""
    values: list[Any] = []
    for word in words:
        if word.isidentifier() and word in namespace:
            found = namespace[word]
            values.extend(found if isinstance(found, list | tuple) else [found])
        elif word.isidentifier() and not Path(word).expanduser().exists():
            raise UsageProblem(f"--image {word}: no notebook variable and no file named {word!r}")
        else:
            values.append(word)
    return values


def fetched(image: Image) -> Image:
    """`image` as data: a URL image is fetched (bounded: FETCH_DEADLINE_S in all, at most
    MAX_IMAGE_BYTES, typed by its first bytes), for a server that takes images only as data.
    The last few URLs are remembered, so the rows of one run fetch a URL once. Raises
    ValueError with a one-line reason (the row's error)."""
    if image.url is None:
        return image
    with _FETCHING:  # one fetch at a time: rows asking for one URL at once wait for the first
        return _fetch(image.url)


_FETCHING = threading.Lock()


@functools.lru_cache(maxsize=4)  # at most 4 x MAX_IMAGE_BYTES held
def _fetch(url: str) -> Image:
    import httpx  # only when an image URL goes to a server that cannot fetch it

    shown = f"the image at {redact_url(url)}"
    end = time.monotonic() + FETCH_DEADLINE_S
    data = bytearray()
    try:
        with httpx.Client(
            timeout=httpx.Timeout(10.0, connect=5.0),
            follow_redirects=True,
            max_redirects=_FETCH_REDIRECTS,
        ) as client, client.stream("GET", url) as reply:
            if reply.status_code != 200:
                raise ValueError(f"{shown} answered HTTP {reply.status_code}")
            for piece in reply.iter_bytes():
                data += piece
                if len(data) > MAX_IMAGE_BYTES:
                    raise ValueError(f"{shown} is over {MAX_IMAGE_BYTES // 2**20} MB")
                if time.monotonic() > end:
                    raise ValueError(f"{shown} took over {FETCH_DEADLINE_S:.0f} s to fetch")
    except httpx.HTTPError as exc:
        raise ValueError(f"{shown} could not be fetched ({type(exc).__name__})") from None
    media_type = media_type_of(bytes(data[:16]))
    if media_type is None:
        raise ValueError(f"{shown} is not {_KINDS}")
    return Image(data=bytes(data), media_type=media_type)
